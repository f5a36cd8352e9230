//! gRPC `IntegrationService`, over the same [`crate::app::integrations`] as
//! `/api/integrations`.

use chrono::{DateTime, Utc};
use portico_domain::integrations::IntegrationType;
use portico_proto::v1::integration_service_server::{IntegrationService, IntegrationServiceServer};
use portico_proto::v1::{
    CreateIntegrationRequest, CreateIntegrationResponse, Credentials, DeleteIntegrationRequest,
    GetIntegrationRequest, GetUsageRequest, GetUsageResponse, Integration as IntegrationMessage,
    IntegrationType as ProtoType, ListIntegrationsRequest, ListIntegrationsResponse, PageInfo,
    PageRequest, RegenerateCredentialsRequest, RegenerateCredentialsResponse,
    UpdateIntegrationRequest, UsageLogEntry, UsageTotals as UsageTotalsMessage,
    VerifyCredentialsRequest, VerifyCredentialsResponse,
};
use tonic::{Request, Response, Status};

use crate::app::integrations::{
    self, Integration, IntegrationPatch, NewIntegration, UsageQuery, UsageTotals,
};
use crate::app::preconditions::Precondition;
use crate::error::ApiError;
use crate::grpc::{caller, idempotent, parse_id};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcIntegrationService {
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> IntegrationServiceServer<GrpcIntegrationService> {
    IntegrationServiceServer::new(GrpcIntegrationService { state })
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn from_timestamp(
    t: &prost_types::Timestamp,
    field: &str,
) -> Result<DateTime<Utc>, ApiError> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| {
            ApiError::field(
                "invalid_timestamp",
                &format!("/{field}"),
                format!("{field} is not a valid timestamp"),
            )
        })
}

pub(crate) fn to_proto_type(t: IntegrationType) -> ProtoType {
    match t {
        IntegrationType::Erp => ProtoType::Erp,
        IntegrationType::Marketplace => ProtoType::Marketplace,
        IntegrationType::Shipping => ProtoType::Shipping,
        IntegrationType::Accounting => ProtoType::Accounting,
        IntegrationType::Custom => ProtoType::Custom,
    }
}

/// The REST name of a wire enum value; UNSPECIFIED and unknown numbers map to names
/// the domain refuses with `invalid_type`.
pub(crate) fn type_name(value: i32) -> String {
    match ProtoType::try_from(value) {
        Ok(ProtoType::Erp) => "erp".into(),
        Ok(ProtoType::Marketplace) => "marketplace".into(),
        Ok(ProtoType::Shipping) => "shipping".into(),
        Ok(ProtoType::Accounting) => "accounting".into(),
        Ok(ProtoType::Custom) => "custom".into(),
        Ok(ProtoType::Unspecified) => "unspecified".into(),
        Err(_) => format!("type number {value}"),
    }
}

pub(crate) fn render(i: Integration) -> IntegrationMessage {
    let etag = i.etag().to_string();
    IntegrationMessage {
        id: i.id.to_string(),
        name: i.name,
        r#type: to_proto_type(i.integration_type) as i32,
        webhook_url: i.webhook_url.unwrap_or_default(),
        scopes: i.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        api_key: i.api_key.unwrap_or_default(),
        active: i.active,
        expires_at: i.expires_at.map(timestamp),
        rate_limit_per_second: i.rate_limit_per_second,
        daily_quota: i.daily_quota,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        last_used_at: i.last_used_at.map(timestamp),
        etag,
    }
}

fn render_totals(t: UsageTotals) -> UsageTotalsMessage {
    UsageTotalsMessage {
        total: t.total,
        by_status: t.by_status.into_iter().collect(),
        by_route: t.by_route.into_iter().collect(),
    }
}

pub(crate) fn page(p: Option<PageRequest>) -> Result<(Option<u32>, Option<String>), ApiError> {
    let p = p.unwrap_or_default();
    let limit = u32::try_from(p.limit).map_err(|_| {
        ApiError::field("invalid_limit", "/page/limit", "limit must not be negative")
    })?;
    Ok((
        (limit > 0).then_some(limit.min(portico_domain::pagination::MAX_LIMIT)),
        (!p.cursor.is_empty()).then_some(p.cursor),
    ))
}

#[tonic::async_trait]
impl IntegrationService for GrpcIntegrationService {
    async fn create_integration(
        &self,
        request: Request<CreateIntegrationRequest>,
    ) -> Result<Response<CreateIntegrationResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let (metadata, _, r) = request.into_parts();
        let message = r.clone();
        let caller = &caller;
        let create = || async move {
            let input = NewIntegration {
                name: r.name,
                integration_type: type_name(r.r#type),
                webhook_url: (!r.webhook_url.is_empty()).then_some(r.webhook_url),
                scopes: (!r.scopes.is_empty()).then_some(r.scopes),
                expires_at: r
                    .expires_at
                    .as_ref()
                    .map(|t| from_timestamp(t, "expires_at"))
                    .transpose()?,
                rate_limit_per_second: r.rate_limit_per_second,
                daily_quota: r.daily_quota,
            };
            let created = integrations::create(&self.state, caller, input).await?;
            Ok(CreateIntegrationResponse {
                integration: Some(render(created.integration)),
                credentials: Some(Credentials {
                    api_key: created.credentials.api_key,
                    api_secret: created.credentials.api_secret,
                }),
            })
        };
        idempotent::once(
            &self.state,
            caller,
            "portico.v1.IntegrationService/CreateIntegration",
            &metadata,
            &message,
            create,
        )
        .await
    }

