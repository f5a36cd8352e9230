-- The deliveries' status index keeps only deliveries that have not succeeded (issue 16,
-- PostgreSQL's share of a delivery).
--
-- `webhook_deliveries_status_idx (webhook_id, status, created_at DESC)` took an entry
-- for every delivery, and nearly every delivery succeeds: about 8,000 instructions of
-- PostgreSQL per delivery (callgrind) for entries that no query needs. A list or a
-- retry job filtered by `succeeded` walks `webhook_deliveries_list_idx` (the webhook's
-- deliveries newest first) and finds a match in nearly every row; the statuses worth an
-- index are the rare ones (failed, retrying, pending, delivering), which this one holds.
-- The planner uses it when the statement's statuses are known to exclude `succeeded`,
-- as they are in the custom plans PostgreSQL makes for a statement whose parameters
-- pick the index (portico_storage::deliveries::list, retry_jobs::count_matching and
-- requeue_chunk).
--
-- Building it locks the deliveries against writes while every partition is indexed:
-- the dispatcher's commits wait (its jobs stay in JetStream, nothing is lost). It reads
-- every delivery but indexes only the unsettled ones: 0.37 s for 1,016,896 deliveries
-- (one in a thousand failed) on the 2-core benchmark machine, where the full index took
-- 3.0 s.
-- Day partitions created later get it when they are attached.
CREATE INDEX webhook_deliveries_unsettled_idx ON webhook_deliveries (webhook_id, status, created_at DESC)
    WHERE status <> 'succeeded';
DROP INDEX webhook_deliveries_status_idx;
