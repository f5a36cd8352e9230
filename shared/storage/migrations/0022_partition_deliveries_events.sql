-- History partitioned by time, part 4 (contract): deliveries and events by day, so
-- their retention drops whole days as attempts' and bulk results' already does
-- (0018, 0019). Needs the release of 0021 first: from that release on no statement
-- names `ON CONFLICT (event_id, webhook_id)` or `ON CONFLICT (id)` on these tables, and
-- events are deduplicated by `event_keys`. Release 0c6b075 (before 0021) must not run
-- against this schema: upgrade through the release of 0021 (docs/operations.md,
-- "Upgrade and migrate").
--
-- webhook_deliveries: RANGE (id), a partition per UTC day. Delivery ids are UUIDv7
-- (before 0021) or derived UUIDv8s whose first 48 bits are the event's acceptance
-- time (portico_domain::ids::delivery_id), so a day of ids is a day of deliveries, as
-- for attempts. The primary key stays (id); `UNIQUE (event_id, webhook_id)` cannot
-- (a unique index of a partitioned table must hold the partition key) and becomes a
-- plain index for the redelivery lookup; the derived id now keeps one row per pair.
--
-- events: RANGE (accepted_at), a partition per UTC day; the primary key becomes
-- (id, accepted_at), and `event_keys` (0021) keeps an event recorded once across days.
-- A delivery's derived id carries its event's acceptance time, so a day's deliveries
-- refer to that day's events.
--
-- Attempts lose their foreign key to deliveries: its cascade would delete a day's
-- attempts when the maintenance moves deliveries out of the DEFAULT partition (a
-- DELETE and an INSERT), and it made every attempt insert probe and lock its delivery
-- (the dispatcher's hot path). A row trigger on deliveries does the cascade's work
-- instead, except for the maintenance's moves: a deleted delivery (its webhook deleted,
-- a row purged from the DEFAULT partition) takes its attempts with it. A whole day of
-- deliveries dropped takes its day of attempts (portico_storage::partitions::
-- drop_deliveries); partition drops fire no trigger.

-- The day partition helpers of 0018, for a partition key that is a timestamptz as well
-- as a uuid: the bounds of a day are its UTC midnights, not UUIDv7 floors.
CREATE OR REPLACE FUNCTION portico_ensure_day_partitions(parent text, first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql
AS $$
DECLARE
    key text;
    key_type regtype;
    d date;
    part text;
    lo text;
    hi text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('portico_partitions'), hashtext(parent));
    PERFORM set_config('lock_timeout', '2s', true);
    SELECT a.attname, a.atttypid::regtype INTO key, key_type
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent::regclass;
    IF key IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        part := parent || '_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        IF key_type = 'timestamptz'::regtype THEN
            lo := (d::timestamp AT TIME ZONE 'UTC')::text;
            hi := ((d + 1)::timestamp AT TIME ZONE 'UTC')::text;
        ELSE
            lo := portico_uuid7_floor(d::timestamp AT TIME ZONE 'UTC')::text;
            hi := portico_uuid7_floor((d + 1)::timestamp AT TIME ZONE 'UTC')::text;
        END IF;
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION)', part, parent);
        -- Moving rows is a direct DELETE the attempts' guard (0018) lets through.
        PERFORM set_config('portico.partition_maintenance', 'on', true);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *)'
                       ' INSERT INTO %I SELECT * FROM moved',
                       parent || '_default', key, lo, key, hi, part);
        PERFORM set_config('portico.partition_maintenance', 'off', true);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Dropping a day partition detaches it first and then drops it: a DROP alone is
-- refused while a foreign key could refer to the parent. Same contract as 0018's.
CREATE OR REPLACE FUNCTION portico_drop_day_partition(parent text, part text)
    RETURNS boolean
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('portico_partitions'), hashtext(parent));
    PERFORM set_config('lock_timeout', '2s', true);
    IF NOT EXISTS (SELECT 1 FROM portico_day_partitions(parent) p WHERE p.name = part) THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, part);
    EXECUTE format('DROP TABLE %I', part);
    RETURN true;
END
$$;

