//! Delivery analytics (`delivery_rollups`, migration 0012): the rollups the dispatcher
//! adds to while it records attempts, and the queries that read them.
//!
//! Every attempt and outcome is added at three widths, its UTC minute, hour and day,
//! and four levels of detail ([`Level`]): per (webhook, event type), per webhook, per
//! event type, and the owner's total, so a question reads rows already summed the way
//! it asks. The dispatcher aggregates a chunk's results per row
//! in Rust first ([`RollupRows`]) and writes them with one set-based upsert (`unnest`,
//! `ON CONFLICT DO UPDATE` adding) in the statement or transaction that records the
//! attempts, so rollups never disagree with the history they summarise and the hot
//! path pays one statement per chunk, not one per delivery.
//!
//! A query over `[from, to)` is split into [`segments`]: day rows for the whole days
//! inside it, hour rows for the whole hours at its edges, minute rows for the rest.
//! 30 days of an owner's totals cost 30 rows, per webhook 30 per webhook, whatever
//! the volume. The rows
//! are summed here in Rust ([`Figures`]); percentiles come from the summed latency
//! histogram ([`Figures::percentile_ms`]).
//!
//! What each count means is documented on [`Figures`] and in the migration.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use portico_domain::ids::WebhookId;
use uuid::Uuid;

/// Upper bounds (exclusive, milliseconds) of the latency histogram's buckets; bucket
/// `i` holds durations in `[LATENCY_BOUNDS_MS[i - 1], LATENCY_BOUNDS_MS[i])` (from 0
/// for the first), and one more, open-ended bucket holds everything from 100 s up.
/// Log-scale, about ten buckets per decade: each bucket is 1 ms wide below 6 ms and at
/// most a third of its lower bound above, which bounds the error of a percentile.
/// Stored as the `latency_hist` array: changing the bounds needs a migration.
pub const LATENCY_BOUNDS_MS: [i64; 48] = [
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 80, 100, 130, 160, 200, 250, 320, 400,
    500, 630, 800, 1_000, 1_300, 1_600, 2_000, 2_500, 3_200, 4_000, 5_000, 6_300, 8_000, 10_000,
    13_000, 16_000, 20_000, 25_000, 32_000, 40_000, 50_000, 63_000, 80_000, 100_000,
];

/// Buckets of the latency histogram (the bounds plus the open-ended last one).
pub const HIST_LEN: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The histogram bucket a duration falls in.
pub fn latency_bucket(latency_ms: i64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound <= latency_ms)
}

/// The `[lower, upper)` bounds of histogram bucket `i`, in milliseconds; `None` as the
/// upper bound of the open-ended last bucket.
pub fn bucket_bounds(i: usize) -> (i64, Option<i64>) {
    let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
    (lower, LATENCY_BOUNDS_MS.get(i).copied())
}

/// The bucket widths rollups are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BucketWidth {
    /// One UTC minute.
    Minute,
    /// One UTC hour.
    Hour,
    /// One UTC day.
    Day,
}

impl BucketWidth {
    /// Every width, narrowest first.
    pub const ALL: [BucketWidth; 3] = [BucketWidth::Minute, BucketWidth::Hour, BucketWidth::Day];

    /// The width in seconds (the `bucket_secs` column).
    pub fn secs(self) -> i64 {
        match self {
            BucketWidth::Minute => 60,
            BucketWidth::Hour => 3_600,
            BucketWidth::Day => 86_400,
        }
    }

    /// The wire name (`minute`, `hour`, `day`).
    pub fn as_str(self) -> &'static str {
        match self {
            BucketWidth::Minute => "minute",
            BucketWidth::Hour => "hour",
            BucketWidth::Day => "day",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The start of the bucket of this width that holds `t` (UTC, epoch-aligned).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        from_secs(t.timestamp().div_euclid(self.secs()) * self.secs())
    }

    /// The first bucket start of this width at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let floor = self.floor(t);
        if floor == t && t.timestamp_subsec_nanos() == 0 {
            floor
        } else {
            from_secs(floor.timestamp() + self.secs())
        }
    }
}

