-- Operators act on dead letters over the admin API (`/api/admin/dead-letters`): a
-- record is replayed (its job re-published) or discarded once, and stays for the
-- record with when and how it was resolved. A replayed job that fails for good again
-- reopens its record (the dead-letter insert clears the resolution), so the record's
-- resolution always describes its latest failure.
ALTER TABLE job_dead_letters ADD COLUMN resolved_at timestamptz;
ALTER TABLE job_dead_letters ADD COLUMN resolution text
    CHECK (resolution IN ('replayed', 'discarded'));
ALTER TABLE job_dead_letters ADD CONSTRAINT job_dead_letters_resolved_with_resolution
    CHECK ((resolved_at IS NULL) = (resolution IS NULL));
-- What waits for an operator: the unresolved count (the
-- portico_dead_letters_unresolved gauge) reads only this small index.
CREATE INDEX job_dead_letters_unresolved ON job_dead_letters (id) WHERE resolved_at IS NULL;
-- The operators' list filters by owner.
CREATE INDEX job_dead_letters_user_id ON job_dead_letters (user_id, id) WHERE user_id IS NOT NULL;

-- The audit of every operator action, written in the same transaction as the change
-- it records. It goes with its dead letter when retention deletes the record.
CREATE TABLE dead_letter_actions (
    id                 bigserial PRIMARY KEY,
    dead_letter_id     bigint NOT NULL REFERENCES job_dead_letters (id) ON DELETE CASCADE,
    action             text NOT NULL CHECK (action IN ('replayed', 'discarded')),
    -- Who, as the operator named themselves (x-portico-operator; the token is shared).
    operator           text NOT NULL,
    request_id         text,
    client_addr        text,
    -- Why, as given in the request body.
    reason             text NOT NULL,
    -- A replay's Nats-Msg-Id (fresh, so JetStream's duplicate window keeps nothing back).
    replay_message_id  text,
    at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_actions_dead_letter_id ON dead_letter_actions (dead_letter_id, id);
