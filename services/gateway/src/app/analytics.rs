//! Delivery analytics, behind both doors: counts by outcome, attempts, success rate and
//! latency percentiles of the caller's deliveries over a range, in time buckets, per
//! webhook or per event type; and the slowest and most-failing endpoints.
//!
//! Everything is read from the rollups the dispatcher maintains as it records attempts
//! ([`portico_storage::analytics`]), never from the raw attempts, so a 30-day question
//! costs a few rows per (webhook, event type) whatever the volume. Every read is keyed
//! by the caller's user id; a webhook of another user answers 404, like every other
//! webhook route.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use portico_domain::FieldError;
use portico_domain::ids::WebhookId;
use portico_storage::analytics::{self, BucketWidth, Figures, RollupQuery};
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::state::AppState;

/// Longest range one query may cover: the default retention of hour and day rollups.
pub const MAX_RANGE_DAYS: i64 = 400;

/// Most buckets one series may have (e.g. 24 hours of minutes, 60 days of hours).
pub const MAX_BUCKETS: i64 = 1_440;

/// Range of a query when none is given: the last seven days.
pub const DEFAULT_RANGE_DAYS: i64 = 7;

/// Default least number of attempts an endpoint needs to be ranked as failing, so one
/// failed attempt out of one does not top the list.
pub const DEFAULT_MIN_ATTEMPTS: u64 = 20;

/// Most endpoints a ranking returns.
pub const MAX_TOP: u32 = 100;

/// How a series is split besides time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One series for everything.
    #[default]
    None,
    /// One per webhook.
    Webhook,
    /// One per event type.
    EventType,
}

impl GroupBy {
    /// Parses the wire name (`none`, `webhook`, `eventType`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(GroupBy::None),
            "webhook" => Some(GroupBy::Webhook),
            "eventType" => Some(GroupBy::EventType),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::None => "none",
            GroupBy::Webhook => "webhook",
            GroupBy::EventType => "eventType",
        }
    }
}

/// How endpoints are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSort {
    /// Highest p95 attempt duration first.
    Slowest,
    /// Highest share of failed attempts first (ties: more failed attempts first).
    Failing,
}

impl EndpointSort {
    /// Parses the wire name (`slowest`, `failing`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "slowest" => Some(EndpointSort::Slowest),
            "failing" => Some(EndpointSort::Failing),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSort::Slowest => "slowest",
            EndpointSort::Failing => "failing",
        }
    }
}

/// A range as both doors parse it; every part optional.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// Start, inclusive (default: `to` minus seven days); rounded down to the minute.
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive (default: now); rounded up to the minute.
    pub to: Option<DateTime<Utc>>,
}

/// A series request.
#[derive(Debug, Clone, Default)]
pub struct SeriesRequest {
    /// The range.
    pub range: RangeRequest,
    /// Bucket width (default: hour).
    pub bucket: Option<BucketWidth>,
    /// Split besides time.
    pub group_by: GroupBy,
    /// Only this webhook (owner-wide queries).
    pub webhook_id: Option<Uuid>,
    /// Only this event type.
    pub event_type: Option<String>,
}

/// A validated range, whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
}

/// The summed figures of a bucket, a group or a range, with their rates and
/// percentiles worked out (see [`Figures`] for what each count means).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts that succeeded (deliveries that became `succeeded`).
    pub succeeded: u64,
    /// Failed attempts with a retry scheduled.
    pub retrying: u64,
    /// Deliveries that became `failed` (final).
    pub failed: u64,
    /// Failed deliveries whose retry budget ran out.
    pub exhausted: u64,
    /// `succeeded / (succeeded + failed)`; `None` when nothing finished.
    pub success_rate: Option<f64>,
    /// `(attempts - succeeded) / attempts`; `None` without attempts.
    pub attempt_failure_rate: Option<f64>,
    /// Mean attempt duration, ms.
    pub mean_latency_ms: Option<f64>,
    /// Median attempt duration, ms (histogram estimate).
    pub p50_latency_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_latency_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_latency_ms: Option<f64>,
}

impl From<&Figures> for Stats {
    fn from(f: &Figures) -> Self {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Stats {
            attempts: n(f.attempts),
            succeeded: n(f.succeeded),
            retrying: n(f.retrying),
            failed: n(f.failed),
            exhausted: n(f.exhausted),
            success_rate: f.success_rate(),
            attempt_failure_rate: f.attempt_failure_rate(),
            mean_latency_ms: f.mean_latency_ms(),
            p50_latency_ms: f.percentile_ms(0.50),
            p95_latency_ms: f.percentile_ms(0.95),
            p99_latency_ms: f.percentile_ms(0.99),
        }
    }
}

/// One point of a series: a bucket, the group it belongs to, its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Start of the bucket (UTC, aligned to its width).
    pub bucket_start: DateTime<Utc>,
    /// The webhook (grouped by webhook).
    pub webhook_id: Option<Uuid>,
    /// The event type (grouped by event type).
    pub event_type: Option<String>,
    /// Its figures.
    pub stats: Stats,
}

