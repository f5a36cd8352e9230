-- Partner integrations: daily call counters behind the per-integration quota.
--
-- Each gateway replica counts admitted partner calls in memory and adds its counts
-- here, set-based, with every usage-log flush (one upsert per flush, not per call).
-- The totals it reads back tell it what the other replicas admitted, so a daily quota
-- holds across replicas to within one flush interval. A replica that starts (or loads
-- an integration into its cache) seeds its counter from today's row.
CREATE TABLE integration_daily_usage (
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    day             date NOT NULL,
    calls           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (integration_id, day)
);

-- Usage pages are keyset-paginated on (occurred_at, id) newest first.
CREATE INDEX integration_usage_logs_page_idx
    ON integration_usage_logs (integration_id, occurred_at DESC, id DESC);

-- Looking up the credentials of an integration (current key, rotation) by age.
CREATE INDEX integration_credentials_current_idx
    ON integration_credentials (integration_id, created_at DESC);
