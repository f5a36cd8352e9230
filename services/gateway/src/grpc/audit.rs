//! gRPC `AuditService`, the twin of `GET /api/audit-log` and `GET /api/audit-log/verify`:
//! each method converts its message, calls the same [`crate::app::audit`] function and
//! converts the result back, with the same authentication (partners: PERMISSION_DENIED).

use portico_proto::v1 as pb;
use portico_proto::v1::audit_service_server::{AuditService, AuditServiceServer};
use portico_storage::audit::hex;
use tonic::{Request, Response, Status};

use crate::app::audit::{self, AuditListFilter, AuditRecord};
use crate::error::ApiError;
use crate::grpc::caller;
use crate::grpc::integrations::{from_timestamp, timestamp};
use crate::grpc::webhooks::{page, page_info};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcAuditService {
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> AuditServiceServer<GrpcAuditService> {
    AuditServiceServer::new(GrpcAuditService { state })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn record(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        id: r.id.to_string(),
        seq: r.seq,
        at: Some(timestamp(r.at)),
        actor_kind: r.actor_kind,
        actor_id: r.actor_id,
        client_addr: r.client_addr.unwrap_or_default(),
        request_id: r.request_id.unwrap_or_default(),
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        changes_json: r.changes.to_string(),
        prev_hash: hex(&r.prev_hash),
        hash: hex(&r.hash),
    }
}

#[tonic::async_trait]
impl AuditService for GrpcAuditService {
    async fn list_audit_log(
        &self,
        request: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let since = r
            .since
            .as_ref()
            .map(|t| from_timestamp(t, "since"))
            .transpose()?;
        let until = r
            .until
            .as_ref()
            .map(|t| from_timestamp(t, "until"))
            .transpose()?;
        let filter = AuditListFilter {
            action: non_empty(r.action),
            resource_type: non_empty(r.resource_type),
            resource_id: non_empty(r.resource_id),
            actor_kind: non_empty(r.actor_kind),
            actor_id: non_empty(r.actor_id),
            since,
            until,
        };
        let errors = filter.validate();
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors).into());
        }
        let (records, next) = audit::list(&self.state, &caller, &filter, page(r.page)?).await?;
        Ok(Response::new(pb::ListAuditLogResponse {
            records: records.into_iter().map(record).collect(),
            page: page_info(next),
        }))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::AuditVerification>, Status> {
        let caller = caller(&self.state, &request).await?;
        let from = request.into_inner().from_seq;
        let v = audit::verify(&self.state, &caller, (from != 0).then_some(from)).await?;
        Ok(Response::new(pb::AuditVerification {
            valid: v.valid,
            records: v.records,
            from_seq: v.from_seq,
            head_seq: v.head_seq,
            head: v.head,
            broken_at: v.broken_at.unwrap_or(0),
            reason: v.reason.unwrap_or_default().to_owned(),
            detail: v.detail.unwrap_or_default(),
        }))
    }
}