/// A series answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The range answered (the request's, rounded to whole minutes).
    pub range: Range,
    /// Bucket width.
    pub bucket: BucketWidth,
    /// The split.
    pub group_by: GroupBy,
    /// Everything in the range.
    pub totals: Stats,
    /// Buckets with activity, oldest first, then by group.
    pub points: Vec<SeriesPoint>,
}

/// One ranked endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    /// The webhook.
    pub webhook_id: Uuid,
    /// Its figures over the range.
    pub stats: Stats,
}

/// Checks a range: `to` after `from`, at most [`MAX_RANGE_DAYS`] long; rounds it out
/// to whole minutes. Field errors point at `/from` and `/to`.
pub fn validate_range(r: &RangeRequest, now: DateTime<Utc>) -> Result<Range, ApiError> {
    let raw_to = r.to.unwrap_or(now);
    let raw_from = r
        .from
        .unwrap_or_else(|| raw_to - Duration::days(DEFAULT_RANGE_DAYS));
    // Checked before rounding: an empty or inverted range is the caller's mistake even
    // when rounding out to whole minutes would make it non-empty.
    let to = BucketWidth::Minute.ceil(raw_to);
    let from = BucketWidth::Minute.floor(raw_from);
    if raw_to <= raw_from {
        return Err(FieldError::new("invalid_range", "/to", "to must be after from").into());
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(FieldError::new(
            "range_too_long",
            "/from",
            format!("the range must not be longer than {MAX_RANGE_DAYS} days"),
        )
        .into());
    }
    Ok(Range { from, to })
}

/// Checks that a series of `bucket` over `range` has at most [`MAX_BUCKETS`] buckets.
pub fn validate_buckets(range: Range, bucket: BucketWidth) -> Result<(), ApiError> {
    let first = bucket.floor(range.from);
    let buckets = (range.to - first).num_seconds().div_euclid(bucket.secs())
        + i64::from((range.to - first).num_seconds() % bucket.secs() != 0);
    if buckets > MAX_BUCKETS {
        return Err(FieldError::new(
            "too_many_buckets",
            "/bucket",
            format!(
                "{buckets} {} buckets; at most {MAX_BUCKETS}: choose a wider bucket or a shorter range",
                bucket.as_str()
            ),
        )
        .into());
    }
    Ok(())
}

/// Proves the caller owns the webhook (404 otherwise, as for every webhook route).
async fn owned_webhook(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    portico_storage::webhooks::max_retries(state.pool(), caller.user_id(), WebhookId(id))
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(())
}

/// One webhook's series (the webhook must be the caller's).
pub async fn webhook_stats(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    request: SeriesRequest,
) -> Result<Series, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let (range, bucket) = check_series(&request)?;
    owned_webhook(state, caller, webhook_id).await?;
    series(
        state,
        caller,
        Some(webhook_id),
        request.event_type.as_deref(),
        range,
        bucket,
        request.group_by,
    )
    .await
}

/// The caller's series over all (or one of) their webhooks.
pub async fn owner_stats(
    state: &AppState,
    caller: &Caller,
    request: SeriesRequest,
) -> Result<Series, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let (range, bucket) = check_series(&request)?;
    if let Some(id) = request.webhook_id {
        owned_webhook(state, caller, id).await?;
    }
    series(
        state,
        caller,
        request.webhook_id,
        request.event_type.as_deref(),
        range,
        bucket,
        request.group_by,
    )
    .await
}

fn check_series(request: &SeriesRequest) -> Result<(Range, BucketWidth), ApiError> {
    let mut errors = Vec::new();
    if let Some(t) = &request.event_type
        && let Err(e) = portico_domain::webhooks::validate_event_type(t, "/eventType")
    {
        errors.push(e);
    }
    let range = validate_range(&request.range, Utc::now());
    let bucket = request.bucket.unwrap_or(BucketWidth::Hour);
    match range {
        Ok(range) if errors.is_empty() => {
            validate_buckets(range, bucket)?;
            Ok((range, bucket))
        }
        Ok(_) => Err(ApiError::Validation(errors)),
        Err(ApiError::Validation(mut more)) => {
            errors.append(&mut more);
            Err(ApiError::Validation(errors))
        }
        Err(other) => Err(other),
    }
}

/// A series point's key: bucket start, then the webhook or event type it is split by.
type PointKey = (DateTime<Utc>, Option<Uuid>, Option<String>);