fn from_secs(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The webhook id of rows summed over every webhook (levels 2 and 3): the nil UUID,
/// which no generated id is.
pub const ALL_WEBHOOKS: Uuid = Uuid::nil();

/// The event type of rows summed over every event type (levels 1 and 3): empty, which
/// no event type is.
pub const ALL_EVENT_TYPES: &str = "";

/// How detailed a rollup row is (the `level` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// One webhook and one event type.
    WebhookAndType = 0,
    /// One webhook, every event type.
    Webhook = 1,
    /// One event type, every webhook.
    EventType = 2,
    /// Everything of the owner.
    Owner = 3,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 4] = [
        Level::WebhookAndType,
        Level::Webhook,
        Level::EventType,
        Level::Owner,
    ];

    /// The least detailed level that still tells webhooks (`by_webhook`) and event
    /// types (`by_event_type`) apart.
    pub fn for_detail(by_webhook: bool, by_event_type: bool) -> Self {
        match (by_webhook, by_event_type) {
            (true, true) => Level::WebhookAndType,
            (true, false) => Level::Webhook,
            (false, true) => Level::EventType,
            (false, false) => Level::Owner,
        }
    }

    fn keeps_webhook(self) -> bool {
        matches!(self, Level::WebhookAndType | Level::Webhook)
    }

    fn keeps_event_type(self) -> bool {
        matches!(self, Level::WebhookAndType | Level::EventType)
    }
}

/// What became of one delivery when a chunk recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt got a 2xx; the delivery is `succeeded`.
    Succeeded,
    /// The attempt failed and a retry is scheduled; the delivery is `retrying`.
    Retrying,
    /// The delivery became `failed` (final). `exhausted`: its retry budget ran out
    /// (otherwise 410 Gone or an endpoint disabled or deleted while it waited).
    Failed {
        /// Every allowed attempt failed.
        exhausted: bool,
    },
}

/// One delivery's contribution to the rollups.
#[derive(Debug, Clone, Copy)]
pub struct RollupEvent<'a> {
    /// The owner.
    pub user_id: &'a str,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The event's type.
    pub event_type: &'a str,
    /// When the attempt started (or, without an attempt, when the outcome was decided).
    pub at: DateTime<Utc>,
    /// The attempt's duration; `None` when no attempt was made (an inactive endpoint).
    pub attempt_latency_ms: Option<i64>,
    /// What became of the delivery.
    pub outcome: Outcome,
}

/// Counts, latency sum and histogram of a set of attempts and outcomes: one rollup
/// row, or the sum of many.
///
/// - `attempts`: attempts made;
/// - `succeeded`: attempts that got a 2xx (the delivery became `succeeded`);
/// - `retrying`: attempts that failed with a retry scheduled (became `retrying`);
/// - `failed`: deliveries that became `failed`, final (budget exhausted, 410 Gone, or
///   an endpoint disabled or deleted while the delivery waited, without an attempt);
/// - `exhausted`: the part of `failed` whose every allowed attempt failed.
///
/// Counts are transitions, each counted in the bucket of the attempt that caused it: a
/// delivery retried by hand after failing counts as failed then and as succeeded later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Attempts made.
    pub attempts: i64,
    /// Attempts that succeeded.
    pub succeeded: i64,
    /// Failed attempts with a retry scheduled.
    pub retrying: i64,
    /// Deliveries that ended failed.
    pub failed: i64,
    /// Failed deliveries whose retry budget ran out.
    pub exhausted: i64,
    /// Sum of attempt durations, milliseconds.
    pub latency_sum_ms: i64,
    /// Attempt durations per [`LATENCY_BOUNDS_MS`] bucket.
    pub latency_hist: [i64; HIST_LEN],
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            attempts: 0,
            succeeded: 0,
            retrying: 0,
            failed: 0,
            exhausted: 0,
            latency_sum_ms: 0,
            latency_hist: [0; HIST_LEN],
        }
    }
}

