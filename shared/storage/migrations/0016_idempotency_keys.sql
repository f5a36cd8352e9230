-- Idempotency keys of creates (`Idempotency-Key` over REST, `idempotency-key` metadata
-- over gRPC): one row per owner, route and key. A row is claimed before the create runs
-- (`status` NULL, leased until `locked_until`) and completed with the answer once it
-- has run, so the same key and request replay that answer and another request with the
-- key is refused. The answer's body is stored sealed with the secrets keyring (a create
-- may return a secret once: a webhook's signing secret, an integration's API secret).
-- Rows are kept 24 hours (the batch-processor's retention job deletes older ones).
-- Bulk-order batches keep their own key on their row (migration 0004), written in the
-- batch's own transaction, and are not stored here.
CREATE TABLE idempotency_keys (
    -- Whose key: every caller acting for this user shares the owner's key space.
    user_id        text NOT NULL,
    -- The operation, e.g. `POST /webhooks` or `grpc:portico.v1.Webhooks/CreateWebhook`.
    route          text NOT NULL,
    key            text NOT NULL,
    -- SHA-256 of the caller and the request (body or message): the same key with
    -- another request is refused rather than replayed.
    request_hash   bytea NOT NULL,
    -- While NULL the request is in progress; then the answer's status (HTTP status,
    -- or 0 = gRPC OK).
    status         integer,
    content_type   text,
    -- The answer's body sealed with the secrets keyring (bound to owner, route and key).
    response       bytea,
    -- An in-progress claim older than this was abandoned (its process died) and may be
    -- taken over by a retry.
    locked_until   timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, route, key)
);
-- Retention deletes by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