async fn series(
    state: &AppState,
    caller: &Caller,
    webhook_id: Option<Uuid>,
    event_type: Option<&str>,
    range: Range,
    bucket: BucketWidth,
    group_by: GroupBy,
) -> Result<Series, ApiError> {
    let rows = analytics::read(
        state.pool(),
        &RollupQuery {
            user_id: caller.user_id(),
            webhook_id: webhook_id.map(WebhookId),
            event_type,
            from: range.from,
            to: range.to,
            widest: bucket,
            split_webhook: group_by == GroupBy::Webhook,
            split_event_type: group_by == GroupBy::EventType,
        },
    )
    .await?;
    let mut totals = Figures::default();
    let mut buckets: BTreeMap<PointKey, Figures> = BTreeMap::new();
    for row in rows {
        totals.merge(&row.figures);
        let key = (
            bucket.floor(row.bucket_start),
            (group_by == GroupBy::Webhook).then(|| row.webhook_id.as_uuid()),
            (group_by == GroupBy::EventType).then_some(row.event_type),
        );
        buckets.entry(key).or_default().merge(&row.figures);
    }
    Ok(Series {
        range,
        bucket,
        group_by,
        totals: Stats::from(&totals),
        points: buckets
            .into_iter()
            .map(|((bucket_start, webhook_id, event_type), f)| SeriesPoint {
                bucket_start,
                webhook_id,
                event_type,
                stats: Stats::from(&f),
            })
            .collect(),
    })
}

/// The caller's endpoints ranked by `sort` over a range: only those with at least
/// `min_attempts` attempts (default [`DEFAULT_MIN_ATTEMPTS`]), at most `limit` (1..=100,
/// default 10).
pub async fn top_endpoints(
    state: &AppState,
    caller: &Caller,
    range: RangeRequest,
    sort: EndpointSort,
    min_attempts: Option<u64>,
    limit: Option<u32>,
) -> Result<(Range, Vec<EndpointStats>), ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let range = validate_range(&range, Utc::now())?;
    let limit = match limit {
        None | Some(0) => 10,
        Some(l) if l <= MAX_TOP => l,
        Some(_) => {
            return Err(FieldError::new(
                "invalid_limit",
                "/limit",
                format!("limit must be between 1 and {MAX_TOP}"),
            )
            .into());
        }
    };
    let min_attempts = min_attempts.unwrap_or(DEFAULT_MIN_ATTEMPTS).max(1);
    let rows = analytics::read(
        state.pool(),
        &RollupQuery {
            user_id: caller.user_id(),
            webhook_id: None,
            event_type: None,
            from: range.from,
            to: range.to,
            widest: BucketWidth::Day,
            split_webhook: true,
            split_event_type: false,
        },
    )
    .await?;
    let mut per_webhook: HashMap<Uuid, Figures> = HashMap::new();
    for row in rows {
        per_webhook
            .entry(row.webhook_id.as_uuid())
            .or_default()
            .merge(&row.figures);
    }
    let mut ranked: Vec<EndpointStats> = per_webhook
        .into_iter()
        .filter(|(_, f)| u64::try_from(f.attempts).unwrap_or(0) >= min_attempts)
        .map(|(webhook_id, f)| EndpointStats {
            webhook_id,
            stats: Stats::from(&f),
        })
        .collect();
    let key = |s: &Stats| match sort {
        EndpointSort::Slowest => (s.p95_latency_ms.unwrap_or(0.0), s.attempts as f64),
        EndpointSort::Failing => (
            s.attempt_failure_rate.unwrap_or(0.0),
            (s.attempts - s.succeeded.min(s.attempts)) as f64,
        ),
    };
    ranked.sort_by(|a, b| {
        key(&b.stats)
            .partial_cmp(&key(&a.stats))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.webhook_id.cmp(&b.webhook_id))
    });
    ranked.truncate(limit as usize);
    Ok((range, ranked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn ranges_are_rounded_out_and_checked() {
        let now = t("2026-03-10T12:00:30Z");
        let r = validate_range(&RangeRequest::default(), now).expect("default");
        assert_eq!(r.to, t("2026-03-10T12:01:00Z"));
        assert_eq!(r.from, t("2026-03-03T12:00:00Z"));
        let bad = RangeRequest {
            from: Some(now),
            to: Some(now - Duration::hours(1)),
        };
        assert!(matches!(
            validate_range(&bad, now),
            Err(ApiError::Validation(e)) if e[0].code == "invalid_range"
        ));
        let long = RangeRequest {
            from: Some(now - Duration::days(500)),
            to: Some(now),
        };
        assert!(validate_range(&long, now).is_err());
    }

    #[test]
    fn bucket_count_is_capped() {
        let range = Range {
            from: t("2026-03-01T00:00:00Z"),
            to: t("2026-03-02T00:00:00Z"),
        };
        assert!(validate_buckets(range, BucketWidth::Minute).is_ok());
        let range = Range {
            from: t("2026-03-01T00:00:00Z"),
            to: t("2026-03-02T00:01:00Z"),
        };
        assert!(validate_buckets(range, BucketWidth::Minute).is_err());
        assert!(validate_buckets(range, BucketWidth::Hour).is_ok());
    }
}