impl Figures {
    /// Adds one delivery's contribution.
    pub fn record(&mut self, latency_ms: Option<i64>, outcome: Outcome) {
        if let Some(ms) = latency_ms {
            let ms = ms.max(0);
            self.attempts += 1;
            self.latency_sum_ms += ms;
            self.latency_hist[latency_bucket(ms)] += 1;
        }
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Retrying => self.retrying += 1,
            Outcome::Failed { exhausted } => {
                self.failed += 1;
                if exhausted {
                    self.exhausted += 1;
                }
            }
        }
    }

    /// Adds another set of figures.
    pub fn merge(&mut self, other: &Figures) {
        self.attempts += other.attempts;
        self.succeeded += other.succeeded;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.exhausted += other.exhausted;
        self.latency_sum_ms += other.latency_sum_ms;
        for (a, b) in self.latency_hist.iter_mut().zip(other.latency_hist.iter()) {
            *a += b;
        }
    }

    /// Adds a stored row's histogram (an array of another length, from a future
    /// schema, is added as far as both go).
    fn merge_hist(&mut self, hist: &[i64]) {
        for (a, b) in self.latency_hist.iter_mut().zip(hist) {
            *a += b;
        }
    }

    /// Share of finished deliveries that succeeded: `succeeded / (succeeded + failed)`;
    /// `None` when none finished.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.succeeded + self.failed;
        (finished > 0).then(|| self.succeeded as f64 / finished as f64)
    }

    /// Share of attempts that failed: `(attempts - succeeded) / attempts`; `None`
    /// without attempts.
    pub fn attempt_failure_rate(&self) -> Option<f64> {
        (self.attempts > 0)
            .then(|| (self.attempts - self.succeeded).max(0) as f64 / self.attempts as f64)
    }

    /// Mean attempt duration in milliseconds; `None` without attempts.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.latency_sum_ms as f64 / self.attempts as f64)
    }

    /// The `p`-th percentile (0 < p <= 1) of attempt duration in milliseconds, from the
    /// histogram: the bucket holding the `ceil(p * n)`-th smallest duration is found
    /// exactly, and the value is interpolated linearly inside it. The true percentile
    /// lies in that bucket, so the error is under the bucket's width (1 ms below 6 ms,
    /// at most a third of the value above); the open-ended last bucket answers its
    /// lower bound (100 000 ms). `None` without attempts.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n: i64 = self.latency_hist.iter().sum();
        if n <= 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * n as f64).ceil() as i64).clamp(1, n);
        let mut below = 0i64;
        for (i, &count) in self.latency_hist.iter().enumerate() {
            if count > 0 && below + count >= rank {
                let (lower, upper) = bucket_bounds(i);
                let Some(upper) = upper else {
                    return Some(lower as f64);
                };
                let within = (rank - below) as f64 / count as f64;
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
            below += count;
        }
        None
    }

    /// The `[lower, upper)` bucket the `p`-th percentile lies in (for tests and for
    /// anyone who wants the bound rather than the estimate).
    pub fn percentile_bucket(&self, p: f64) -> Option<(i64, Option<i64>)> {
        let n: i64 = self.latency_hist.iter().sum();
        if n <= 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * n as f64).ceil() as i64).clamp(1, n);
        let mut below = 0i64;
        for (i, &count) in self.latency_hist.iter().enumerate() {
            if count > 0 && below + count >= rank {
                return Some(bucket_bounds(i));
            }
            below += count;
        }
        None
    }
}

/// The key of one rollup row, in primary-key order (the order rows are locked in).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    user_id: String,
    bucket_secs: i32,
    level: i16,
    bucket_start: i64,
    webhook_id: Uuid,
    event_type: String,
}

/// Rollup rows to add, column by column, as [`upsert`] binds them: built from a
/// chunk's contributions, one row per (owner, width, bucket, webhook, event type),
/// sorted in primary-key order so concurrent chunks lock shared rows in one order.
#[derive(Debug, Default)]
pub struct RollupRows {
    user_id: Vec<String>,
    bucket_secs: Vec<i32>,
    level: Vec<i16>,
    bucket_start: Vec<DateTime<Utc>>,
    webhook_id: Vec<Uuid>,
    event_type: Vec<String>,
    attempts: Vec<i64>,
    succeeded: Vec<i64>,
    retrying: Vec<i64>,
    failed: Vec<i64>,
    exhausted: Vec<i64>,
    latency_sum_ms: Vec<i64>,
    /// Every row's histogram, one after the other ([`HIST_LEN`] each).
    latency_hist: Vec<i64>,
}

