-- History partitioned by time, part 2: per-order results of bulk batches (issue 16).
--
-- A 100,000-order batch writes 100,000 result rows, and deleting them row by row (the
-- batch's cascade) was most of the retention's work. Partitioned by batch id (UUIDv7,
-- so by the batch's creation day, as 0018 explains for attempts), a day of results is
-- dropped whole once no batch of that day is left
-- (portico_storage::partitions::drop_results).
--
-- The foreign key to bulk_order_batches goes, with its cascade: a batch still expires
-- on its own (`bulk_orders::delete_expired` deletes the batch row at its expires_at,
-- and it answers 404 from then on), but its results stay, unreadable (every read of
-- results goes through its batch, by owner), until its day's partition is dropped; a
-- cascade would delete them row by row first and leave the drop nothing to do. The
-- batch-processor writes a batch's results only while it holds the claimed batch, so
-- the key checked nothing, and it cost a probe of the batches' primary key and a row
-- lock per result written. Orphaned results in the DEFAULT partition (batch ids that
-- are not UUIDv7) are deleted by `drop_results` too.
--
-- Every statement of every release keeps working: the primary key is still
-- (batch_id, order_index), which `ON CONFLICT (batch_id, order_index)` needs and which
-- holds the partition key, and every read names one batch (one partition). Release
-- 0c6b075 deleting expired batches during a rolling upgrade leaves their results to
-- the partition drop as well.

ALTER TABLE bulk_order_results RENAME TO bulk_order_results_unpartitioned;
ALTER INDEX bulk_order_results_pkey RENAME TO bulk_order_results_unpartitioned_pkey;
ALTER INDEX bulk_order_results_status_idx RENAME TO bulk_order_results_unpartitioned_status_idx;
-- Constraint names are chosen unique per schema: free the old ones for the new table.
ALTER TABLE bulk_order_results_unpartitioned DROP CONSTRAINT bulk_order_results_batch_id_fkey;
ALTER TABLE bulk_order_results_unpartitioned
    RENAME CONSTRAINT bulk_order_results_status_check TO bulk_order_results_unpartitioned_status_check;

CREATE TABLE bulk_order_results (
    batch_id          uuid NOT NULL,
    order_index       integer NOT NULL,
    client_order_ref  text,
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed', 'duplicate', 'unprocessed')),
    order_id          uuid,
    errors            jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (batch_id, order_index)
) PARTITION BY RANGE (batch_id);
CREATE INDEX bulk_order_results_status_idx ON bulk_order_results (batch_id, status, order_index);
CREATE TABLE bulk_order_results_default PARTITION OF bulk_order_results DEFAULT;

-- Day partitions for the batches that have results (at most 400 days back) up to 7
-- days ahead, then the rows (see 0018 on the time this copy takes).
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    oldest uuid;
    first_day date := today;
BEGIN
    SELECT batch_id INTO oldest FROM bulk_order_results_unpartitioned
    WHERE batch_id >= portico_uuid7_floor((today - 400)::timestamp AT TIME ZONE 'UTC')
    ORDER BY batch_id LIMIT 1;
    IF oldest IS NOT NULL AND oldest < portico_uuid7_floor(now()) THEN
        first_day := (to_timestamp(('x' || left(replace(oldest::text, '-', ''), 12))::bit(48)::bigint
                                   / 1000.0) AT TIME ZONE 'UTC')::date;
    END IF;
    PERFORM portico_ensure_day_partitions('bulk_order_results', first_day, today + 7);
END
$$;

INSERT INTO bulk_order_results (batch_id, order_index, client_order_ref, status, order_id, errors)
SELECT batch_id, order_index, client_order_ref, status, order_id, errors
FROM bulk_order_results_unpartitioned;
DROP TABLE bulk_order_results_unpartitioned;
