-- Portico schema, version 1.
--
-- The six tables of the platform's migration guide (webhooks, webhook_deliveries,
-- bulk_order_batches, bulk_order_results, integrations, integration_usage_logs) plus
-- what the design needs: signing secrets, events, delivery attempts, retry jobs,
-- batch input chunks, orders and order items, integration credentials and the outbox.
-- Every owned row carries user_id so every query can be scoped to its caller.

CREATE TABLE webhooks (
    id                   uuid PRIMARY KEY,
    user_id              text NOT NULL,
    url                  text NOT NULL,
    events               text[] NOT NULL,
    description          text,
    active               boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    disabled_at          timestamptz,
    max_retries          integer NOT NULL,
    base_delay_ms        bigint NOT NULL,
    max_delay_ms         bigint NOT NULL,
    headers              jsonb NOT NULL DEFAULT '{}'::jsonb,
    ordering_enabled     boolean NOT NULL DEFAULT false,
    rate_limit_per_second integer,
    max_concurrency      integer,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user_list_idx ON webhooks (user_id, created_at DESC, id DESC);
CREATE INDEX webhooks_user_active_idx ON webhooks (user_id) WHERE active;

-- Signing secrets, encrypted with PORTICO_SECRETS_KEY. Several rows per webhook
-- during a rotation; a row with expires_at in the past no longer signs.
CREATE TABLE webhook_secrets (
    id          uuid PRIMARY KEY,
    webhook_id  uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX webhook_secrets_webhook_idx ON webhook_secrets (webhook_id, created_at DESC);

-- Every accepted event. The id is derived from (user_id, idempotency_key), so a
-- re-published event lands on the same row.
CREATE TABLE events (
    id               uuid PRIMARY KEY,
    user_id          text NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    idempotency_key  text NOT NULL,
    ordering_key     text,
    accepted_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_idx ON events (user_id, created_at DESC);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id          text NOT NULL,
    event_type       text NOT NULL,
    ordering_key     text,
    status           text NOT NULL CHECK (status IN ('pending', 'delivering', 'succeeded', 'retrying', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL,
    next_attempt_at  timestamptz,
    lease_until      timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_status_idx ON webhook_deliveries (webhook_id, status, created_at DESC);
CREATE INDEX webhook_deliveries_type_idx ON webhook_deliveries (webhook_id, event_type, created_at DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'delivering');
CREATE INDEX webhook_deliveries_ordering_idx ON webhook_deliveries (webhook_id, ordering_key, created_at)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'retrying', 'delivering');

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
);

-- retry-failed as a durable job: survives any restart, reports progress.
CREATE TABLE webhook_retry_jobs (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    user_id          text NOT NULL,
    idempotency_key  text,
    status           text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'cancelled', 'failed')),
    dry_run          boolean NOT NULL DEFAULT false,
    filters          jsonb NOT NULL DEFAULT '{}'::jsonb,
    max_retries      integer,
    total            bigint NOT NULL DEFAULT 0,
    processed        bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, idempotency_key)
);
CREATE INDEX webhook_retry_jobs_webhook_idx ON webhook_retry_jobs (webhook_id, created_at DESC);

CREATE TABLE integrations (
    id                    uuid PRIMARY KEY,
    user_id               text NOT NULL,
    name                  text NOT NULL,
    integration_type      text NOT NULL CHECK (integration_type IN ('erp', 'marketplace', 'shipping', 'accounting', 'custom')),
    webhook_url           text,
    scopes                text[] NOT NULL DEFAULT '{}',
    active                boolean NOT NULL DEFAULT true,
    expires_at            timestamptz,
    rate_limit_per_second integer,
    daily_quota           integer,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    last_used_at          timestamptz
);
CREATE INDEX integrations_user_list_idx ON integrations (user_id, created_at DESC, id DESC);
CREATE INDEX integrations_user_type_idx ON integrations (user_id, integration_type, created_at DESC);