impl RollupRows {
    /// Aggregates contributions into rows: first per minute with borrowed keys (no
    /// allocation per delivery), then each minute is added to its hour and day, at
    /// every [`Level`].
    pub fn from_events<'a>(events: impl IntoIterator<Item = RollupEvent<'a>>) -> Self {
        let mut minutes: HashMap<(&'a str, WebhookId, &'a str, i64), Figures> = HashMap::new();
        for e in events {
            let minute = e.at.timestamp().div_euclid(60) * 60;
            minutes
                .entry((e.user_id, e.webhook_id, e.event_type, minute))
                .or_default()
                .record(e.attempt_latency_ms, e.outcome);
        }
        let mut rows: BTreeMap<RowKey, Figures> = BTreeMap::new();
        for ((user_id, webhook_id, event_type, minute), figures) in minutes {
            for width in BucketWidth::ALL {
                for level in Level::ALL {
                    let key = RowKey {
                        user_id: user_id.to_owned(),
                        bucket_secs: width.secs() as i32,
                        level: level as i16,
                        bucket_start: minute.div_euclid(width.secs()) * width.secs(),
                        webhook_id: if level.keeps_webhook() {
                            webhook_id.as_uuid()
                        } else {
                            ALL_WEBHOOKS
                        },
                        event_type: if level.keeps_event_type() {
                            event_type.to_owned()
                        } else {
                            ALL_EVENT_TYPES.to_owned()
                        },
                    };
                    rows.entry(key).or_default().merge(&figures);
                }
            }
        }
        let mut out = RollupRows::default();
        for (key, f) in rows {
            out.user_id.push(key.user_id);
            out.bucket_secs.push(key.bucket_secs);
            out.level.push(key.level);
            out.bucket_start.push(from_secs(key.bucket_start));
            out.webhook_id.push(key.webhook_id);
            out.event_type.push(key.event_type);
            out.attempts.push(f.attempts);
            out.succeeded.push(f.succeeded);
            out.retrying.push(f.retrying);
            out.failed.push(f.failed);
            out.exhausted.push(f.exhausted);
            out.latency_sum_ms.push(f.latency_sum_ms);
            out.latency_hist.extend_from_slice(&f.latency_hist);
        }
        out
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.user_id.len()
    }

    /// Whether there are none (the upsert is skipped then).
    pub fn is_empty(&self) -> bool {
        self.user_id.is_empty()
    }

    /// The columns, for the statements that bind them (here and in `deliveries`).
    pub(crate) fn columns(&self) -> RollupColumns<'_> {
        RollupColumns {
            user_id: &self.user_id,
            bucket_secs: &self.bucket_secs,
            level: &self.level,
            bucket_start: &self.bucket_start,
            webhook_id: &self.webhook_id,
            event_type: &self.event_type,
            attempts: &self.attempts,
            succeeded: &self.succeeded,
            retrying: &self.retrying,
            failed: &self.failed,
            exhausted: &self.exhausted,
            latency_sum_ms: &self.latency_sum_ms,
            latency_hist: &self.latency_hist,
        }
    }
}

/// Borrowed columns of [`RollupRows`].
pub(crate) struct RollupColumns<'a> {
    pub user_id: &'a [String],
    pub bucket_secs: &'a [i32],
    pub level: &'a [i16],
    pub bucket_start: &'a [DateTime<Utc>],
    pub webhook_id: &'a [Uuid],
    pub event_type: &'a [String],
    pub attempts: &'a [i64],
    pub succeeded: &'a [i64],
    pub retrying: &'a [i64],
    pub failed: &'a [i64],
    pub exhausted: &'a [i64],
    pub latency_sum_ms: &'a [i64],
    pub latency_hist: &'a [i64],
}

