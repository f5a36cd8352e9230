//! Bulk-order batches and orders (`/bulk-orders/**`, `/orders/{id}`): submit as JSON
//! or NDJSON, follow a batch, page or download its results, cancel, retry the failed.

use bytes::Bytes;
use futures::Stream;
use portico_api::bulk_orders::{
    BatchBody, BatchListBody, DownloadQuery, ListBatchesQuery, OrderBody, ResultBody,
    ResultListBody, ResultsQuery, SubmitBatchBody, SubmitOkBody, ValidationBody,
};
use portico_domain::ids::{BatchId, OrderId};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::pagination::{Paged, paginate};
use crate::{Body, Client, Error, query_of, query_pairs};

impl Paged for BatchListBody {
    type Item = BatchBody;
    fn into_parts(self) -> (Vec<BatchBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

impl Paged for ResultListBody {
    type Item = ResultBody;
    fn into_parts(self) -> (Vec<ResultBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

/// The orders of a submission, as the caller has them.
#[derive(Debug, Clone)]
pub enum Orders {
    /// Typed orders, sent as JSON `{"orders": [...]}`.
    Typed(SubmitBatchBody),
    /// A JSON document `{"orders": [...]}` already serialised.
    Json(Bytes),
    /// NDJSON, one order per line (large batches: the server streams it).
    Ndjson(Bytes),
}

/// What a submission answered.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// The batch was accepted (202), or an Idempotency-Key replayed it (200).
    Batch {
        /// The batch.
        batch: Box<BatchBody>,
        /// True for an idempotent replay.
        replay: bool,
    },
    /// `validateOnly`: one result per order; nothing stored.
    Validation(ValidationBody),
}

/// Download formats of a batch's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFormat {
    /// One JSON result per line.
    Ndjson,
    /// A header row and one row per result.
    Csv,
}

impl Client {
    /// `POST /bulk-orders`: submits orders, with an optional `Idempotency-Key`.
    pub async fn submit_batch(
        &self,
        orders: Orders,
        validate_only: bool,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, Error> {
        let body = match orders {
            Orders::Typed(body) => Body::json(&body)?,
            Orders::Json(bytes) => Body::Json(bytes),
            Orders::Ndjson(bytes) => Body::Raw {
                bytes,
                content_type: "application/x-ndjson",
            },
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = idempotency_key {
            headers.insert(
                "idempotency-key",
                HeaderValue::from_str(key).map_err(|_| {
                    Error::Config("the idempotency key must be visible ASCII".into())
                })?,
            );
        }
        let query = query_pairs(&[("validateOnly", validate_only.then(|| "true".into()))]);
        let response = self
            .send(Method::POST, "/bulk-orders", &query, body, headers)
            .await?;
        if response.status == 202 {
            return Ok(Submitted::Batch {
                batch: Box::new(response.json()?),
                replay: false,
            });
        }
        Ok(match response.json::<SubmitOkBody>()? {
            SubmitOkBody::Replay(batch) => Submitted::Batch {
                batch: Box::new(batch),
                replay: true,
            },
            SubmitOkBody::Validation(v) => Submitted::Validation(v),
        })
    }

    /// `GET /bulk-orders`, one page.
    pub async fn list_batches_page(
        &self,
        status: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<BatchListBody, Error> {
        let query = query_of(&ListBatchesQuery {
            status,
            limit,
            cursor,
        })?;
        self.call(Method::GET, "/bulk-orders", &query, Body::Empty)
            .await
    }

    /// Every batch of the caller, newest first.
    pub fn batches(
        &self,
        status: Option<String>,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<BatchBody, Error>> + '_ {
        paginate(move |cursor| self.list_batches_page(status.clone(), page_size, cursor))
    }

    /// `GET /bulk-orders/{id}`: status, counts and error summary.
    pub async fn get_batch(&self, id: BatchId) -> Result<BatchBody, Error> {
        self.call(Method::GET, &format!("/bulk-orders/{id}"), &[], Body::Empty)
            .await
    }

    /// `GET /bulk-orders/{id}/results`, one page.
    pub async fn list_results_page(
        &self,
        id: BatchId,
        status: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<ResultListBody, Error> {
        let query = query_of(&ResultsQuery {
            status,
            limit,
            cursor,
        })?;
        self.call(
            Method::GET,
            &format!("/bulk-orders/{id}/results"),
            &query,
            Body::Empty,
        )
        .await
    }

    /// Every result of a batch, in input order.
    pub fn results(
        &self,
        id: BatchId,
        status: Option<String>,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<ResultBody, Error>> + '_ {
        paginate(move |cursor| self.list_results_page(id, status.clone(), page_size, cursor))
    }

    /// `GET /bulk-orders/{id}/results/download`: every result as NDJSON or CSV bytes.
    pub async fn download_results(
        &self,
        id: BatchId,
        format: ResultsFormat,
        status: Option<String>,
    ) -> Result<Bytes, Error> {
        let format = match format {
            ResultsFormat::Ndjson => "ndjson",
            ResultsFormat::Csv => "csv",
        };
        let query = query_of(&DownloadQuery {
            format: Some(format.into()),
            status,
        })?;
        let response = self
            .send(
                Method::GET,
                &format!("/bulk-orders/{id}/results/download"),
                &query,
                Body::Empty,
                HeaderMap::new(),
            )
            .await?;
        Ok(response.body)
    }

    /// `POST /bulk-orders/{id}/cancel`.
    pub async fn cancel_batch(&self, id: BatchId) -> Result<BatchBody, Error> {
        self.call(
            Method::POST,
            &format!("/bulk-orders/{id}/cancel"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `POST /bulk-orders/{id}/retry-failed`: a child batch of the failed and
    /// unprocessed orders.
    pub async fn retry_failed_orders(
        &self,
        id: BatchId,
        idempotency_key: Option<&str>,
    ) -> Result<BatchBody, Error> {
        let mut headers = HeaderMap::new();
        if let Some(key) = idempotency_key {
            headers.insert(
                "idempotency-key",
                HeaderValue::from_str(key).map_err(|_| {
                    Error::Config("the idempotency key must be visible ASCII".into())
                })?,
            );
        }
        self.send(
            Method::POST,
            &format!("/bulk-orders/{id}/retry-failed"),
            &[],
            Body::Empty,
            headers,
        )
        .await?
        .json()
    }

    /// `GET /orders/{id}`.
    pub async fn get_order(&self, id: OrderId) -> Result<OrderBody, Error> {
        self.call(Method::GET, &format!("/orders/{id}"), &[], Body::Empty)
            .await
    }
}
