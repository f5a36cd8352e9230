//! Webhook endpoints, their signing secrets and test events, their deliveries with
//! attempts, single retries, retry-failed and its durable jobs (`/webhooks/**`).
//! Bodies are `portico_api`'s, the gateway's own types.

use futures::Stream;
use portico_api::PageQuery;
use portico_api::deliveries::{
    DeliveryBody, DeliveryDetailBody, DeliveryListBody, DeliveryQuery, RetryDeliveryBody,
};
use portico_api::retry_jobs::{RetryFailedBody, RetryFailedOkBody, RetryJobBody};
use portico_api::webhooks::{
    CreateWebhookBody, CreatedWebhookBody, RotateSecretBody, SecretBody, TestEventBody,
    UpdateWebhookBody, WebhookBody, WebhookListBody,
};
use portico_domain::ids::{DeliveryId, RetryJobId, WebhookId};
use reqwest::Method;

use crate::pagination::{Paged, paginate};
use crate::{Body, Client, Error, query_of};

impl Paged for WebhookListBody {
    type Item = WebhookBody;
    fn into_parts(self) -> (Vec<WebhookBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

impl Paged for DeliveryListBody {
    type Item = DeliveryBody;
    fn into_parts(self) -> (Vec<DeliveryBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

/// What `retry-failed` answered: a dry-run count, the job an `Idempotency-Key` had
/// already started, or a new job (202).
#[derive(Debug, Clone)]
pub enum RetryFailedOutcome {
    /// `dryRun: true`: how many deliveries match.
    DryRun {
        /// Deliveries that would be retried.
        matched: u64,
    },
    /// The job is running (new, or the earlier one for the same key).
    Job {
        /// The job.
        job: Box<RetryJobBody>,
        /// True for a new job (202), false for an idempotent replay (200).
        created: bool,
    },
}

/// Filters of a delivery list; `None` leaves a filter out.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status (`pending`, `delivering`, `succeeded`, `retrying`, `failed`).
    pub status: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// RFC 3339: created at or after.
    pub since: Option<String>,
    /// RFC 3339: created before.
    pub until: Option<String>,
    /// Page size (1..=500).
    pub limit: Option<u32>,
}

impl Client {
    /// `POST /webhooks`: the created webhook with its signing secret.
    pub async fn create_webhook(
        &self,
        body: &CreateWebhookBody,
    ) -> Result<CreatedWebhookBody, Error> {
        self.call(Method::POST, "/webhooks", &[], Body::json(body)?)
            .await
    }

    /// `GET /webhooks`, one page.
    pub async fn list_webhooks_page(
        &self,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<WebhookListBody, Error> {
        let query = query_of(&PageQuery { limit, cursor })?;
        self.call(Method::GET, "/webhooks", &query, Body::Empty)
            .await
    }

    /// Every webhook of the caller, newest first, fetching pages as they are consumed.
    pub fn webhooks(
        &self,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<WebhookBody, Error>> + '_ {
        paginate(move |cursor| self.list_webhooks_page(page_size, cursor))
    }

    /// `GET /webhooks/{id}`.
    pub async fn get_webhook(&self, id: WebhookId) -> Result<WebhookBody, Error> {
        self.call(Method::GET, &format!("/webhooks/{id}"), &[], Body::Empty)
            .await
    }

    /// `PATCH /webhooks/{id}`: fields left `None` keep their value.
    pub async fn update_webhook(
        &self,
        id: WebhookId,
        patch: &UpdateWebhookBody,
    ) -> Result<WebhookBody, Error> {
        self.call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &[],
            Body::json(patch)?,
        )
        .await
    }

    /// `DELETE /webhooks/{id}`.
    pub async fn delete_webhook(&self, id: WebhookId) -> Result<(), Error> {
        self.call_empty(Method::DELETE, &format!("/webhooks/{id}"), &[], Body::Empty)
            .await
            .map(drop)
    }

    /// `GET /webhooks/{id}/secret`: the current signing secret.
    pub async fn get_webhook_secret(&self, id: WebhookId) -> Result<SecretBody, Error> {
        self.call(
            Method::GET,
            &format!("/webhooks/{id}/secret"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `POST /webhooks/{id}/secret/rotate`: a new secret; the old one keeps signing for
    /// the grace period (server default when `None`).
    pub async fn rotate_webhook_secret(
        &self,
        id: WebhookId,
        grace_period_seconds: Option<i64>,
    ) -> Result<SecretBody, Error> {
        let body = RotateSecretBody {
            grace_period_seconds,
        };
        self.call(
            Method::POST,
            &format!("/webhooks/{id}/secret/rotate"),
            &[],
            Body::json(&body)?,
        )
        .await
    }

    /// `POST /webhooks/{id}/test`: sends a `portico.test` event to this webhook only.
    pub async fn send_test_event(&self, id: WebhookId) -> Result<TestEventBody, Error> {
        self.call(
            Method::POST,
            &format!("/webhooks/{id}/test"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `GET /webhooks/{id}/deliveries`, one page.
    pub async fn list_deliveries_page(
        &self,
        id: WebhookId,
        filter: &DeliveryFilter,
        cursor: Option<String>,
    ) -> Result<DeliveryListBody, Error> {
        let query = DeliveryQuery {
            status: filter.status.clone(),
            event_type: filter.event_type.clone(),
            since: filter.since.clone(),
            until: filter.until.clone(),
            limit: filter.limit,
            cursor,
        };
        self.call(
            Method::GET,
            &format!("/webhooks/{id}/deliveries"),
            &query_of(&query)?,
            Body::Empty,
        )
        .await
    }

    /// Every matching delivery of a webhook, newest first.
    pub fn deliveries<'a>(
        &'a self,
        id: WebhookId,
        filter: &'a DeliveryFilter,
    ) -> impl Stream<Item = Result<DeliveryBody, Error>> + 'a {
        paginate(move |cursor| self.list_deliveries_page(id, filter, cursor))
    }

    /// `GET /webhooks/{id}/deliveries/{deliveryId}`: the delivery with every attempt.
    pub async fn get_delivery(
        &self,
        id: WebhookId,
        delivery: DeliveryId,
    ) -> Result<DeliveryDetailBody, Error> {
        self.call(
            Method::GET,
            &format!("/webhooks/{id}/deliveries/{delivery}"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `POST /webhooks/{id}/deliveries/{deliveryId}/retry`: a new attempt now.
    pub async fn retry_delivery(
        &self,
        id: WebhookId,
        delivery: DeliveryId,
        max_retries: Option<i64>,
    ) -> Result<DeliveryBody, Error> {
        self.call(
            Method::POST,
            &format!("/webhooks/{id}/deliveries/{delivery}/retry"),
            &[],
            Body::json(&RetryDeliveryBody { max_retries })?,
        )
        .await
    }

    /// `POST /webhooks/{id}/retry-failed`: a dry-run count or a durable retry job.
    pub async fn retry_failed(
        &self,
        id: WebhookId,
        body: &RetryFailedBody,
    ) -> Result<RetryFailedOutcome, Error> {
        let response = self
            .send(
                Method::POST,
                &format!("/webhooks/{id}/retry-failed"),
                &[],
                Body::json(body)?,
                Default::default(),
            )
            .await?;
        if response.status == 202 {
            return Ok(RetryFailedOutcome::Job {
                job: Box::new(response.json()?),
                created: true,
            });
        }
        Ok(match response.json::<RetryFailedOkBody>()? {
            RetryFailedOkBody::DryRun(d) => RetryFailedOutcome::DryRun { matched: d.matched },
            RetryFailedOkBody::Existing(job) => RetryFailedOutcome::Job {
                job: Box::new(job),
                created: false,
            },
        })
    }

    /// `GET /webhooks/{id}/retry-jobs/{jobId}`: progress of a retry job.
    pub async fn get_retry_job(
        &self,
        id: WebhookId,
        job: RetryJobId,
    ) -> Result<RetryJobBody, Error> {
        self.call(
            Method::GET,
            &format!("/webhooks/{id}/retry-jobs/{job}"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `POST /webhooks/{id}/retry-jobs/{jobId}/cancel`.
    pub async fn cancel_retry_job(
        &self,
        id: WebhookId,
        job: RetryJobId,
    ) -> Result<RetryJobBody, Error> {
        self.call(
            Method::POST,
            &format!("/webhooks/{id}/retry-jobs/{job}/cancel"),
            &[],
            Body::Empty,
        )
        .await
    }
}
