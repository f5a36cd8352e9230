//! REST adapters for delivery analytics: parse the query, call
//! [`crate::app::analytics`], render. `GET /webhooks/{id}/stats` (one webhook),
//! `GET /analytics/deliveries` (all the caller's webhooks) and
//! `GET /analytics/endpoints` (slowest or most-failing endpoints).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_storage::analytics::BucketWidth;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::analytics::{
    self, EndpointSort, EndpointStats, GroupBy, RangeRequest, Series, SeriesPoint, SeriesRequest,
    Stats,
};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::query;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhook_stats))
        .routes(routes!(delivery_analytics))
        .routes(routes!(top_endpoints))
}

fn parse_time(
    text: Option<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let text = text.filter(|t| !t.is_empty())?;
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                "invalid_timestamp",
                path,
                format!("{} must be an RFC 3339 timestamp", &path[1..]),
            ));
            None
        }
    }
}

/// Bucket width of a series.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Bucket {
    /// One UTC minute (ranges up to 24 hours).
    Minute,
    /// One UTC hour (ranges up to 60 days).
    Hour,
    /// One UTC day.
    Day,
}

/// How a series is split besides time.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SeriesGroup {
    /// One series.
    None,
    /// One series per webhook.
    Webhook,
    /// One series per event type.
    EventType,
}

/// How endpoints are ranked.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum EndpointRanking {
    /// Highest p95 attempt duration first.
    Slowest,
    /// Highest share of failed attempts first.
    Failing,
}

/// Query of a series.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// RFC 3339, inclusive, rounded down to the minute; default `to` minus 7 days.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive, rounded up to the minute; default now. At most 400 days after `from`.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`; at most 1440 buckets.
    #[param(value_type = Option<Bucket>)]
    pub bucket: Option<String>,
    /// `none` (default), `webhook` or `eventType`.
    #[param(value_type = Option<SeriesGroup>)]
    pub group_by: Option<String>,
    /// Only this exact event type.
    pub event_type: Option<String>,
}

/// Query of the owner-wide series: a series query plus one optional webhook.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryAnalyticsQuery {
    /// RFC 3339, inclusive, rounded down to the minute; default `to` minus 7 days.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive, rounded up to the minute; default now. At most 400 days after `from`.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`; at most 1440 buckets.
    #[param(value_type = Option<Bucket>)]
    pub bucket: Option<String>,
    /// `none` (default), `webhook` or `eventType`.
    #[param(value_type = Option<SeriesGroup>)]
    pub group_by: Option<String>,
    /// Only this exact event type.
    pub event_type: Option<String>,
    /// Only this webhook (one of the caller's).
    pub webhook_id: Option<String>,
}

/// Query of the endpoint ranking.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EndpointsQuery {
    /// `slowest` (default: by p95) or `failing` (by share of failed attempts).
    #[param(value_type = Option<EndpointRanking>)]
    pub sort: Option<String>,
    /// RFC 3339, inclusive; default `to` minus 7 days.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Least attempts in the range for an endpoint to be ranked (default 20).
    pub min_attempts: Option<u64>,
    /// 1..=100, default 10.
    #[param(maximum = 100)]
    pub limit: Option<u32>,
}

/// Figures of a bucket, a group or a whole range. Counts are transitions counted in
/// the bucket of the attempt that caused them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsBody {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts that got a 2xx: deliveries that became `succeeded`.
    pub succeeded: u64,
    /// Attempts that failed with a retry scheduled (the delivery became `retrying`).
    pub retrying: u64,
    /// Deliveries that became `failed` (final): retry budget exhausted, 410 Gone, or
    /// the endpoint disabled or deleted while they waited.
    pub failed: u64,
    /// The part of `failed` whose every allowed attempt failed.
    pub exhausted: u64,
    /// `succeeded / (succeeded + failed)`; null when nothing finished.
    pub success_rate: Option<f64>,
    /// `(attempts - succeeded) / attempts`; null without attempts.
    pub attempt_failure_rate: Option<f64>,
    /// Mean attempt duration, milliseconds.
    pub mean_latency_ms: Option<f64>,
    /// Median attempt duration, ms: interpolated inside the histogram bucket that holds
    /// it (error under the bucket width: 1 ms below 6 ms, at most a third above).
    pub p50_latency_ms: Option<f64>,
    /// 95th percentile, ms (same precision).
    pub p95_latency_ms: Option<f64>,
    /// 99th percentile, ms (same precision).
    pub p99_latency_ms: Option<f64>,
}

