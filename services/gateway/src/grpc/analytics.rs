//! gRPC `AnalyticsService`, the twin of the REST analytics routes: every method
//! converts its message, calls the same [`crate::app::analytics`] function and converts
//! the result back, with the same authentication as `WebhookService`.
//!
//! Proto3 has no null: an unset timestamp or enum, an empty string or a zero means
//! "the default" where the contract says so.

use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_proto::v1 as pb;
use portico_proto::v1::analytics_service_server::{AnalyticsService, AnalyticsServiceServer};
use portico_storage::analytics::BucketWidth;
use tonic::{Request, Response, Status};

use crate::app::analytics::{
    self, EndpointSort, GroupBy, RangeRequest, Series, SeriesRequest, Stats,
};
use crate::error::ApiError;
use crate::grpc::{caller, parse_id};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcAnalyticsService {
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> AnalyticsServiceServer<GrpcAnalyticsService> {
    AnalyticsServiceServer::new(GrpcAnalyticsService { state })
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(
    t: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| {
                FieldError::new(
                    "invalid_timestamp",
                    format!("/{field}"),
                    format!("{field} is not a valid timestamp"),
                )
            })
    })
    .transpose()
}

fn bucket_from_pb(value: i32) -> Result<Option<BucketWidth>, FieldError> {
    match pb::StatsBucket::try_from(value) {
        Ok(pb::StatsBucket::Unspecified) => Ok(None),
        Ok(pb::StatsBucket::Minute) => Ok(Some(BucketWidth::Minute)),
        Ok(pb::StatsBucket::Hour) => Ok(Some(BucketWidth::Hour)),
        Ok(pb::StatsBucket::Day) => Ok(Some(BucketWidth::Day)),
        Err(_) => Err(FieldError::new(
            "invalid_bucket",
            "/query/bucket",
            "unknown bucket",
        )),
    }
}

fn bucket_to_pb(b: BucketWidth) -> pb::StatsBucket {
    match b {
        BucketWidth::Minute => pb::StatsBucket::Minute,
        BucketWidth::Hour => pb::StatsBucket::Hour,
        BucketWidth::Day => pb::StatsBucket::Day,
    }
}

fn group_from_pb(value: i32) -> Result<GroupBy, FieldError> {
    match pb::StatsGroupBy::try_from(value) {
        Ok(pb::StatsGroupBy::Unspecified) => Ok(GroupBy::None),
        Ok(pb::StatsGroupBy::Webhook) => Ok(GroupBy::Webhook),
        Ok(pb::StatsGroupBy::EventType) => Ok(GroupBy::EventType),
        Err(_) => Err(FieldError::new(
            "invalid_group_by",
            "/query/group_by",
            "unknown group_by",
        )),
    }
}

fn group_to_pb(g: GroupBy) -> pb::StatsGroupBy {
    match g {
        GroupBy::None => pb::StatsGroupBy::Unspecified,
        GroupBy::Webhook => pb::StatsGroupBy::Webhook,
        GroupBy::EventType => pb::StatsGroupBy::EventType,
    }
}

fn series_request(q: Option<pb::StatsQuery>) -> Result<SeriesRequest, ApiError> {
    let q = q.unwrap_or_default();
    let mut errors = Vec::new();
    let from = from_timestamp(q.from, "query/from")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let to = from_timestamp(q.to, "query/to")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let bucket = bucket_from_pb(q.bucket)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let group_by = group_from_pb(q.group_by)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(SeriesRequest {
        range: RangeRequest { from, to },
        bucket,
        group_by,
        webhook_id: None,
        event_type: Some(q.event_type).filter(|t| !t.is_empty()),
    })
}

fn stats(s: Stats) -> pb::Stats {
    pb::Stats {
        attempts: s.attempts,
        succeeded: s.succeeded,
        retrying: s.retrying,
        failed: s.failed,
        exhausted: s.exhausted,
        success_rate: s.success_rate,
        attempt_failure_rate: s.attempt_failure_rate,
        mean_latency_ms: s.mean_latency_ms,
        p50_latency_ms: s.p50_latency_ms,
        p95_latency_ms: s.p95_latency_ms,
        p99_latency_ms: s.p99_latency_ms,
    }
}

fn render(s: Series) -> pb::DeliveryStats {
    pb::DeliveryStats {
        from: Some(timestamp(s.range.from)),
        to: Some(timestamp(s.range.to)),
        bucket: bucket_to_pb(s.bucket) as i32,
        group_by: group_to_pb(s.group_by) as i32,
        totals: Some(stats(s.totals)),
        series: s
            .points
            .into_iter()
            .map(|p| pb::StatsPoint {
                bucket_start: Some(timestamp(p.bucket_start)),
                webhook_id: p.webhook_id.map(|w| w.to_string()).unwrap_or_default(),
                event_type: p.event_type.unwrap_or_default(),
                stats: Some(stats(p.stats)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AnalyticsService for GrpcAnalyticsService {
    async fn get_webhook_stats(
        &self,
        request: Request<pb::GetWebhookStatsRequest>,
    ) -> Result<Response<pb::DeliveryStats>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let q = series_request(r.query)?;
        let series = analytics::webhook_stats(&self.state, &caller, webhook_id, q).await?;
        Ok(Response::new(render(series)))
    }

    async fn get_delivery_stats(
        &self,
        request: Request<pb::GetDeliveryStatsRequest>,
    ) -> Result<Response<pb::DeliveryStats>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let mut q = series_request(r.query)?;
        if !r.webhook_id.is_empty() {
            q.webhook_id = Some(parse_id(&r.webhook_id, "webhook_id")?);
        }
        let series = analytics::owner_stats(&self.state, &caller, q).await?;
        Ok(Response::new(render(series)))
    }

    async fn list_top_endpoints(
        &self,
        request: Request<pb::ListTopEndpointsRequest>,
    ) -> Result<Response<pb::ListTopEndpointsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let sort = match pb::EndpointSort::try_from(r.sort) {
            Ok(pb::EndpointSort::Unspecified | pb::EndpointSort::Slowest) => EndpointSort::Slowest,
            Ok(pb::EndpointSort::Failing) => EndpointSort::Failing,
            Err(_) => return Err(ApiError::field("invalid_sort", "/sort", "unknown sort").into()),
        };
        let range = RangeRequest {
            from: from_timestamp(r.from, "from").map_err(ApiError::from)?,
            to: from_timestamp(r.to, "to").map_err(ApiError::from)?,
        };
        let min_attempts = (r.min_attempts > 0).then_some(r.min_attempts);
        let limit = (r.limit > 0).then_some(r.limit);
        let (range, ranked) =
            analytics::top_endpoints(&self.state, &caller, range, sort, min_attempts, limit)
                .await?;
        Ok(Response::new(pb::ListTopEndpointsResponse {
            from: Some(timestamp(range.from)),
            to: Some(timestamp(range.to)),
            endpoints: ranked
                .into_iter()
                .map(|e| pb::EndpointStats {
                    webhook_id: e.webhook_id.to_string(),
                    stats: Some(stats(e.stats)),
                })
                .collect(),
        }))
    }
}
