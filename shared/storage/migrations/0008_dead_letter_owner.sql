-- A job that failed for good (undecodable, or an item that no statement could store)
-- is recorded with its owner and message id, so an operator can find it by owner and a
-- job dead-lettered twice (its termination was lost) is recorded once.
ALTER TABLE job_dead_letters ADD COLUMN user_id text;
ALTER TABLE job_dead_letters ADD COLUMN message_id text;
CREATE UNIQUE INDEX job_dead_letters_message_id ON job_dead_letters (consumer, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX job_dead_letters_created_at ON job_dead_letters (created_at);