-- The first UTC day (at most 400 days back) from which day partitions are made for
-- existing rows: the day of the oldest key at or after that bound, or today when there
-- is none (or it is in the future). Each day is a partition and its indexes, all
-- created and locked in this one transaction: docs/operations.md ("Upgrading to
-- partitioned history") says when to raise max_locks_per_transaction for it.
CREATE FUNCTION pg_temp.portico_first_day(oldest timestamptz) RETURNS date
    LANGUAGE sql
AS $$
    SELECT CASE WHEN oldest IS NULL OR oldest > now() THEN (now() AT TIME ZONE 'UTC')::date
                ELSE (GREATEST(oldest, now() - interval '400 days') AT TIME ZONE 'UTC')::date
           END
$$;

-- Every event gets a key (rows release 0c6b075 wrote while 0021's release rolled out).
INSERT INTO event_keys (id, accepted_at) SELECT id, accepted_at FROM events
ON CONFLICT (id) DO NOTHING;

ALTER TABLE webhook_delivery_attempts DROP CONSTRAINT webhook_delivery_attempts_delivery_id_fkey;
CREATE FUNCTION portico_delivery_attempts_cascade() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('portico.partition_maintenance', true) IS DISTINCT FROM 'on' THEN
        DELETE FROM webhook_delivery_attempts WHERE delivery_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;

-- Deliveries. Index names are unique per schema: the old table's go out of the way.
ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_unpartitioned;
DO $$
DECLARE
    ix text;
BEGIN
    FOR ix IN SELECT indexname FROM pg_indexes WHERE tablename = 'webhook_deliveries_unpartitioned' LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', ix, 'old_' || ix);
    END LOOP;
END
$$;
ALTER TABLE webhook_deliveries_unpartitioned DROP CONSTRAINT webhook_deliveries_webhook_id_fkey;
ALTER TABLE webhook_deliveries_unpartitioned DROP CONSTRAINT webhook_deliveries_status_check;

CREATE TABLE webhook_deliveries (
    id                uuid NOT NULL,
    webhook_id        uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id          uuid NOT NULL,
    user_id           text NOT NULL,
    event_type        text NOT NULL,
    ordering_key      text,
    status            text NOT NULL
        CHECK (status IN ('pending', 'delivering', 'succeeded', 'retrying', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    max_retries       integer NOT NULL,
    next_attempt_at   timestamptz,
    lease_until       timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    ordering_seq      bigint,
    last_retry_job_id uuid,
    lease_owner       text,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE webhook_deliveries_default PARTITION OF webhook_deliveries DEFAULT;
CREATE TRIGGER webhook_deliveries_attempts_cascade
    AFTER DELETE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION portico_delivery_attempts_cascade();
-- A redelivered event's existing deliveries (portico_storage::deliveries::existing).
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_created_brin ON webhook_deliveries USING brin (created_at);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'delivering');
CREATE INDEX webhook_deliveries_lease_idx ON webhook_deliveries (lease_until)
    WHERE lease_until IS NOT NULL AND status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_lease_owner ON webhook_deliveries (lease_owner)
    WHERE status = 'delivering';
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_ordered_idx ON webhook_deliveries (webhook_id, ordering_key, ordering_seq)
    WHERE ordering_seq IS NOT NULL AND status IN ('pending', 'retrying', 'delivering');
CREATE INDEX webhook_deliveries_ordering_idx ON webhook_deliveries (webhook_id, ordering_key, created_at)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'retrying', 'delivering');
CREATE INDEX webhook_deliveries_status_idx ON webhook_deliveries (webhook_id, status, created_at DESC);

SELECT portico_ensure_day_partitions('webhook_deliveries',
    pg_temp.portico_first_day((SELECT to_timestamp(('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint / 1000.0)
                               FROM webhook_deliveries_unpartitioned
                               WHERE id >= portico_uuid7_floor(now() - interval '400 days')
                               ORDER BY id LIMIT 1)),
    (now() AT TIME ZONE 'UTC')::date + 7);
INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, ordering_key, status,
    attempts, max_retries, next_attempt_at, lease_until, last_status_code, last_error, created_at,
    updated_at, ordering_seq, last_retry_job_id, lease_owner)
SELECT id, webhook_id, event_id, user_id, event_type, ordering_key, status, attempts, max_retries,
       next_attempt_at, lease_until, last_status_code, last_error, created_at, updated_at,
       ordering_seq, last_retry_job_id, lease_owner
FROM webhook_deliveries_unpartitioned;
DROP TABLE webhook_deliveries_unpartitioned;

-- Events.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO old_events_pkey;
ALTER INDEX events_created_brin RENAME TO old_events_created_brin;

CREATE TABLE events (
    id              uuid NOT NULL,
    user_id         text NOT NULL,
    event_type      text NOT NULL,
    payload         json NOT NULL,
    idempotency_key text NOT NULL,
    ordering_key    text,
    accepted_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, accepted_at)
) PARTITION BY RANGE (accepted_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_created_brin ON events USING brin (created_at);

SELECT portico_ensure_day_partitions('events',
    pg_temp.portico_first_day((SELECT min(accepted_at) FROM events_unpartitioned
                               WHERE accepted_at >= now() - interval '400 days')),
    (now() AT TIME ZONE 'UTC')::date + 7);
INSERT INTO events (id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at, created_at)
SELECT id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at, created_at
FROM events_unpartitioned;
DROP TABLE events_unpartitioned;
