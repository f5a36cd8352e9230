-- Audit records waiting to be linked into their owner's hash chain (issue 16).
--
-- A state-changing call writes its record here, in the same transaction as its change
-- (they commit together or not at all), without touching the chain head. Linking
-- (portico_storage::audit::link) then moves a whole batch of an owner's committed
-- records into audit_log in one transaction under the chain head's lock: sequence
-- numbers, prev_hash and hash are assigned there, in queued order. Before, every write
-- held the owner's chain head from its audit statement to its commit (a WAL flush), so
-- one owner's writers ran one at a time; now they commit in parallel and one flush
-- links many records.
--
-- Rows live here for milliseconds: the gateway links right after the request that
-- wrote them, sweeps for leftovers every second, and lists and verifications link an
-- owner's waiting records before reading.
CREATE TABLE audit_pending (
    -- Becomes audit_log.id.
    id             uuid PRIMARY KEY,
    owner_id       text NOT NULL,
    -- clock_timestamp() at the write; the record's `at` is this, or the previous
    -- record's `at` when that is later, so time order stays sequence order.
    queued_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind     text NOT NULL CHECK (actor_kind IN ('user', 'service', 'partner', 'operator')),
    actor_id       text NOT NULL,
    client_addr    text,
    request_id     text,
    action         text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    changes        jsonb NOT NULL DEFAULT '{}'
);
-- Linking takes an owner's records in queued order.
CREATE INDEX audit_pending_owner ON audit_pending (owner_id, queued_at, id);
