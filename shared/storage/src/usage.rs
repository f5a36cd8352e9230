//! The partner usage log: the table `integration_usage_logs`, one row per call made
//! (or attempted) with an integration's credentials.
//!
//! The gateway writes it in batches, one `unnest` INSERT per flush; owners and partners
//! read it a keyset page at a time (newest first, on `integration_usage_logs_page_idx`)
//! with totals over the whole range from one grouped scan. Rows past their retention
//! are deleted by [`crate::retention`]; the daily call counts live with the
//! integrations ([`crate::integrations::add_daily_calls`]) and stay.

use chrono::{DateTime, Utc};
use portico_domain::ids::IntegrationId;

/// One call to log.
#[derive(Debug, Clone, Copy)]
pub struct NewUsageLog<'a> {
    /// Whose credentials were presented.
    pub integration_id: IntegrationId,
    /// HTTP method.
    pub method: &'a str,
    /// Route template, never the raw path.
    pub route: &'a str,
    /// Status answered.
    pub status: i32,
    /// Time to the response head, in microseconds.
    pub latency_us: i64,
    /// The client's address.
    pub client_ip: Option<&'a str>,
    /// When the call arrived.
    pub occurred_at: DateTime<Utc>,
}

/// One usage-log row as owners and partners read it.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Row id (the keyset tie-breaker).
    pub id: i64,
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Status answered.
    pub status: i32,
    /// Microseconds to the response head.
    pub latency_us: i64,
    /// Client address.
    pub client_ip: Option<String>,
    /// When the call arrived.
    pub occurred_at: DateTime<Utc>,
}

/// One group of [`totals`]: by status (`status` set), by route (`method` and `route`
/// set), or the grand total (neither set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    /// The status of a by-status group.
    pub status: Option<i32>,
    /// The method of a by-route group.
    pub method: Option<String>,
    /// The route of a by-route group.
    pub route: Option<String>,
    /// Calls in the group.
    pub calls: i64,
}

/// Logs a batch of calls in one statement. Entries of an integration deleted meanwhile
/// are skipped (its log went with it). Returns the rows written.
pub async fn insert_logs(
    executor: impl sqlx::PgExecutor<'_>,
    entries: &[NewUsageLog<'_>],
) -> Result<u64, sqlx::Error> {
    let n = entries.len();
    let mut ids = Vec::with_capacity(n);
    let mut methods = Vec::with_capacity(n);
    let mut routes = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut ips = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for e in entries {
        ids.push(e.integration_id.as_uuid());
        methods.push(e.method);
        routes.push(e.route);
        statuses.push(e.status);
        latencies.push(e.latency_us);
        ips.push(e.client_ip);
        times.push(e.occurred_at);
    }
    let written = sqlx::query!(
        "INSERT INTO integration_usage_logs
             (integration_id, method, route, status, latency_us, client_ip, occurred_at)
         SELECT u.integration_id, u.method, u.route, u.status, u.latency_us, u.client_ip, u.occurred_at
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[], $7::timestamptz[])
              AS u(integration_id, method, route, status, latency_us, client_ip, occurred_at)
         WHERE EXISTS (SELECT 1 FROM integrations i WHERE i.id = u.integration_id)",
        &ids,
        &methods as &Vec<&str>,
        &routes as &Vec<&str>,
        &statuses,
        &latencies,
        &ips as &Vec<Option<&str>>,
        &times,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(written)
}

/// A page of an integration's log within `[from, to)`, newest first, after a keyset
/// position `(occurred_at, id)`; fetches up to `limit` rows.
pub async fn page(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<UsageRecord>, sqlx::Error> {
    sqlx::query_as!(
        UsageRecord,
        "SELECT id, method, route, status, latency_us, client_ip, occurred_at
         FROM integration_usage_logs
         WHERE integration_id = $1
           AND ($2::timestamptz IS NULL OR occurred_at >= $2)
           AND ($3::timestamptz IS NULL OR occurred_at < $3)
           AND ($4::timestamptz IS NULL OR (occurred_at, id) < ($4, $5))
         ORDER BY occurred_at DESC, id DESC
         LIMIT $6",
        integration_id.as_uuid(),
        from,
        to,
        after.map(|(occurred_at, _)| occurred_at),
        after.map(|(_, id)| id),
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Call counts of an integration within `[from, to)` in one grouped scan: by status,
/// by method and route, and overall (see [`UsageGroup`]).
pub async fn totals(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<UsageGroup>, sqlx::Error> {
    // GROUPING SETS null the grouped-away columns: PostgreSQL's NOT NULL on them does
    // not hold here, hence the `?` overrides.
    sqlx::query_as!(
        UsageGroup,
        r#"SELECT status AS "status?", method AS "method?", route AS "route?",
                  count(*) AS "calls!"
           FROM integration_usage_logs
           WHERE integration_id = $1
             AND ($2::timestamptz IS NULL OR occurred_at >= $2)
             AND ($3::timestamptz IS NULL OR occurred_at < $3)
           GROUP BY GROUPING SETS ((status), (method, route), ())"#,
        integration_id.as_uuid(),
        from,
        to,
    )
    .fetch_all(executor)
    .await
}
