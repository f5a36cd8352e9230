-- History partitioned by time, part 1: the partition helpers and delivery attempts
-- (issue 16; docs/scaling.md "PostgreSQL" says why these tables and not the others).
--
-- Attempts are append-only history, the largest table per delivery, and nothing refers
-- to them; retention now drops a whole day of them (a catalog change) instead of
-- deleting rows one by one (WAL, dead tuples, vacuum).
--
-- The partition key is the delivery id, not `started_at`: PostgreSQL needs the key in
-- the primary key, and every release (0c6b075 included, during a rolling upgrade)
-- writes attempts with `ON CONFLICT (delivery_id, attempt_number)`, which needs a
-- unique index on exactly those columns. Delivery ids are UUIDv7, whose first 48 bits
-- are the creation time in milliseconds, and PostgreSQL orders uuids bytewise, so a
-- RANGE of ids between two `portico_uuid7_floor` bounds is a range of time: a day's
-- partition holds the attempts of the deliveries created that UTC day. Reading a
-- delivery's attempts (`WHERE delivery_id = $1`) touches one partition.
--
-- Partitions are daily, named `<table>_pYYYYMMDD`, created up to 7 days ahead here and
-- by the batch-processor's maintenance (every retention round). A DEFAULT partition is
-- the safety net: a row no day partition covers (maintenance stopped for a week, an id
-- that is not a UUIDv7) is stored there, never refused; creating its day's partition
-- later moves such rows into it.

-- The smallest UUIDv7 of the millisecond of `t` (time bits set, all others zero):
-- every UUIDv7 made at or after `t` sorts at or above it, every earlier one below.
CREATE FUNCTION portico_uuid7_floor(t timestamptz) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- The day partitions of `parent`: name, UTC day, and the id range [lo, hi) it holds.
CREATE FUNCTION portico_day_partitions(parent text)
    RETURNS TABLE (name text, day date, lo uuid, hi uuid)
    LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text, x.d,
           portico_uuid7_floor(x.d::timestamp AT TIME ZONE 'UTC'),
           portico_uuid7_floor((x.d + 1)::timestamp AT TIME ZONE 'UTC')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT to_date(right(c.relname, 8), 'YYYYMMDD') AS d) x
    WHERE i.inhparent = parent::regclass
      AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
    ORDER BY x.d
$$;

-- Creates the missing day partitions of `parent` from `first_day` to `last_day` (UTC
-- days); returns how many it created. Rows of those days already in the DEFAULT
-- partition are moved into the new partition first. Each partition is created as a
-- plain table and attached (SHARE UPDATE EXCLUSIVE on the parent: inserts go on);
-- `CREATE TABLE ... PARTITION OF` would lock the parent exclusively. Replicas running
-- this at once take turns (advisory lock); a lock not had within 2 s fails the call,
-- and the next round tries again (meanwhile rows go to the DEFAULT partition).
CREATE FUNCTION portico_ensure_day_partitions(parent text, first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql
AS $$
DECLARE
    key text;
    d date;
    part text;
    lo uuid;
    hi uuid;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('portico_partitions'), hashtext(parent));
    PERFORM set_config('lock_timeout', '2s', true);
    SELECT a.attname INTO key
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent::regclass;
    IF key IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        part := parent || '_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        lo := portico_uuid7_floor(d::timestamp AT TIME ZONE 'UTC');
        hi := portico_uuid7_floor((d + 1)::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION)', part, parent);
        -- Moving rows is a direct DELETE the attempts' guard (below) lets through.
        PERFORM set_config('portico.partition_maintenance', 'on', true);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *)'
                       ' INSERT INTO %I SELECT * FROM moved',
                       parent || '_default', key, key, part)
            USING lo, hi;
        PERFORM set_config('portico.partition_maintenance', 'off', true);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drops the day partition `part` of `parent` (all its rows at once); false if it is