/// Adds rollup rows in one statement: new rows are inserted, existing ones get the
/// counts, sums and histogram added. Run it in the transaction that records the
/// attempts the rows summarise.
pub async fn upsert(
    executor: impl sqlx::PgExecutor<'_>,
    rows: &RollupRows,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = rows.columns();
    sqlx::query!(
        r#"INSERT INTO delivery_rollups AS r (user_id, bucket_secs, level, bucket_start, webhook_id, event_type,
                attempts, succeeded, retrying, failed, exhausted, latency_sum_ms, latency_hist)
         SELECT u.user_id, u.bucket_secs, u.level, u.bucket_start, u.webhook_id, u.event_type, u.attempts,
                u.succeeded, u.retrying, u.failed, u.exhausted, u.latency_sum_ms,
                ($12::int8[])[(u.n - 1) * $13 + 1 : u.n * $13]
         FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::uuid[], $5::text[], $6::int8[],
                     $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $14::int2[]) WITH ORDINALITY
              AS u(user_id, bucket_secs, bucket_start, webhook_id, event_type, attempts, succeeded,
                   retrying, failed, exhausted, latency_sum_ms, level, n)
         ON CONFLICT (user_id, bucket_secs, level, bucket_start, webhook_id, event_type) DO UPDATE SET
            attempts = r.attempts + EXCLUDED.attempts,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            retrying = r.retrying + EXCLUDED.retrying,
            failed = r.failed + EXCLUDED.failed,
            exhausted = r.exhausted + EXCLUDED.exhausted,
            latency_sum_ms = r.latency_sum_ms + EXCLUDED.latency_sum_ms,
            latency_hist = (SELECT array_agg(COALESCE(h.a, 0) + COALESCE(h.b, 0) ORDER BY h.i)
                            FROM unnest(r.latency_hist, EXCLUDED.latency_hist) WITH ORDINALITY AS h(a, b, i))"#,
        c.user_id,
        c.bucket_secs,
        c.bucket_start,
        c.webhook_id,
        c.event_type,
        c.attempts,
        c.succeeded,
        c.retrying,
        c.failed,
        c.exhausted,
        c.latency_sum_ms,
        c.latency_hist,
        HIST_LEN as i64,
        c.level
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// One part of a queried range read from rows of one width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The width of the rows read.
    pub width: BucketWidth,
    /// First bucket start (inclusive).
    pub from: DateTime<Utc>,
    /// Last bucket start (exclusive).
    pub to: DateTime<Utc>,
}

/// Splits `[from, to)` (whole minutes) into the fewest rows: the widest buckets that
/// fit inside it (no wider than `widest`), narrower ones at the edges. Every minute of
/// the range is covered exactly once.
pub fn segments(from: DateTime<Utc>, to: DateTime<Utc>, widest: BucketWidth) -> Vec<Segment> {
    let mut out = Vec::new();
    let widths: Vec<BucketWidth> = BucketWidth::ALL
        .into_iter()
        .filter(|w| *w <= widest)
        .rev()
        .collect();
    split(from, to, &widths, &mut out);
    out.sort_by_key(|s| (s.from, s.width));
    out
}

fn split(from: DateTime<Utc>, to: DateTime<Utc>, widths: &[BucketWidth], out: &mut Vec<Segment>) {
    let Some((&width, narrower)) = widths.split_first() else {
        return;
    };
    if from >= to {
        return;
    }
    if narrower.is_empty() {
        out.push(Segment { width, from, to });
        return;
    }
    let inner_from = width.ceil(from);
    let inner_to = width.floor(to);
    if inner_from < inner_to {
        split(from, inner_from, narrower, out);
        out.push(Segment {
            width,
            from: inner_from,
            to: inner_to,
        });
        split(inner_to, to, narrower, out);
    } else {
        split(from, to, narrower, out);
    }
}

