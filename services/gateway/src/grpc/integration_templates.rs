//! gRPC `IntegrationTemplateService`, over the same
//! [`crate::app::integration_templates`] as `/api/integration-templates`.

use portico_proto::v1::integration_template_service_server::{
    IntegrationTemplateService, IntegrationTemplateServiceServer,
};
use portico_proto::v1::{
    CreateIntegrationFromTemplateRequest, CreateIntegrationFromTemplateResponse,
    CreateTemplateRequest, Credentials, DeleteTemplateRequest, GetTemplateRequest,
    IntegrationTemplate, IntegrationType as ProtoType, ListTemplatesRequest, ListTemplatesResponse,
    PageInfo, UpdateTemplateRequest,
};
use tonic::{Request, Response, Status};

use crate::app::integration_templates::{
    self as templates, FromTemplate, Template, TemplatePatch, TemplateSpec,
};
use crate::app::preconditions::Precondition;
use crate::grpc::integrations::{
    from_timestamp, page, render, timestamp, to_proto_type, type_name,
};
use crate::grpc::{caller, idempotent};
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcIntegrationTemplateService {
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> IntegrationTemplateServiceServer<GrpcIntegrationTemplateService> {
    IntegrationTemplateServiceServer::new(GrpcIntegrationTemplateService { state })
}

fn names<T: Copy>(items: &[T], name: impl Fn(T) -> &'static str) -> Vec<String> {
    items.iter().map(|i| name(*i).to_owned()).collect()
}

fn render_template(t: Template) -> IntegrationTemplate {
    let etag = t.etag().map(|e| e.to_string()).unwrap_or_default();
    IntegrationTemplate {
        etag,
        r#type: to_proto_type(t.integration_type) as i32,
        scopes: names(&t.scopes, |s| s.as_str()),
        any_scope_allowed: t.allowed_scopes.is_none(),
        allowed_scopes: t
            .allowed_scopes
            .as_deref()
            .map(|s| names(s, |s| s.as_str()))
            .unwrap_or_default(),
        overridable: names(&t.overridable, |f| f.as_str()),
        created_at: t.created_at.map(timestamp),
        updated_at: t.updated_at.map(timestamp),
        key: t.key,
        name: t.name,
        description: t.description,
        rate_limit_per_second: t.rate_limit_per_second,
        daily_quota: t.daily_quota,
        events: t.events,
        builtin: t.builtin,
    }
}

#[tonic::async_trait]
impl IntegrationTemplateService for GrpcIntegrationTemplateService {
    async fn list_templates(
        &self,
        request: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let (limit, cursor) = page(request.into_inner().page)?;
        let (rows, next) = templates::list(&self.state, &caller, limit, cursor.as_deref()).await?;
        Ok(Response::new(ListTemplatesResponse {
            templates: rows.into_iter().map(render_template).collect(),
            page: Some(PageInfo {
                next_cursor: next.unwrap_or_default(),
            }),
        }))
    }

    async fn get_template(
        &self,
        request: Request<GetTemplateRequest>,
    ) -> Result<Response<IntegrationTemplate>, Status> {
        let caller = caller(&self.state, &request).await?;
        let key = request.into_inner().key;
        let template = templates::get(&self.state, &caller, &key).await?;
        Ok(Response::new(render_template(template)))
    }

    async fn create_template(
        &self,
        request: Request<CreateTemplateRequest>,
    ) -> Result<Response<IntegrationTemplate>, Status> {
        let caller = caller(&self.state, &request).await?;
        let (metadata, _, r) = request.into_parts();
        let message = r.clone();
        let caller = &caller;
        let create = || async move {
            let spec = TemplateSpec {
                name: r.name,
                description: r.description,
                integration_type: type_name(r.r#type),
                scopes: r.scopes,
                allowed_scopes: (!r.allowed_scopes.is_empty()).then_some(r.allowed_scopes),
                rate_limit_per_second: r.rate_limit_per_second,
                daily_quota: r.daily_quota,
                events: r.events,
                overridable: r.overridable,
            };
            let template = templates::create(&self.state, caller, &r.key, spec).await?;
            Ok(render_template(template))
        };
        idempotent::once(
            &self.state,
            caller,
            "portico.v1.IntegrationTemplateService/CreateTemplate",
            &metadata,
            &message,
            create,
        )
        .await
    }

    async fn update_template(
        &self,
        request: Request<UpdateTemplateRequest>,
    ) -> Result<Response<IntegrationTemplate>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let patch = TemplatePatch {
            name: r.name,
            description: r.description,
            integration_type: (r.r#type != ProtoType::Unspecified as i32)
                .then(|| type_name(r.r#type)),
            scopes: r.scopes.map(|l| l.values),
            allowed_scopes: r
                .allowed_scopes
                .map(|l| (!l.values.is_empty()).then_some(l.values)),
            rate_limit_per_second: r.rate_limit_per_second,
            daily_quota: r.daily_quota,
            events: r.events.map(|l| l.values),
            overridable: r.overridable.map(|l| l.values),
        };
        let precondition = Precondition::from_grpc(r.etag.as_deref());
        let template =
            templates::update(&self.state, &caller, &r.key, patch, &precondition).await?;
        Ok(Response::new(render_template(template)))
    }

    async fn delete_template(
        &self,
        request: Request<DeleteTemplateRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&self.state, &request).await?;
        let r = request.into_inner();
        let precondition = Precondition::from_grpc(r.etag.as_deref());
        templates::delete(&self.state, &caller, &r.key, &precondition).await?;
        Ok(Response::new(()))
    }

    async fn create_integration_from_template(
        &self,
        request: Request<CreateIntegrationFromTemplateRequest>,
    ) -> Result<Response<CreateIntegrationFromTemplateResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let (metadata, _, r) = request.into_parts();
        let message = r.clone();
        let caller = &caller;
        let create = || async move {
            let input = FromTemplate {
                webhook_url: Some(r.webhook_url),
                name: r.name,
                scopes: (!r.scopes.is_empty()).then_some(r.scopes),
                rate_limit_per_second: r.rate_limit_per_second,
                daily_quota: r.daily_quota,
                expires_at: r
                    .expires_at
                    .as_ref()
                    .map(|t| from_timestamp(t, "expires_at"))
                    .transpose()?,
                events: (!r.events.is_empty()).then_some(r.events),
            };
            let created =
                templates::create_integration(&self.state, caller, &r.template_key, input).await?;
            Ok(CreateIntegrationFromTemplateResponse {
                template_key: created.template,
                integration: Some(render(created.integration)),
                credentials: Some(Credentials {
                    api_key: created.credentials.api_key,
                    api_secret: created.credentials.api_secret,
                }),
                webhook_id: created.webhook.id.to_string(),
                webhook_events: created.webhook.events,
                webhook_secret: created.webhook_secret,
            })
        };
        idempotent::once(
            &self.state,
            caller,
            "portico.v1.IntegrationTemplateService/CreateIntegrationFromTemplate",
            &metadata,
            &message,
            create,
        )
        .await
    }
}
