-- Listen endpoints (`portico listen`): a webhook whose deliveries go to a developer's
-- command-line tool over its live connection, never to an address. The dispatcher
-- sends each signed request as a NATS request to the gateway replica holding the
-- connection; `url` holds the placeholder `listen:<id>`, which no HTTP client can call.
ALTER TABLE webhooks
    ADD COLUMN transport text NOT NULL DEFAULT 'http'
        CHECK (transport IN ('http', 'listen')),
    -- Last time a gateway saw the endpoint's connection (refreshed while connected);
    -- the dispatcher deletes listen endpoints not seen for PORTICO_LISTEN_TIMEOUT_SECS.
    ADD COLUMN listen_seen_at timestamptz,
    ADD CONSTRAINT webhooks_listen_shape CHECK (
        transport = 'http'
        OR (url = 'listen:' || id::text AND listen_seen_at IS NOT NULL)
    );
-- The dispatcher's sweep of abandoned listen endpoints.
CREATE INDEX webhooks_listen_seen_idx ON webhooks (listen_seen_at) WHERE transport = 'listen';
