-- Retention of the history tables (events, deliveries with their attempts, usage logs,
-- dead letters) deletes the oldest rows in bounded batches. BRIN indexes on the time
-- columns find them: rows arrive in time order, so a BRIN index is a few pages, costs
-- next to nothing per insert (unlike a B-tree on the hot path) and lets each purge read
-- only the oldest blocks.
CREATE INDEX events_created_brin ON events USING brin (created_at);
CREATE INDEX webhook_deliveries_created_brin ON webhook_deliveries USING brin (created_at);
CREATE INDEX webhook_delivery_attempts_started_brin ON webhook_delivery_attempts USING brin (started_at);
CREATE INDEX integration_usage_logs_occurred_brin ON integration_usage_logs USING brin (occurred_at);
