-- Bulk-order throughput (issue 7): less index maintenance per created order.
--
-- orders.integration_id is set only for orders a partner submitted; the index exists
-- for the foreign key's ON DELETE SET NULL (deleting an integration), whose lookup
-- `integration_id = $1` implies NOT NULL. A partial index serves it exactly and no
-- longer gets an entry for every order without an integration (most of them).
DROP INDEX IF EXISTS orders_integration_idx;
CREATE INDEX orders_integration_idx ON orders (integration_id) WHERE integration_id IS NOT NULL;