-- not one (already dropped by another replica, or another table). DROP of a partition
-- locks the parent exclusively for a moment: within 2 s, or the call fails and the next
-- round tries again.
CREATE FUNCTION portico_drop_day_partition(parent text, part text)
    RETURNS boolean
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('portico_partitions'), hashtext(parent));
    PERFORM set_config('lock_timeout', '2s', true);
    IF NOT EXISTS (SELECT 1 FROM portico_day_partitions(parent) p WHERE p.name = part) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', part);
    RETURN true;
END
$$;

-- The attempts table, partitioned; the rows are copied over below.
ALTER TABLE webhook_delivery_attempts RENAME TO webhook_delivery_attempts_unpartitioned;
ALTER INDEX webhook_delivery_attempts_pkey RENAME TO webhook_delivery_attempts_unpartitioned_pkey;
ALTER TABLE webhook_delivery_attempts_unpartitioned
    RENAME CONSTRAINT webhook_delivery_attempts_delivery_id_fkey
    TO webhook_delivery_attempts_unpartitioned_delivery_id_fkey;
DROP INDEX webhook_delivery_attempts_started_brin;

CREATE TABLE webhook_delivery_attempts (
    delivery_id      uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt_number   integer NOT NULL,
    request_headers  jsonb NOT NULL DEFAULT '{}'::jsonb,
    response_status  integer,
    response_body    text,
    latency_ms       integer NOT NULL,
    error_kind       text,
    error_message    text,
    started_at       timestamptz NOT NULL,
    PRIMARY KEY (delivery_id, attempt_number)
) PARTITION BY RANGE (delivery_id);
CREATE TABLE webhook_delivery_attempts_default PARTITION OF webhook_delivery_attempts DEFAULT;

-- A day partition for every day the existing attempts need (at most 400 days back;
-- older ones and ids that are not UUIDv7 go to the DEFAULT partition) up to 7 days
-- ahead, then the rows. The copy holds the attempts table for as long as it takes:
-- docs/operations.md ("Upgrading to partitioned history") says how to keep it short.
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    oldest uuid;
    first_day date := today;
BEGIN
    SELECT delivery_id INTO oldest FROM webhook_delivery_attempts_unpartitioned
    WHERE delivery_id >= portico_uuid7_floor((today - 400)::timestamp AT TIME ZONE 'UTC')
    ORDER BY delivery_id LIMIT 1;
    IF oldest IS NOT NULL AND oldest < portico_uuid7_floor(now()) THEN
        first_day := (to_timestamp(('x' || left(replace(oldest::text, '-', ''), 12))::bit(48)::bigint
                                   / 1000.0) AT TIME ZONE 'UTC')::date;
    END IF;
    PERFORM portico_ensure_day_partitions('webhook_delivery_attempts', first_day, today + 7);
END
$$;

INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers,
    response_status, response_body, latency_ms, error_kind, error_message, started_at)
SELECT delivery_id, attempt_number, request_headers, response_status, response_body,
       latency_ms, error_kind, error_message, started_at
FROM webhook_delivery_attempts_unpartitioned;
DROP TABLE webhook_delivery_attempts_unpartitioned;

-- Attempts leave only with their delivery (the foreign key's cascade) or with their
-- whole partition. Release 0c6b075 purged old attempts with
-- `DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ...))`; on a partitioned table a ctid
-- names a row in every partition, so during a rolling upgrade that statement would
-- delete newer attempts that share a ctid with an old one. This guard skips direct
-- row deletes (that purge then deletes nothing and ends); cascades run inside the
-- foreign key's trigger (depth 1) and are not affected, nor are the maintenance's own
-- deletes (moving rows out of the DEFAULT partition, purging old rows there), which
-- set `portico.partition_maintenance` for their transaction. It can go once no release
-- before this one runs.
CREATE FUNCTION portico_attempts_delete_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('portico.partition_maintenance', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_delivery_attempts_delete_guard
    BEFORE DELETE ON webhook_delivery_attempts
    FOR EACH ROW WHEN (pg_trigger_depth() < 1)
    EXECUTE FUNCTION portico_attempts_delete_guard();
