//! gRPC `BulkOrderService`, over the same [`crate::app::bulk_orders`] as
//! `/api/bulk-orders`. Submitted orders are converted to the REST JSON shape (camelCase,
//! empty optional strings left out) so one validator, one storage format and one set of
//! error paths serve both doors.

use chrono::{DateTime, Utc};
use portico_domain::bulk_orders::BatchStatus;
use portico_domain::pagination::PageRequest;
use portico_proto::v1::bulk_order_service_server::{BulkOrderService, BulkOrderServiceServer};
use portico_proto::v1::{
    self as pb, CancelBatchRequest, GetBatchRequest, GetOrderRequest, ListBatchResultsRequest,
    ListBatchResultsResponse, ListBatchesRequest, ListBatchesResponse, PageInfo,
    RetryFailedRequest, SubmitBatchRequest, SubmitBatchResponse, submit_batch_response,
};
use portico_storage::bulk_orders::BatchRow;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use crate::app::bulk_orders::{self as app, OrderResult, ResultsPage, SubmitOptions, Submitted};
use crate::error::ApiError;
use crate::grpc::{caller, parse_id};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcBulkOrderService {
    state: AppState,
}

/// Builds the tonic server; a batch message may be as large as a REST JSON body.
pub fn server(state: AppState) -> BulkOrderServiceServer<GrpcBulkOrderService> {
    let max = state.config().max_body_bytes;
    BulkOrderServiceServer::new(GrpcBulkOrderService { state }).max_decoding_message_size(max)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn status_to_pb(status: BatchStatus) -> pb::BatchStatus {
    match status {
        BatchStatus::Pending => pb::BatchStatus::Pending,
        BatchStatus::Processing => pb::BatchStatus::Processing,
        BatchStatus::Completed => pb::BatchStatus::Completed,
        BatchStatus::CompletedWithErrors => pb::BatchStatus::CompletedWithErrors,
        BatchStatus::Failed => pb::BatchStatus::Failed,
        BatchStatus::Cancelled => pb::BatchStatus::Cancelled,
    }
}

fn status_from_pb(value: i32) -> Result<Option<BatchStatus>, ApiError> {
    match pb::BatchStatus::try_from(value) {
        Ok(pb::BatchStatus::Unspecified) => Ok(None),
        Ok(pb::BatchStatus::Pending) => Ok(Some(BatchStatus::Pending)),
        Ok(pb::BatchStatus::Processing) => Ok(Some(BatchStatus::Processing)),
        Ok(pb::BatchStatus::Completed) => Ok(Some(BatchStatus::Completed)),
        Ok(pb::BatchStatus::CompletedWithErrors) => Ok(Some(BatchStatus::CompletedWithErrors)),
        Ok(pb::BatchStatus::Failed) => Ok(Some(BatchStatus::Failed)),
        Ok(pb::BatchStatus::Cancelled) => Ok(Some(BatchStatus::Cancelled)),
        Err(_) => Err(ApiError::field(
            "invalid_status",
            "/status",
            "unknown batch status",
        )),
    }
}

fn render_batch(row: BatchRow) -> pb::Batch {
    let counts = row.counts();
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    pb::Batch {
        status: status_to_pb(row.status()) as i32,
        counts: Some(pb::BatchCounts {
            total: unsigned(counts.total),
            processed: unsigned(counts.processed),
            succeeded: unsigned(counts.succeeded),
            failed: unsigned(counts.failed),
            duplicate: unsigned(counts.duplicate),
            unprocessed: unsigned(counts.unprocessed),
        }),
        error_summary: row
            .error_summary()
            .into_iter()
            .map(|(code, n)| (code, unsigned(n)))
            .collect(),
        id: row.id.to_string(),
        parent_batch_id: row
            .parent_batch_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        started_at: row.started_at.map(timestamp),
        completed_at: row.completed_at.map(timestamp),
        updated_at: Some(timestamp(row.updated_at)),
        integration_id: row
            .integration_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

fn render_result(r: OrderResult) -> pb::OrderResult {
    pb::OrderResult {
        index: u64::try_from(r.index).unwrap_or(0),
        client_order_ref: r.client_order_ref.unwrap_or_default(),
        status: r.status.as_str().to_owned(),
        order_id: r.order_id.map(|id| id.to_string()).unwrap_or_default(),
        errors: r
            .errors
            .into_iter()
            .map(|e| pb::OrderError {
                code: e.code,
                path: e.path,
                message: e.message,
            })
            .collect(),
    }
}

/// Converts a proto order to the REST JSON shape. Empty strings (proto3's "unset") are
/// left out, so a missing field is reported `required` exactly as over REST. Metadata
/// that is not JSON is passed as a string and reported `invalid_type` for that order.
fn order_json(order: pb::Order) -> String {
    fn put(map: &mut Map<String, Value>, key: &str, value: String) {
        if !value.is_empty() {
            map.insert(key.to_owned(), Value::String(value));
        }
    }
    let mut map = Map::new();
    put(&mut map, "clientOrderRef", order.client_order_ref);
    put(&mut map, "currency", order.currency);
    if let Some(c) = order.customer {
        let mut customer = Map::new();
        put(&mut customer, "email", c.email);
        put(&mut customer, "name", c.name);
        put(&mut customer, "phone", c.phone);
        map.insert("customer".into(), Value::Object(customer));
    }
    if let Some(a) = order.shipping_address {
        let mut address = Map::new();
        put(&mut address, "line1", a.line1);
        put(&mut address, "line2", a.line2);
        put(&mut address, "city", a.city);
        put(&mut address, "region", a.region);
        put(&mut address, "postalCode", a.postal_code);
        put(&mut address, "country", a.country);
        map.insert("shippingAddress".into(), Value::Object(address));
    }
    let items = order
        .line_items
        .into_iter()
        .map(|item| {
            let mut line = Map::new();
            put(&mut line, "sku", item.sku);
            line.insert("quantity".into(), Value::from(item.quantity));
            put(&mut line, "unitPrice", item.unit_price);
            Value::Object(line)
        })
        .collect();
    map.insert("lineItems".into(), Value::Array(items));
    if !order.metadata_json.is_empty() {
        let metadata = serde_json::from_str::<Value>(&order.metadata_json)
            .unwrap_or(Value::String(order.metadata_json));
        map.insert("metadata".into(), metadata);
    }
    Value::Object(map).to_string()
}

fn page_request(page: Option<pb::PageRequest>) -> Result<(Option<u32>, Option<String>), ApiError> {
    let page = page.unwrap_or_default();
    let limit = u32::try_from(page.limit).map_err(|_| {
        ApiError::field("invalid_limit", "/page/limit", "limit must not be negative")
    })?;
    Ok((
        (limit > 0).then_some(limit),
        (!page.cursor.is_empty()).then_some(page.cursor),
    ))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl BulkOrderService for GrpcBulkOrderService {
    async fn submit_batch(
        &self,
        request: Request<SubmitBatchRequest>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let req = request.into_inner();
        let options = SubmitOptions {
            validate_only: req.validate_only,
            idempotency_key: non_empty(req.idempotency_key),
        };
        let texts: Vec<String> = req.orders.into_iter().map(order_json).collect();
        let orders: Vec<&str> = texts.iter().map(String::as_str).collect();
        let submitted = app::submit(&self.state, &caller, &orders, options).await?;
        Ok(Response::new(match submitted {
            Submitted::Accepted { batch, replay } => SubmitBatchResponse {
                idempotent_replay: replay,
                outcome: Some(submit_batch_response::Outcome::Batch(render_batch(batch))),
            },
            Submitted::Validated(report) => SubmitBatchResponse {
                idempotent_replay: false,
                outcome: Some(submit_batch_response::Outcome::Validation(
                    pb::ValidationReport {
                        valid: report.valid,
                        results: report.results.into_iter().map(render_result).collect(),
                    },
                )),
            },
        }))
    }

    async fn get_batch(
        &self,
        request: Request<GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let batch = app::get_batch(&self.state, &caller, id).await?;
        Ok(Response::new(render_batch(batch)))
    }

    async fn list_batches(
        &self,
        request: Request<ListBatchesRequest>,
    ) -> Result<Response<ListBatchesResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let req = request.into_inner();
        let status = status_from_pb(req.status)?;
        let (limit, cursor) = page_request(req.page)?;
        let page = PageRequest::parse(limit, cursor.as_deref()).map_err(ApiError::from)?;
        let (rows, next) = app::list_batches(&self.state, &caller, status, page).await?;
        Ok(Response::new(ListBatchesResponse {
            batches: rows.into_iter().map(render_batch).collect(),
            page: Some(PageInfo {
                next_cursor: next.unwrap_or_default(),
            }),
        }))
    }

    async fn list_batch_results(
        &self,
        request: Request<ListBatchResultsRequest>,
    ) -> Result<Response<ListBatchResultsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let req = request.into_inner();
        let id = parse_id(&req.batch_id, "batch_id")?;
        let status = non_empty(req.status)
            .map(|s| app::parse_result_status(&s))
            .transpose()?;
        let (limit, cursor) = page_request(req.page)?;
        let page = ResultsPage::parse(limit, cursor.as_deref())?;
        let (rows, next) = app::list_results(&self.state, &caller, id, status, page).await?;
        Ok(Response::new(ListBatchResultsResponse {
            results: rows.into_iter().map(render_result).collect(),
            page: Some(PageInfo {
                next_cursor: next.unwrap_or_default(),
            }),
        }))
    }

    async fn cancel_batch(
        &self,
        request: Request<CancelBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let batch = app::cancel(&self.state, &caller, id).await?;
        Ok(Response::new(render_batch(batch)))
    }

    async fn retry_failed(
        &self,
        request: Request<RetryFailedRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let caller = caller(&self.state, &request).await?;
        let req = request.into_inner();
        let id = parse_id(&req.id, "id")?;
        let (batch, _replay) =
            app::retry_failed(&self.state, &caller, id, non_empty(req.idempotency_key)).await?;
        Ok(Response::new(render_batch(batch)))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<pb::StoredOrder>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let order = app::get_order(&self.state, &caller, id).await?;
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let c = &order.customer;
        let a = &order.shipping_address;
        Ok(Response::new(pb::StoredOrder {
            id: order.id.to_string(),
            batch_id: order.batch_id.map(|b| b.to_string()).unwrap_or_default(),
            integration_id: order
                .integration_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
            client_order_ref: order.client_order_ref.clone(),
            currency: order.currency.clone(),
            customer: Some(pb::Customer {
                email: text(c, "email"),
                name: text(c, "name"),
                phone: text(c, "phone"),
            }),
            shipping_address: Some(pb::Address {
                line1: text(a, "line1"),
                line2: text(a, "line2"),
                city: text(a, "city"),
                region: text(a, "region"),
                postal_code: text(a, "postalCode"),
                country: text(a, "country"),
            }),
            line_items: order
                .line_items
                .iter()
                .map(|l| pb::StoredLineItem {
                    sku: l.sku.clone(),
                    quantity: u32::try_from(l.quantity).unwrap_or(0),
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            total_minor: order.total_minor,
            metadata_json: order
                .metadata
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            created_at: Some(timestamp(order.created_at)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proto order becomes the REST JSON shape; unset strings are left out so they
    /// are reported `required`, and non-JSON metadata is kept as a string.
    #[test]
    fn proto_orders_become_rest_json() {
        let order = pb::Order {
            client_order_ref: "G-1".into(),
            currency: "EUR".into(),
            customer: Some(pb::Customer {
                email: "a@b.co".into(),
                name: "A".into(),
                phone: String::new(),
            }),
            shipping_address: None,
            line_items: vec![pb::LineItem {
                sku: "S".into(),
                quantity: 2,
                unit_price: "1.50".into(),
            }],
            metadata_json: "not json".into(),
        };
        let json: Value = serde_json::from_str(&order_json(order)).unwrap();
        assert_eq!(json["clientOrderRef"], "G-1");
        assert!(json["customer"].get("phone").is_none());
        assert!(json.get("shippingAddress").is_none());
        assert_eq!(json["lineItems"][0]["unitPrice"], "1.50");
        assert_eq!(json["lineItems"][0]["quantity"], 2);
        assert_eq!(json["metadata"], "not json");
    }
}
