-- Bulk orders: what 0001's tables needed beyond the seed.
--
-- * unprocessed: orders a cancel (or a batch that gave up) never reached, counted
--   beside processed/succeeded/failed/duplicate (the proto's BatchCounts has it).
--
-- Layout notes (no schema change needed):
-- * Chunk k of a batch holds the orders with indexes k*1000 .. k*1000+999
--   (portico_domain::bulk_orders::ORDERS_PER_CHUNK); retry-failed finds an order's
--   JSON through the primary key (batch_id, chunk_index = order_index / 1000).
-- * Orders keep their batch_id until the batch's retention ends (ON DELETE SET NULL).

ALTER TABLE bulk_order_batches
    ADD COLUMN unprocessed integer NOT NULL DEFAULT 0;
