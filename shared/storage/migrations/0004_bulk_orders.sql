-- Bulk orders: what 0001's tables needed beyond the seed.
--
-- * unprocessed: orders a cancel (or a batch that gave up) never reached, counted
--   beside processed/succeeded/failed/duplicate (the proto's BatchCounts has it).
-- * Chunks of submitted orders are compressed with lz4 instead of the default pglz:
--   accepting a 100,000-order batch writes ~36 MB of JSONB, and pglz compression was
--   more than half of that insert's cost (measured: 102 ms vs 45 ms per 8 chunks).
--   Best effort: a server built without lz4 keeps pglz.
--
-- Layout notes (no schema change needed):
-- * Chunk k of a batch holds the orders with indexes k*1000 .. k*1000+999
--   (portico_domain::bulk_orders::ORDERS_PER_CHUNK); retry-failed finds an order's
--   JSON through the primary key (batch_id, chunk_index = order_index / 1000).
-- * Orders keep their batch_id until the batch's retention ends (ON DELETE SET NULL).

ALTER TABLE bulk_order_batches
    ADD COLUMN unprocessed integer NOT NULL DEFAULT 0;

DO $$
BEGIN
    ALTER TABLE bulk_order_batch_chunks ALTER COLUMN orders SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; bulk_order_batch_chunks.orders keeps pglz';
END
$$;
