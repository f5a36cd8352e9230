-- Webhook delivery (the dispatcher's side).

-- The delivered body embeds the event's data verbatim, and a retry must send the very
-- same bytes as the first attempt (receivers cache, diff and log bodies; signatures
-- are over the exact bytes). jsonb normalises text (key order, whitespace), json keeps
-- it as accepted, and costs less to insert on the hot path.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;

-- Opt-in per-key ordering: the JetStream stream sequence of the event job, set only on
-- deliveries to webhooks with ordering_enabled and events with an ordering_key. A
-- delivery is released when no earlier non-final delivery with the same
-- (webhook, ordering_key) exists.
ALTER TABLE webhook_deliveries ADD COLUMN ordering_seq bigint;
CREATE INDEX webhook_deliveries_ordered_idx
    ON webhook_deliveries (webhook_id, ordering_key, ordering_seq)
    WHERE ordering_seq IS NOT NULL AND status IN ('pending', 'retrying', 'delivering');

-- retry-failed jobs mark what they re-queued, so a job resumed after a restart never
-- counts or re-queues a delivery twice (and a delivery that fails again is not picked
-- up again by the same job).
ALTER TABLE webhook_deliveries ADD COLUMN last_retry_job_id uuid;

-- The retry poller finds expired leases (a dispatcher died mid-attempt) by lease_until.
CREATE INDEX webhook_deliveries_lease_idx
    ON webhook_deliveries (lease_until)
    WHERE lease_until IS NOT NULL AND status IN ('pending', 'delivering');
