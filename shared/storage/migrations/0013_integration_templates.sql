-- Integration templates saved by users (the built-in ones live in
-- data/integration-templates.json, compiled into the gateway). A template is named by
-- its key, unique per owner; the gateway refuses a key a built-in template uses.
-- Expand-only: a new table the running release never reads.
CREATE TABLE integration_templates (
    user_id               text NOT NULL,
    key                   text NOT NULL CHECK (key ~ '^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$'),
    name                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    integration_type      text NOT NULL CHECK (integration_type IN ('erp', 'marketplace', 'shipping', 'accounting', 'custom')),
    scopes                text[] NOT NULL,
    allowed_scopes        text[],
    rate_limit_per_second integer NOT NULL CHECK (rate_limit_per_second >= 0),
    daily_quota           integer NOT NULL CHECK (daily_quota >= 0),
    events                text[] NOT NULL,
    overridable           text[] NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
