-- The tamper-evident audit log (issue 14). Every state-changing call writes one record
-- in the same transaction as its change. Records form one hash chain per owner (the
-- user whose resources changed; '' is the system chain of operator actions on no
-- user's data): record n stores prev_hash = hash of record n-1 and
-- hash = SHA-256(prev_hash || canonical bytes of the record), computed by the gateway
-- (portico_storage::audit). Nothing ever updates or deletes a record except
-- retention, which removes a prefix of a chain and moves its anchor.

-- One row per chain: its head (the newest record) and its anchor (where verification
-- starts). Writers lock this row (INSERT .. ON CONFLICT DO UPDATE) before appending, so
-- the writers of one owner serialise and the chain never forks.
CREATE TABLE audit_chain_heads (
    owner_id     text PRIMARY KEY,
    -- The newest record's sequence number and hash (0 and 32 zero bytes: empty chain).
    head_seq     bigint NOT NULL DEFAULT 0,
    head_hash    bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    -- The newest record's time: a record's time is never before it, so time order is
    -- sequence order within a chain even if the database clock steps back.
    head_at      timestamptz,
    -- The oldest retained record's sequence number and the prev_hash it must carry.
    -- Retention advances both when it removes the oldest records.
    anchor_seq   bigint NOT NULL DEFAULT 1,
    anchor_hash  bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);

CREATE TABLE audit_log (
    owner_id       text NOT NULL,
    seq            bigint NOT NULL,
    id             uuid NOT NULL UNIQUE,
    -- clock_timestamp() read while the chain head is locked, never before the previous
    -- record's: ordered like seq, so retention by time removes a prefix of the chain.
    at             timestamptz NOT NULL,
    actor_kind     text NOT NULL CHECK (actor_kind IN ('user', 'service', 'partner', 'operator')),
    -- user: the user id; service: the user it acts for; partner: the integration id;
    -- operator: the name given in x-portico-operator.
    actor_id       text NOT NULL,
    client_addr    text,
    request_id     text,
    -- `webhook.updated`, `integration.credentials_regenerated`, ...
    action         text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    -- Names of changed fields and small non-secret details; never a secret value.
    changes        jsonb NOT NULL DEFAULT '{}',
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    PRIMARY KEY (owner_id, seq)
);
-- The owner's list, newest first (keyset on at, id).
CREATE INDEX audit_log_owner_at ON audit_log (owner_id, at DESC, id DESC);
-- Retention finds the oldest records.
CREATE INDEX audit_log_at_brin ON audit_log USING brin (at);
