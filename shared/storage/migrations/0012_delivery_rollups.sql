-- Delivery analytics: rollups written by the dispatcher in the same transaction (or
-- statement) that records the attempts, so an analytics query reads a few pre-summed
-- rows instead of scanning raw attempts.
--
-- One row per (owner, bucket width, bucket start, webhook, event type). Every attempt
-- and outcome is added to three rows at once: its minute, its hour and its UTC day
-- (bucket_secs 60, 3600, 86400). A query over [from, to) reads day rows for the whole
-- days inside it, hour rows for the whole hours at its edges and minute rows for the
-- rest, so 30 days cost about 30 rows per (webhook, event type) however many deliveries
-- they hold. Minute rows have a shorter retention than hour and day rows.
--
-- What each count means (all are transitions recorded at the time of the attempt that
-- caused them, `started_at` of the attempt; a failure without an attempt at the time
-- it was recorded):
--   attempts   every attempt made (one row of webhook_delivery_attempts);
--   succeeded  attempts that got a 2xx: the delivery became `succeeded`;
--   retrying   attempts that failed and left the delivery `retrying` (a retry is due);
--   failed     deliveries that became `failed` (final): the retry budget ran out, the
--              endpoint answered 410 Gone, or it was disabled or deleted while the
--              delivery waited (the last makes no attempt);
--   exhausted  the part of `failed` whose retry budget ran out (every allowed attempt
--              failed), as opposed to 410 Gone or an inactive endpoint.
-- So attempts = succeeded + retrying + failed - (failed without an attempt).
--
-- latency_hist counts attempt durations (latency_ms) in the fixed log-scale buckets of
-- portico_storage::analytics::LATENCY_BOUNDS_MS (49 buckets, the last open-ended);
-- latency_sum_ms is their sum, for the mean.
CREATE TABLE delivery_rollups (
    user_id        text NOT NULL,
    bucket_secs    integer NOT NULL CHECK (bucket_secs IN (60, 3600, 86400)),
    bucket_start   timestamptz NOT NULL,
    webhook_id     uuid NOT NULL,
    event_type     text NOT NULL,
    attempts       bigint NOT NULL,
    succeeded      bigint NOT NULL,
    retrying       bigint NOT NULL,
    failed         bigint NOT NULL,
    exhausted      bigint NOT NULL,
    latency_sum_ms bigint NOT NULL,
    latency_hist   bigint[] NOT NULL,
    PRIMARY KEY (user_id, bucket_secs, bucket_start, webhook_id, event_type)
) WITH (fillfactor = 70);
-- Rows are updated by every chunk that adds to them; free room on each page lets those
-- updates stay on the page (HOT: no index entry per update).

-- Retention deletes the oldest rows of one width in bounded batches.
CREATE INDEX delivery_rollups_retention_idx ON delivery_rollups (bucket_secs, bucket_start);
