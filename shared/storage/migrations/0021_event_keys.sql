-- History partitioned by time, part 3 (expand): what lets events and deliveries be
-- partitioned by day in the next release (0022), written by this one.
--
-- An event's id is derived from (owner, idempotency key), and the promise that the same
-- event published twice, even days apart, is recorded and delivered once rested on the
-- unique index of `events (id)`. A table partitioned by time cannot have a unique index
-- without its time column, so the promise moves to this narrow table: one key per
-- recorded event, kept as long as its event (portico_storage::retention), inserted in
-- the same statement as the event (`INSERT INTO event_keys ... ON CONFLICT DO NOTHING
-- RETURNING id` feeding the event insert: no extra round trip).
--
-- This release also writes events and deliveries with `ON CONFLICT DO NOTHING` (no
-- conflict target), which works on the tables as they are and as partitioned tables,
-- and derives delivery ids from (event, webhook, acceptance time)
-- (portico_domain::ids::delivery_id), so the primary key alone keeps one delivery per
-- pair. Release 0c6b075, still running during the rolling upgrade, records events
-- without a key: those get theirs below and in 0022, and this release's insert skips
-- the event row it finds already there.
CREATE TABLE event_keys (
    id          uuid PRIMARY KEY,
    accepted_at timestamptz NOT NULL
);
INSERT INTO event_keys (id, accepted_at) SELECT id, accepted_at FROM events;
-- Retention deletes the oldest keys in batches (BRIN: one summary per 128 pages).
CREATE INDEX event_keys_accepted_brin ON event_keys USING brin (accepted_at);