-- API credentials: the key id is public; the secret is kept only as a keyed hash.
-- A regenerated integration keeps its previous row until expires_at (grace period).
CREATE TABLE integration_credentials (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    api_key         text NOT NULL UNIQUE,
    secret_hash     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX integration_credentials_integration_idx ON integration_credentials (integration_id);

CREATE TABLE integration_usage_logs (
    id              bigserial PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    method          text NOT NULL,
    route           text NOT NULL,
    status          integer NOT NULL,
    latency_us      bigint NOT NULL,
    client_ip       text,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX integration_usage_logs_idx ON integration_usage_logs (integration_id, occurred_at DESC);

CREATE TABLE bulk_order_batches (
    id               uuid PRIMARY KEY,
    user_id          text NOT NULL,
    integration_id   uuid REFERENCES integrations (id) ON DELETE SET NULL,
    parent_batch_id  uuid REFERENCES bulk_order_batches (id) ON DELETE SET NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'completed_with_errors', 'failed', 'cancelled')),
    idempotency_key  text,
    request_hash     bytea,
    total            integer NOT NULL,
    processed        integer NOT NULL DEFAULT 0,
    succeeded        integer NOT NULL DEFAULT 0,
    failed           integer NOT NULL DEFAULT 0,
    duplicate        integer NOT NULL DEFAULT 0,
    error_summary    jsonb NOT NULL DEFAULT '{}'::jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL DEFAULT now() + interval '30 days',
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX bulk_order_batches_user_list_idx ON bulk_order_batches (user_id, created_at DESC, id DESC);
CREATE INDEX bulk_order_batches_user_status_idx ON bulk_order_batches (user_id, status, created_at DESC);
CREATE INDEX bulk_order_batches_expiry_idx ON bulk_order_batches (expires_at);
CREATE INDEX bulk_order_batches_parent_idx ON bulk_order_batches (parent_batch_id);
CREATE INDEX bulk_order_batches_integration_idx ON bulk_order_batches (integration_id);

-- The submitted orders, kept as JSON chunks so a 100,000-order batch is accepted with
-- a few hundred rows instead of 100,000; the processor works chunk by chunk.
CREATE TABLE bulk_order_batch_chunks (
    batch_id     uuid NOT NULL REFERENCES bulk_order_batches (id) ON DELETE CASCADE,
    chunk_index  integer NOT NULL,
    first_index  integer NOT NULL,
    orders       jsonb NOT NULL,
    processed    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (batch_id, chunk_index)
);

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    user_id          text NOT NULL,
    batch_id         uuid REFERENCES bulk_order_batches (id) ON DELETE SET NULL,
    integration_id   uuid REFERENCES integrations (id) ON DELETE SET NULL,
    client_order_ref text NOT NULL,
    currency         text NOT NULL,
    customer         jsonb NOT NULL,
    shipping_address jsonb NOT NULL,
    total_minor      bigint NOT NULL,
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_order_ref)
);
CREATE INDEX orders_batch_idx ON orders (batch_id);
CREATE INDEX orders_integration_idx ON orders (integration_id);

CREATE TABLE order_items (
    order_id          uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_number       integer NOT NULL,
    sku               text NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_number)
);

CREATE TABLE bulk_order_results (
    batch_id          uuid NOT NULL REFERENCES bulk_order_batches (id) ON DELETE CASCADE,
    order_index       integer NOT NULL,
    client_order_ref  text,
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed', 'duplicate', 'unprocessed')),
    order_id          uuid,
    errors            jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (batch_id, order_index)
);
CREATE INDEX bulk_order_results_status_idx ON bulk_order_results (batch_id, status, order_index);

-- Transactional outbox: a job committed with the state that needs it. The relay
-- publishes each row to JetStream with Nats-Msg-Id = message_id (so a re-publish
-- after a crash is deduplicated) and deletes it once JetStream acknowledged.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    subject     text NOT NULL,
    message_id  text NOT NULL,
    payload     bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created_idx ON outbox (created_at);

-- Jobs a consumer could not decode or gave up on, recorded before the message is
-- terminated so nothing disappears without a trace.
CREATE TABLE job_dead_letters (
    id          bigserial PRIMARY KEY,
    consumer    text NOT NULL,
    subject     text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