impl From<Stats> for StatsBody {
    fn from(s: Stats) -> Self {
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        StatsBody {
            attempts: s.attempts,
            succeeded: s.succeeded,
            retrying: s.retrying,
            failed: s.failed,
            exhausted: s.exhausted,
            success_rate: round(s.success_rate),
            attempt_failure_rate: round(s.attempt_failure_rate),
            mean_latency_ms: round(s.mean_latency_ms),
            p50_latency_ms: round(s.p50_latency_ms),
            p95_latency_ms: round(s.p95_latency_ms),
            p99_latency_ms: round(s.p99_latency_ms),
        }
    }
}

/// One bucket of a series (of one group when grouped).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPointBody {
    /// Start of the bucket (UTC). The first and last buckets count only the part
    /// inside the range.
    pub bucket_start: DateTime<Utc>,
    /// The webhook (`groupBy=webhook` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<Uuid>,
    /// The event type (`groupBy=eventType` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The figures.
    #[serde(flatten)]
    pub stats: StatsBody,
}

impl From<SeriesPoint> for SeriesPointBody {
    fn from(p: SeriesPoint) -> Self {
        SeriesPointBody {
            bucket_start: p.bucket_start,
            webhook_id: p.webhook_id,
            event_type: p.event_type,
            stats: p.stats.into(),
        }
    }
}

/// A series: totals over the range and the buckets with activity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesBody {
    /// Start of the range answered (the request's, rounded down to the minute).
    pub from: DateTime<Utc>,
    /// End of the range answered (rounded up to the minute).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub bucket: Bucket,
    /// The split.
    pub group_by: SeriesGroup,
    /// Everything in the range.
    pub totals: StatsBody,
    /// Buckets with activity, oldest first (then by group); empty buckets are left out.
    pub series: Vec<SeriesPointBody>,
}

impl From<Series> for SeriesBody {
    fn from(s: Series) -> Self {
        SeriesBody {
            from: s.range.from,
            to: s.range.to,
            bucket: match s.bucket {
                BucketWidth::Minute => Bucket::Minute,
                BucketWidth::Hour => Bucket::Hour,
                BucketWidth::Day => Bucket::Day,
            },
            group_by: match s.group_by {
                GroupBy::None => SeriesGroup::None,
                GroupBy::Webhook => SeriesGroup::Webhook,
                GroupBy::EventType => SeriesGroup::EventType,
            },
            totals: s.totals.into(),
            series: s.points.into_iter().map(Into::into).collect(),
        }
    }
}

/// One ranked endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatsBody {
    /// The webhook.
    pub webhook_id: Uuid,
    /// Its figures over the range.
    #[serde(flatten)]
    pub stats: StatsBody,
}

impl From<EndpointStats> for EndpointStatsBody {
    fn from(e: EndpointStats) -> Self {
        EndpointStatsBody {
            webhook_id: e.webhook_id,
            stats: e.stats.into(),
        }
    }
}

/// The ranking.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsBody {
    /// Start of the range answered.
    pub from: DateTime<Utc>,
    /// End of the range answered.
    pub to: DateTime<Utc>,
    /// The ranking used.
    pub sort: EndpointRanking,
    /// Endpoints, first is worst.
    pub data: Vec<EndpointStatsBody>,
}

/// Parses the parts every series query shares; errors are collected.
fn series_request(
    from: Option<&str>,
    to: Option<&str>,
    bucket: Option<&str>,
    group_by: Option<&str>,
    event_type: Option<String>,
    errors: &mut Vec<FieldError>,
) -> SeriesRequest {
    let range = RangeRequest {
        from: parse_time(from, "/from", errors),
        to: parse_time(to, "/to", errors),
    };
    let bucket = match bucket.filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => BucketWidth::parse(b).or_else(|| {
            errors.push(FieldError::new(
                "invalid_bucket",
                "/bucket",
                "bucket must be minute, hour or day",
            ));
            None
        }),
    };
    let group_by = match group_by.filter(|g| !g.is_empty()) {
        None => GroupBy::None,
        Some(g) => GroupBy::parse(g).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "invalid_group_by",
                "/groupBy",
                "groupBy must be none, webhook or eventType",
            ));
            GroupBy::None
        }),
    };
    SeriesRequest {
        range,
        bucket,
        group_by,
        webhook_id: None,
        event_type: event_type.filter(|t| !t.is_empty()),
    }
}

