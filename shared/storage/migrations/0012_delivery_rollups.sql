-- Delivery analytics: rollups written by the dispatcher in the same transaction (or
-- statement) that records the attempts, so an analytics query reads a few pre-summed
-- rows instead of scanning raw attempts.
--
-- Rows per (owner, bucket width, level, bucket start, webhook, event type). Every
-- attempt and outcome is added at three widths, its minute, its hour and its UTC day
-- (bucket_secs 60, 3600, 86400), and at four levels of detail, so a question reads the
-- rows already summed the way it asks and never adds up finer ones:
--   level 0: per webhook and event type;
--   level 1: per webhook, all event types (event_type '');
--   level 2: per event type, all webhooks (webhook_id the nil UUID);
--   level 3: the owner's total (both).
-- A query over [from, to) reads day rows for the whole days inside it, hour rows for
-- the whole hours at its edges and minute rows for the rest, at the level it asks for:
-- 30 days of an owner's totals are 30 rows, per webhook 30 per webhook, however many
-- deliveries they hold. Minute rows have a shorter retention than hour and day rows.
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
    level          smallint NOT NULL CHECK (level BETWEEN 0 AND 3),
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
    PRIMARY KEY (user_id, bucket_secs, level, bucket_start, webhook_id, event_type)
) WITH (fillfactor = 70);
-- Rows are updated by every chunk that adds to them; free room on each page lets those
-- updates stay on the page (HOT: no index entry per update).

-- Retention deletes the oldest rows of one width in bounded batches.
CREATE INDEX delivery_rollups_retention_idx ON delivery_rollups (bucket_secs, bucket_start);
