//! The transactional outbox (`outbox`): a job committed in the same transaction as the
//! state that needs it, published to JetStream by a relay afterwards.
//!
//! Producers add rows inside their own transaction ([`insert`] for one job,
//! [`insert_all`] for a chunk of them in one statement). The relay (in
//! `portico-queue`) takes a round of rows with [`claim`] (`FOR UPDATE SKIP LOCKED`, so
//! the relays of several replicas share the table), publishes them and, once JetStream
//! acknowledged every one, removes them with [`delete`] in the same transaction: a
//! crash in between leaves the rows to be published again, and JetStream drops the
//! duplicates by their message id. [`backlog`] feeds the relay's gauges. What a row
//! holds (subject, message id, encoded job, trace headers) is the queue's business;
//! this module only stores it.

/// One job to add to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxRow {
    /// The JetStream subject to publish on.
    pub subject: String,
    /// The `Nats-Msg-Id` JetStream deduplicates by.
    pub message_id: String,
    /// The encoded job.
    pub payload: Vec<u8>,
}

/// Jobs to add, column by column, as [`insert_all`] binds them.
#[derive(Debug, Default)]
pub struct NewOutboxRows {
    subject: Vec<String>,
    message_id: Vec<String>,
    payload: Vec<Vec<u8>>,
}

impl NewOutboxRows {
    /// Room for `n` jobs without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            subject: Vec::with_capacity(n),
            message_id: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
        }
    }

    /// Adds one job.
    pub fn push(&mut self, row: NewOutboxRow) {
        self.subject.push(row.subject);
        self.message_id.push(row.message_id);
        self.payload.push(row.payload);
    }

    /// How many jobs.
    pub fn len(&self) -> usize {
        self.subject.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subject.is_empty()
    }
}

/// Adds one job; `headers` (a JSON object of text values: the trace context) travel
/// with it. Run it in the transaction that commits the state the job is for.
pub async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    subject: &str,
    message_id: &str,
    payload: &[u8],
    headers: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO outbox (subject, message_id, payload, headers) VALUES ($1, $2, $3, $4)",
        subject,
        message_id,
        payload,
        headers
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Adds many jobs with one statement, all with the same `headers`, so a thousand jobs
/// (a chunk of orders' `order.created` events) cost one round trip. Nothing is sent
/// for no jobs.
pub async fn insert_all(
    executor: impl sqlx::PgExecutor<'_>,
    rows: &NewOutboxRows,
    headers: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO outbox (subject, message_id, payload, headers)
         SELECT subject, message_id, payload, $4 FROM unnest($1::text[], $2::text[], $3::bytea[])
             AS t(subject, message_id, payload)",
        &rows.subject,
        &rows.message_id,
        &rows.payload,
        headers
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// One outbox row as the relay publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Ascending in commit order (mostly): the relay publishes in this order.
    pub id: i64,
    /// The JetStream subject.
    pub subject: String,
    /// The `Nats-Msg-Id`.
    pub message_id: String,
    /// The encoded job.
    pub payload: Vec<u8>,
    /// The trace context, a JSON object of text values.
    pub headers: serde_json::Value,
}

/// Locks and returns up to `limit` of the oldest rows no other relay holds (`FOR
/// UPDATE SKIP LOCKED`). Run it in a transaction and [`delete`] the published rows in
/// the same one; the locks end with it.
pub async fn claim(
    executor: impl sqlx::PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as!(
        OutboxRow,
        "SELECT id, subject, message_id, payload, headers FROM outbox
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit
    )
    .fetch_all(executor)
    .await
}

/// Removes published rows (one statement for the whole round); returns how many.
pub async fn delete(executor: impl sqlx::PgExecutor<'_>, ids: &[i64]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", ids)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// What waits in the outbox, for the relay's gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows not yet published.
    pub pending: i64,
    /// Age of the oldest of them in seconds; `None` when there is none.
    pub oldest_age_secs: Option<f64>,
}

/// How many rows wait and how old the oldest is, in one statement.
pub async fn backlog(executor: impl sqlx::PgExecutor<'_>) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "pending!",
                  EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS "oldest_age_secs"
             FROM outbox"#
    )
    .fetch_one(executor)
    .await?;
    Ok(Backlog {
        pending: row.pending,
        oldest_age_secs: row.oldest_age_secs,
    })
}