    async fn list_integrations(
        &self,
        request: Request<ListIntegrationsRequest>,
    ) -> Result<Response<ListIntegrationsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let filter = (r.r#type != ProtoType::Unspecified as i32).then(|| type_name(r.r#type));
        let (limit, cursor) = page(r.page)?;
        let (rows, next) = integrations::list(
            &self.state,
            &caller,
            filter.as_deref(),
            limit,
            cursor.as_deref(),
        )
        .await?;
        Ok(Response::new(ListIntegrationsResponse {
            integrations: rows.into_iter().map(render).collect(),
            page: Some(PageInfo {
                next_cursor: next.unwrap_or_default(),
            }),
        }))
    }

    async fn get_integration(
        &self,
        request: Request<GetIntegrationRequest>,
    ) -> Result<Response<IntegrationMessage>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let integration = integrations::get(&self.state, &caller, id).await?;
        Ok(Response::new(render(integration)))
    }

    async fn update_integration(
        &self,
        request: Request<UpdateIntegrationRequest>,
    ) -> Result<Response<IntegrationMessage>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let id = parse_id(&r.id, "id")?;
        if r.clear_expires_at && r.expires_at.is_some() {
            return Err(ApiError::field(
                "invalid_expiry",
                "/expires_at",
                "set expires_at or clear_expires_at, not both",
            )
            .into());
        }
        let expires_at = match (&r.expires_at, r.clear_expires_at) {
            (Some(t), _) => Some(Some(from_timestamp(t, "expires_at")?)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        let patch = IntegrationPatch {
            name: r.name,
            integration_type: r.r#type.map(type_name),
            webhook_url: r.webhook_url.map(|u| (!u.is_empty()).then_some(u)),
            scopes: r.scopes.map(|s| s.values),
            active: r.active,
            expires_at,
            rate_limit_per_second: r.rate_limit_per_second,
            daily_quota: r.daily_quota,
        };
        let precondition = Precondition::from_grpc(r.etag.as_deref());
        let integration =
            integrations::update(&self.state, &caller, id, patch, &precondition).await?;
        Ok(Response::new(render(integration)))
    }

    async fn delete_integration(
        &self,
        request: Request<DeleteIntegrationRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&self.state, &request).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let precondition = Precondition::from_grpc(request.get_ref().etag.as_deref());
        integrations::delete(&self.state, &caller, id, &precondition).await?;
        Ok(Response::new(()))
    }

    async fn regenerate_credentials(
        &self,
        request: Request<RegenerateCredentialsRequest>,
    ) -> Result<Response<RegenerateCredentialsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let id = parse_id(&r.id, "id")?;
        let regenerated =
            integrations::regenerate(&self.state, &caller, id, r.grace_period_seconds).await?;
        Ok(Response::new(RegenerateCredentialsResponse {
            integration: Some(render(regenerated.integration)),
            credentials: Some(Credentials {
                api_key: regenerated.credentials.api_key,
                api_secret: regenerated.credentials.api_secret,
            }),
            previous_secret_expires_at: regenerated.previous_expires_at.map(timestamp),
        }))
    }

    async fn verify_credentials(
        &self,
        request: Request<VerifyCredentialsRequest>,
    ) -> Result<Response<VerifyCredentialsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let v = integrations::verify(&self.state, &caller, &r.api_key, &r.api_secret).await?;
        Ok(Response::new(VerifyCredentialsResponse {
            valid: v.valid,
            integration_id: v.integration_id.map(|i| i.to_string()).unwrap_or_default(),
            scopes: v.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let id = parse_id(&r.integration_id, "integration_id")?;
        let (limit, cursor) = page(r.page)?;
        let query = UsageQuery {
            from: r
                .from
                .as_ref()
                .map(|t| from_timestamp(t, "from"))
                .transpose()?,
            to: r.to.as_ref().map(|t| from_timestamp(t, "to")).transpose()?,
            limit,
            cursor,
        };
        let usage = integrations::usage(&self.state, &caller, id, query).await?;
        Ok(Response::new(GetUsageResponse {
            entries: usage
                .entries
                .into_iter()
                .map(|e| UsageLogEntry {
                    method: e.method,
                    route: e.route,
                    status: u32::try_from(e.status).unwrap_or(0),
                    latency_ms: u64::try_from(e.latency_us / 1000).unwrap_or(0),
                    client_ip: e.client_ip.unwrap_or_default(),
                    occurred_at: Some(timestamp(e.occurred_at)),
                })
                .collect(),
            totals: Some(render_totals(usage.totals)),
            page: Some(PageInfo {
                next_cursor: usage.next_cursor.unwrap_or_default(),
            }),
        }))
    }
}