/// Delivery analytics of one webhook: totals and a time series over a range.
#[utoipa::path(get, path = "/webhooks/{id}/stats", tag = "analytics",
    params(("id" = Uuid, Path, description = "Webhook id"), SeriesQuery),
    responses(
        (status = 200, description = "Totals and series", body = SeriesBody),
        (status = 400, description = "Invalid query (invalid_timestamp, invalid_range: to not after from, range_too_long: over 400 days, too_many_buckets: over 1440, invalid_bucket, invalid_group_by, invalid_event_type)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn webhook_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::field("invalid_id", "/id", "id must be a UUID"))?;
    let q = query(params)?;
    let mut errors = Vec::new();
    let request = series_request(
        q.from.as_deref(),
        q.to.as_deref(),
        q.bucket.as_deref(),
        q.group_by.as_deref(),
        q.event_type,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let series = analytics::webhook_stats(&state, &caller, id, request).await?;
    Ok(axum::Json(SeriesBody::from(series)))
}

/// Delivery analytics over all the caller's webhooks (or one): totals and a time
/// series, optionally per webhook or per event type.
#[utoipa::path(get, path = "/analytics/deliveries", tag = "analytics",
    params(DeliveryAnalyticsQuery),
    responses(
        (status = 200, description = "Totals and series", body = SeriesBody),
        (status = 400, description = "Invalid query (invalid_timestamp, invalid_range: to not after from, range_too_long: over 400 days, too_many_buckets: over 1440, invalid_bucket, invalid_group_by, invalid_event_type, invalid_id: webhookId not a UUID)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "webhookId names no webhook of this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn delivery_analytics(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<DeliveryAnalyticsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(params)?;
    let mut errors = Vec::new();
    let mut request = series_request(
        q.from.as_deref(),
        q.to.as_deref(),
        q.bucket.as_deref(),
        q.group_by.as_deref(),
        q.event_type,
        &mut errors,
    );
    request.webhook_id = match q.webhook_id.as_deref().filter(|w| !w.is_empty()) {
        None => None,
        Some(w) => w.parse().map(Some).unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "invalid_id",
                "/webhookId",
                "webhookId must be a UUID",
            ));
            None
        }),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let series = analytics::owner_stats(&state, &caller, request).await?;
    Ok(axum::Json(SeriesBody::from(series)))
}

/// The caller's slowest (by p95 attempt duration) or most-failing (by share of failed
/// attempts) endpoints over a range.
#[utoipa::path(get, path = "/analytics/endpoints", tag = "analytics",
    params(EndpointsQuery),
    responses(
        (status = 200, description = "Endpoints, worst first", body = EndpointsBody),
        (status = 400, description = "Invalid query (invalid_sort, invalid_timestamp, invalid_range, range_too_long, invalid_limit)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn top_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<EndpointsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(params)?;
    let mut errors = Vec::new();
    let sort = match q.sort.as_deref().filter(|s| !s.is_empty()) {
        None => EndpointSort::Slowest,
        Some(s) => EndpointSort::parse(s).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "invalid_sort",
                "/sort",
                "sort must be slowest or failing",
            ));
            EndpointSort::Slowest
        }),
    };
    let range = RangeRequest {
        from: parse_time(q.from.as_deref(), "/from", &mut errors),
        to: parse_time(q.to.as_deref(), "/to", &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (range, ranked) =
        analytics::top_endpoints(&state, &caller, range, sort, q.min_attempts, q.limit).await?;
    Ok(axum::Json(EndpointsBody {
        from: range.from,
        to: range.to,
        sort: match sort {
            EndpointSort::Slowest => EndpointRanking::Slowest,
            EndpointSort::Failing => EndpointRanking::Failing,
        },
        data: ranked.into_iter().map(Into::into).collect(),
    }))
}
