//! gRPC `WebhookService`, the twin of the REST routes under `/api/webhooks`: every
//! method converts its message, calls the same [`crate::app::webhooks`] or
//! [`crate::app::webhook_deliveries`] function and converts the result back, so
//! validation, authorisation and behaviour cannot differ between the doors.
//!
//! Proto3 has no null: an empty string or a zero means "none" where the contract says
//! so (description, rate limit, concurrency, idempotency key), and `optional` fields
//! carry "unchanged" in updates.

use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_domain::pagination;
use portico_domain::webhooks::{
    DeliveryStatus, NewWebhook, RetryJobStatus, RetryPolicyPatch, WebhookPatch,
};
use portico_proto::v1 as pb;
use portico_proto::v1::webhook_service_server::{WebhookService, WebhookServiceServer};
use tonic::{Request, Response, Status};

use crate::app::preconditions::Precondition;
use crate::app::webhook_deliveries::{
    self, Delivery, DeliveryAttempt, DeliveryFilter, RetryFailedOutcome, RetryFailedRequest,
    RetryJob,
};
use crate::app::webhooks::{self, SecretView, Webhook};
use crate::error::ApiError;
use crate::grpc::{caller, idempotent, parse_id};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcWebhookService {
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> WebhookServiceServer<GrpcWebhookService> {
    WebhookServiceServer::new(GrpcWebhookService { state })
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

/// A proto page request as a validated page (shared by the list methods).
pub(crate) fn page(request: Option<pb::PageRequest>) -> Result<pagination::PageRequest, ApiError> {
    let request = request.unwrap_or_default();
    let limit = u32::try_from(request.limit).map_err(|_| {
        ApiError::field("invalid_limit", "/page/limit", "limit must not be negative")
    })?;
    let limit = limit.min(pagination::MAX_LIMIT);
    Ok(pagination::PageRequest::parse(
        Some(limit),
        Some(request.cursor.as_str()),
    )?)
}

/// The proto page info of a next cursor.
pub(crate) fn page_info(next_cursor: Option<String>) -> Option<pb::PageInfo> {
    Some(pb::PageInfo {
        next_cursor: next_cursor.unwrap_or_default(),
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn non_zero(v: u32) -> Option<i64> {
    (v != 0).then_some(i64::from(v))
}

fn policy_patch(p: pb::RetryPolicyPatch) -> RetryPolicyPatch {
    RetryPolicyPatch {
        max_retries: p.max_retries.map(i64::from),
        base_delay_ms: p
            .base_delay_ms
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        max_delay_ms: p.max_delay_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

fn render_webhook(w: Webhook) -> pb::Webhook {
    let etag = w.etag().to_string();
    pb::Webhook {
        id: w.id.to_string(),
        url: w.url,
        events: w.events,
        description: w.description.unwrap_or_default(),
        active: w.active,
        retry_policy: Some(pb::RetryPolicy {
            max_retries: w.retry_policy.max_retries,
            base_delay_ms: w.retry_policy.base_delay_ms,
            max_delay_ms: w.retry_policy.max_delay_ms,
        }),
        headers: w.headers.into_iter().collect(),
        disabled_reason: w.disabled_reason.unwrap_or_default(),
        ordering_enabled: w.ordering_enabled,
        rate_limit_per_second: w.rate_limit_per_second.unwrap_or(0),
        max_concurrency: w.max_concurrency.unwrap_or(0),
        created_at: Some(timestamp(w.created_at)),
        etag,
        updated_at: Some(timestamp(w.updated_at)),
    }
}

fn render_secret(s: SecretView) -> pb::WebhookSecret {
    pb::WebhookSecret {
        secret: s.secret,
        previous_secret_expires_at: s.previous_secret_expires_at.map(timestamp),
    }
}

fn status_to_proto(s: DeliveryStatus) -> pb::DeliveryStatus {
    match s {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::Delivering => pb::DeliveryStatus::Delivering,
        DeliveryStatus::Succeeded => pb::DeliveryStatus::Succeeded,
        DeliveryStatus::Retrying => pb::DeliveryStatus::Retrying,
        DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
    }
}

/// `Ok(None)` for UNSPECIFIED ("any").
fn status_from_proto(value: i32, path: &str) -> Result<Option<DeliveryStatus>, FieldError> {
    match pb::DeliveryStatus::try_from(value) {
        Ok(pb::DeliveryStatus::Unspecified) => Ok(None),
        Ok(pb::DeliveryStatus::Pending) => Ok(Some(DeliveryStatus::Pending)),
        Ok(pb::DeliveryStatus::Delivering) => Ok(Some(DeliveryStatus::Delivering)),
        Ok(pb::DeliveryStatus::Succeeded) => Ok(Some(DeliveryStatus::Succeeded)),
        Ok(pb::DeliveryStatus::Retrying) => Ok(Some(DeliveryStatus::Retrying)),
        Ok(pb::DeliveryStatus::Failed) => Ok(Some(DeliveryStatus::Failed)),
        Err(_) => Err(FieldError::new(
            "invalid_status",
            path,
            format!("{value} is not a DeliveryStatus"),
        )),
    }
}

fn render_delivery(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id.to_string(),
        webhook_id: d.webhook_id.to_string(),
        event_id: d.event_id.to_string(),
        event_type: d.event_type,
        status: status_to_proto(d.status) as i32,
        attempts: d.attempts,
        max_retries: d.max_retries,
        next_attempt_at: d.next_attempt_at.map(timestamp),
        last_status_code: d.last_status_code,
        last_error: d.last_error.unwrap_or_default(),
        created_at: Some(timestamp(d.created_at)),
        updated_at: Some(timestamp(d.updated_at)),
    }
}

fn render_attempt(a: DeliveryAttempt) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        attempt_number: a.attempt_number,
        request_headers: a.request_headers.into_iter().collect(),
        response_status: a.response_status,
        response_body: a.response_body.unwrap_or_default(),
        latency_ms: a.latency_ms,
        error_kind: a.error_kind.unwrap_or_default(),
        error_message: a.error_message.unwrap_or_default(),
        started_at: Some(timestamp(a.started_at)),
        // The attempts table does not record truncation; the body is the stored prefix.
        response_body_truncated: false,
    }
}

fn render_job(j: RetryJob) -> pb::RetryJob {
    pb::RetryJob {
        id: j.id.to_string(),
        webhook_id: j.webhook_id.to_string(),
        status: j.status.as_str().to_owned(),
        dry_run: j.dry_run,
        total: j.total,
        processed: j.processed,
        created_at: Some(timestamp(j.created_at)),
        updated_at: Some(timestamp(j.updated_at)),
    }
}

#[tonic::async_trait]
impl WebhookService for GrpcWebhookService {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let (metadata, _, r) = request.into_parts();
        let message = r.clone();
        let caller = &caller;
        let create = || async move {
            let input = NewWebhook {
                url: r.url,
                events: r.events,
                description: non_empty(r.description),
                headers: r.headers.into_iter().collect(),
                retry_policy: r.retry_policy.map(policy_patch).unwrap_or_default(),
                rate_limit_per_second: non_zero(r.rate_limit_per_second),
                max_concurrency: non_zero(r.max_concurrency),
                ordering_enabled: r.ordering_enabled,
            };
            let created = webhooks::create(&self.state, caller, input).await?;
            Ok(pb::CreateWebhookResponse {
                webhook: Some(render_webhook(created.webhook)),
                secret: created.secret,
            })
        };
        idempotent::once(
            &self.state,
            caller,
            "portico.v1.WebhookService/CreateWebhook",
            &metadata,
            &message,
            create,
        )
        .await
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let page = page(request.into_inner().page)?;
        let (items, next) = webhooks::list(&self.state, &caller, page).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: items.into_iter().map(render_webhook).collect(),
            page: page_info(next),
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let webhook = webhooks::get(&self.state, &caller, id).await?;
        Ok(Response::new(render_webhook(webhook)))
    }

    async fn update_webhook(
        &self,
        request: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let id = parse_id(&r.id, "id")?;
        let patch = WebhookPatch {
            url: r.url,
            events: r.events.map(|l| l.values),
            description: r.description.map(non_empty),
            active: r.active,
            headers: r.headers.map(|m| m.values.into_iter().collect()),
            retry_policy: r.retry_policy.map(policy_patch),
            rate_limit_per_second: r.rate_limit_per_second.map(non_zero),
            max_concurrency: r.max_concurrency.map(non_zero),
            ordering_enabled: r.ordering_enabled,
        };
        let precondition = Precondition::from_grpc(r.etag.as_deref());
        let webhook = webhooks::update_if(&self.state, &caller, id, patch, &precondition).await?;
        Ok(Response::new(render_webhook(webhook)))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let precondition = Precondition::from_grpc(request.get_ref().etag.as_deref());
        webhooks::delete_if(&self.state, &caller, id, &precondition).await?;
        Ok(Response::new(()))
    }

    async fn get_webhook_secret(
        &self,
        request: Request<pb::GetWebhookSecretRequest>,
    ) -> Result<Response<pb::WebhookSecret>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let secret = webhooks::get_secret(&self.state, &caller, id).await?;
        Ok(Response::new(render_secret(secret)))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::WebhookSecret>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let id = parse_id(&r.id, "id")?;
        let secret = webhooks::rotate_secret(
            &self.state,
            &caller,
            id,
            r.grace_period_seconds.map(i64::from),
        )
        .await?;
        Ok(Response::new(render_secret(secret)))
    }

    async fn send_test_event(
        &self,
        request: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let event_id = webhooks::send_test_event(&self.state, &caller, id).await?;
        // The dispatcher creates the delivery when it consumes the event, so its id is
        // not known yet: find it with ListDeliveries (event type webhook.test).
        Ok(Response::new(pb::SendTestEventResponse {
            event_id: event_id.to_string(),
            delivery_id: String::new(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let filter = DeliveryFilter {
            status: status_from_proto(r.status, "/status").map_err(ApiError::from)?,
            event_type: non_empty(r.event_type),
            since: from_timestamp(r.created_after, "created_after").map_err(ApiError::from)?,
            until: from_timestamp(r.created_before, "created_before").map_err(ApiError::from)?,
        };
        let page = page(r.page)?;
        let (items, next) =
            webhook_deliveries::list(&self.state, &caller, webhook_id, filter, page).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: items.into_iter().map(render_delivery).collect(),
            page: page_info(next),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let id = parse_id(&r.id, "id")?;
        let (delivery, attempts) =
            webhook_deliveries::get(&self.state, &caller, webhook_id, id).await?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(render_delivery(delivery)),
            attempts: attempts.into_iter().map(render_attempt).collect(),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let id = parse_id(&r.id, "id")?;
        let delivery = webhook_deliveries::retry(
            &self.state,
            &caller,
            webhook_id,
            id,
            r.max_retries.map(i64::from),
        )
        .await?;
        Ok(Response::new(render_delivery(delivery)))
    }

    async fn retry_failed_deliveries(
        &self,
        request: Request<pb::RetryFailedDeliveriesRequest>,
    ) -> Result<Response<pb::RetryJob>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let mut statuses = Vec::with_capacity(r.statuses.len());
        for (i, s) in r.statuses.iter().enumerate() {
            if let Some(status) =
                status_from_proto(*s, &format!("/statuses/{i}")).map_err(ApiError::from)?
            {
                statuses.push(status);
            }
        }
        let request = RetryFailedRequest {
            dry_run: r.dry_run,
            statuses,
            event_type: non_empty(r.event_type),
            since: from_timestamp(r.created_after, "created_after").map_err(ApiError::from)?,
            until: from_timestamp(r.created_before, "created_before").map_err(ApiError::from)?,
            max_retries: None,
            idempotency_key: non_empty(r.idempotency_key),
        };
        let job = match webhook_deliveries::retry_failed(&self.state, &caller, webhook_id, request)
            .await?
        {
            RetryFailedOutcome::DryRun { matched } => {
                // A dry run stores nothing: the job exists only in this answer.
                let now = timestamp(Utc::now());
                pb::RetryJob {
                    id: String::new(),
                    webhook_id: webhook_id.to_string(),
                    status: RetryJobStatus::Completed.as_str().to_owned(),
                    dry_run: true,
                    total: matched,
                    processed: 0,
                    created_at: Some(now),
                    updated_at: Some(now),
                }
            }
            RetryFailedOutcome::Started(job) | RetryFailedOutcome::Existing(job) => render_job(job),
        };
        Ok(Response::new(job))
    }

    async fn get_retry_job(
        &self,
        request: Request<pb::GetRetryJobRequest>,
    ) -> Result<Response<pb::RetryJob>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let id = parse_id(&r.id, "id")?;
        let job = webhook_deliveries::get_retry_job(&self.state, &caller, webhook_id, id).await?;
        Ok(Response::new(render_job(job)))
    }

    async fn cancel_retry_job(
        &self,
        request: Request<pb::CancelRetryJobRequest>,
    ) -> Result<Response<pb::RetryJob>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let webhook_id = parse_id(&r.webhook_id, "webhook_id")?;
        let id = parse_id(&r.id, "id")?;
        let job =
            webhook_deliveries::cancel_retry_job(&self.state, &caller, webhook_id, id).await?;
        Ok(Response::new(render_job(job)))
    }
}