/// What to read: one owner's rollups over `[from, to)`, optionally one webhook or one
/// event type. The owner is always part of the key, so no query can see another's rows.
#[derive(Debug, Clone)]
pub struct RollupQuery<'a> {
    /// The owner.
    pub user_id: &'a str,
    /// Only this webhook.
    pub webhook_id: Option<WebhookId>,
    /// Only this event type.
    pub event_type: Option<&'a str>,
    /// Start, inclusive, a whole minute.
    pub from: DateTime<Utc>,
    /// End, exclusive, a whole minute.
    pub to: DateTime<Utc>,
    /// The widest rows that may be read (the bucket width of a series: no row may
    /// straddle two of its buckets).
    pub widest: BucketWidth,
    /// Rows per webhook are wanted (a split by webhook), not only totals.
    pub split_webhook: bool,
    /// Rows per event type are wanted.
    pub split_event_type: bool,
}

impl RollupQuery<'_> {
    /// The least detailed rows that answer this query.
    pub fn level(&self) -> Level {
        Level::for_detail(
            self.split_webhook || self.webhook_id.is_some(),
            self.split_event_type || self.event_type.is_some(),
        )
    }
}

/// One stored rollup row, as read.
#[derive(Debug, Clone)]
pub struct RollupRow {
    /// Start of its bucket.
    pub bucket_start: DateTime<Utc>,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The event type.
    pub event_type: String,
    /// Its figures.
    pub figures: Figures,
}

/// Reads the rows covering `q`'s range (see [`segments`]) at the least detailed
/// [`Level`] that answers it; rows summed over every webhook carry [`ALL_WEBHOOKS`],
/// over every event type [`ALL_EVENT_TYPES`].
pub async fn read(
    executor: impl sqlx::PgExecutor<'_>,
    q: &RollupQuery<'_>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    let segs = segments(q.from, q.to, q.widest);
    if segs.is_empty() {
        return Ok(Vec::new());
    }
    let secs: Vec<i32> = segs.iter().map(|s| s.width.secs() as i32).collect();
    let lo: Vec<DateTime<Utc>> = segs.iter().map(|s| s.from).collect();
    let hi: Vec<DateTime<Utc>> = segs.iter().map(|s| s.to).collect();
    let rows = sqlx::query!(
        r#"SELECT r.bucket_start, r.webhook_id, r.event_type, r.attempts, r.succeeded, r.retrying,
                  r.failed, r.exhausted, r.latency_sum_ms, r.latency_hist
           FROM unnest($2::int4[], $3::timestamptz[], $4::timestamptz[]) AS s(secs, lo, hi)
           JOIN delivery_rollups r
             ON r.user_id = $1 AND r.bucket_secs = s.secs AND r.level = $7
            AND r.bucket_start >= s.lo AND r.bucket_start < s.hi
           WHERE ($5::uuid IS NULL OR r.webhook_id = $5)
             AND ($6::text IS NULL OR r.event_type = $6)"#,
        q.user_id,
        &secs,
        &lo,
        &hi,
        q.webhook_id.map(WebhookId::as_uuid),
        q.event_type,
        q.level() as i16
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut figures = Figures {
                attempts: r.attempts,
                succeeded: r.succeeded,
                retrying: r.retrying,
                failed: r.failed,
                exhausted: r.exhausted,
                latency_sum_ms: r.latency_sum_ms,
                latency_hist: [0; HIST_LEN],
            };
            figures.merge_hist(&r.latency_hist);
            RollupRow {
                bucket_start: r.bucket_start,
                webhook_id: WebhookId(r.webhook_id),
                event_type: r.event_type,
                figures,
            }
        })
        .collect())
}

/// How long rollup rows are kept, in days (0 = forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRetention {
    /// Hour and day rows (`PORTICO_ROLLUP_RETENTION_DAYS`).
    pub days: u32,
    /// Minute rows (`PORTICO_ROLLUP_MINUTE_RETENTION_DAYS`).
    pub minute_days: u32,
}

/// Rows deleted per statement.
const PURGE_BATCH: i64 = 5_000;

