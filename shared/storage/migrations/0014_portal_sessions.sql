-- Partner-portal sessions (`/portal/`). A row starts as a one-time login link (only the
-- SHA-256 of its token is stored) and becomes a browser session when the link is
-- opened: the link's hash is cleared and the session cookie's hash is set, in one
-- statement, so a link works once. A partner signing in with its integration's
-- credentials gets a row with a session hash straight away. Revoking sets revoked_at;
-- nothing reads a revoked or expired row.
CREATE TABLE portal_sessions (
    id                  uuid PRIMARY KEY,
    -- Whose data the session shows: the user, or the owner of a partner's integration.
    user_id             text NOT NULL,
    -- A partner session: only what this integration owns, within its scopes.
    integration_id      uuid REFERENCES integrations (id) ON DELETE CASCADE,
    scopes              text[] NOT NULL DEFAULT '{}',
    -- A user session narrowed to these webhooks; NULL = all of the user's webhooks.
    webhook_ids         uuid[],
    -- SHA-256 of the one-time login token; NULL once used (or for a partner sign-in).
    login_token_hash    bytea UNIQUE,
    login_expires_at    timestamptz,
    -- SHA-256 of the session cookie; NULL until the link is opened.
    session_token_hash  bytea UNIQUE,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    signed_in_at        timestamptz,
    revoked_at          timestamptz,
    CHECK ((login_token_hash IS NULL) OR (login_expires_at IS NOT NULL))
);
-- The owner's list and revocation by user.
CREATE INDEX portal_sessions_user_id ON portal_sessions (user_id, created_at);