/// Deletes rollup rows past their retention in bounded batches (safe from several
/// replicas at once); returns how many.
pub async fn purge(pool: &sqlx::PgPool, r: &RollupRetention) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for (widths, days) in [(vec![60], r.minute_days), (vec![3_600, 86_400], r.days)] {
        if days == 0 {
            continue;
        }
        let age = f64::from(days) * 86_400.0;
        loop {
            let n = sqlx::query!(
                "DELETE FROM delivery_rollups WHERE ctid IN (
                     SELECT ctid FROM delivery_rollups
                     WHERE bucket_secs = ANY($1) AND bucket_start < now() - make_interval(secs => $2)
                     LIMIT $3 FOR UPDATE SKIP LOCKED)",
                &widths,
                age,
                PURGE_BATCH
            )
            .execute(pool)
            .await?
            .rows_affected();
            total += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn buckets_follow_the_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(99), 17);
        assert_eq!(latency_bucket(100), 18);
        assert_eq!(latency_bucket(1_000_000), HIST_LEN - 1);
        for i in 0..HIST_LEN {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(latency_bucket(lo), i);
            if let Some(hi) = hi {
                assert_eq!(latency_bucket(hi - 1), i);
                assert!(
                    hi - lo <= 1 || (hi - lo) * 3 <= lo + 2,
                    "bucket {i} too wide"
                );
            }
        }
    }

    #[test]
    fn percentile_lies_in_its_bucket() {
        let mut f = Figures::default();
        for ms in 1..=1000 {
            f.record(Some(ms), Outcome::Succeeded);
        }
        for (p, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = f.percentile_ms(p).expect("some");
            let (lo, hi) = f.percentile_bucket(p).expect("some");
            assert!(lo as f64 <= exact && (exact as i64) < hi.expect("bounded"));
            assert!(got >= lo as f64 && got <= hi.expect("bounded") as f64);
        }
        assert_eq!(Figures::default().percentile_ms(0.5), None);
    }

    #[test]
    fn segments_cover_the_range_once_with_few_rows() {
        let from = t("2026-01-01T22:30:00Z");
        let to = t("2026-01-05T01:15:00Z");
        let segs = segments(from, to, BucketWidth::Day);
        let widths: Vec<_> = segs.iter().map(|s| s.width).collect();
        assert_eq!(
            widths,
            vec![
                BucketWidth::Minute,
                BucketWidth::Hour,
                BucketWidth::Day,
                BucketWidth::Hour,
                BucketWidth::Minute
            ]
        );
        let mut at = from;
        for s in &segs {
            assert_eq!(s.from, at);
            at = s.to;
        }
        assert_eq!(at, to);
        let hourly = segments(from, to, BucketWidth::Hour);
        assert!(hourly.iter().all(|s| s.width <= BucketWidth::Hour));
    }

    #[test]
    fn rows_are_summed_per_minute_hour_and_day() {
        let w = WebhookId(Uuid::nil());
        let at = t("2026-01-01T10:00:30Z");
        let events = [
            RollupEvent {
                user_id: "u",
                webhook_id: w,
                event_type: "a",
                at,
                attempt_latency_ms: Some(10),
                outcome: Outcome::Succeeded,
            },
            RollupEvent {
                user_id: "u",
                webhook_id: w,
                event_type: "a",
                at: at + chrono::Duration::minutes(1),
                attempt_latency_ms: Some(20),
                outcome: Outcome::Failed { exhausted: true },
            },
        ];
        let rows = RollupRows::from_events(events);
        // Two minute rows, one hour row, one day row: at four levels each.
        assert_eq!(rows.len(), 16);
        let c = rows.columns();
        let hour = c
            .bucket_secs
            .iter()
            .zip(c.level)
            .position(|(s, l)| *s == 3_600 && *l == Level::Owner as i16)
            .expect("hour");
        assert_eq!(c.attempts[hour], 2);
        assert_eq!(c.succeeded[hour], 1);
        assert_eq!(c.exhausted[hour], 1);
        assert_eq!(c.latency_sum_ms[hour], 30);
        assert_eq!(c.latency_hist.len(), 16 * HIST_LEN);
        assert_eq!(c.webhook_id[hour], ALL_WEBHOOKS);
    }
}
