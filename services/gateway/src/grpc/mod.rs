//! The gRPC door: tonic services over the same [`crate::app`] functions as REST, plus
//! `grpc.health.v1` (Kubernetes probes) and reflection (grpcurl discovery), as both
//! `grpc.reflection.v1` and the older `grpc.reflection.v1alpha` that many clients
//! (Python's `grpcio-reflection`, older grpcurl) still speak.

pub mod analytics;
pub mod audit;
pub mod bulk_orders;
pub mod events;
pub mod idempotent;
pub mod integration_templates;
pub mod integrations;
pub mod live;
pub mod observe;
pub mod partner_calls;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use portico_proto::v1::analytics_service_server::AnalyticsServiceServer;
use portico_proto::v1::audit_service_server::AuditServiceServer;
use portico_proto::v1::bulk_order_service_server::BulkOrderServiceServer;
use portico_proto::v1::event_service_server::EventServiceServer;
use portico_proto::v1::integration_service_server::IntegrationServiceServer;
use portico_proto::v1::integration_template_service_server::IntegrationTemplateServiceServer;
use portico_proto::v1::webhook_service_server::WebhookServiceServer;
use portico_runtime::admin::ReadinessCheck;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::auth::{Caller, authenticate};
use crate::error::ApiError;
use crate::state::AppState;

/// Authenticates a gRPC call from its metadata, exactly as REST does from headers.
/// A partner call was authenticated (and is logged) by [`partner_calls`] already.
pub async fn caller<T>(state: &AppState, request: &Request<T>) -> Result<Caller, ApiError> {
    if let Some(partner) = request.extensions().get::<Caller>() {
        return Ok(partner.clone());
    }
    let headers = request.metadata().clone().into_headers();
    authenticate(state, &headers).await
}

/// Parses a UUID field of a request.
pub fn parse_id(text: &str, field: &str) -> Result<uuid::Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field(
            "invalid_id",
            &format!("/{field}"),
            format!("{field} must be a UUID"),
        )
    })
}

/// How often the overall gRPC health status follows the dependency checks.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Serves gRPC on `listener` until `shutdown`, then lets in-flight calls finish. The
/// overall health status (service `""`, what Kubernetes' `grpc` probe asks) follows
/// `readiness`: NOT_SERVING while PostgreSQL or JetStream is unreachable, so the pod
/// leaves the Service until they are back.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    readiness: Arc<dyn ReadinessCheck>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The overall status and every service's follow readiness together.
    // No length annotation: adding a service is one line.
    let services = [
        "",
        <EventServiceServer<events::GrpcEventService> as NamedService>::NAME,
        <WebhookServiceServer<webhooks::GrpcWebhookService> as NamedService>::NAME,
        <BulkOrderServiceServer<bulk_orders::GrpcBulkOrderService> as NamedService>::NAME,
        <IntegrationServiceServer<integrations::GrpcIntegrationService> as NamedService>::NAME,
        <IntegrationTemplateServiceServer<integration_templates::GrpcIntegrationTemplateService> as NamedService>::NAME,
        <AnalyticsServiceServer<analytics::GrpcAnalyticsService> as NamedService>::NAME,
        <AuditServiceServer<audit::GrpcAuditService> as NamedService>::NAME,
    ];
    let initial = if readiness.check().await.is_empty() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in services {
        health.set_service_status(name, initial).await;
    }
    let follower = health.clone();
    let stop_following = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        let mut current = initial;
        loop {
            tokio::select! {
                _ = stop_following.cancelled() => break,
                _ = tick.tick() => {}
            }
            let status = if readiness.check().await.is_empty() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if status != current {
                tracing::warn!(?status, "gRPC health changed with readiness");
                current = status;
            }
            for name in services {
                follower.set_service_status(name, status).await;
            }
        }
    });
    let (reflection_v1, reflection_v1alpha) = reflection();
    let timeout = Duration::from_millis(state.config().request_timeout_ms);
    let mut builder = tonic::transport::Server::builder()
        .timeout(timeout)
        .layer(observe::ObserveLayer)
        .layer(observe::OriginLayer {
            trust_forwarded_for: state.config().trust_forwarded_for,
            linker: state.audit_linker().clone(),
        })
        .layer(partner_calls::PartnerCallsLayer::new(state.clone()));
    let router = builder
        .add_service(health_service)
        .add_service(events::server(state.clone()))
        .add_service(webhooks::server(state.clone()))
        .add_service(bulk_orders::server(state.clone()))
        .add_service(integrations::server(state.clone()))
        .add_service(integration_templates::server(state.clone()))
        .add_service(analytics::server(state.clone()))
        .add_service(audit::server(state.clone()))
        .add_service(live::server(state.clone()))
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let drain = shutdown.clone();
    router
        .serve_with_incoming_shutdown(incoming, async move {
            drain.cancelled().await;
            for name in services {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        })
        .await
}

/// The reflection services, v1 and v1alpha, over the same descriptors; each lists both
/// reflection services beside Portico's and health. A descriptor set that does not
/// decode leaves reflection out (logged) rather than stopping the gateway.
fn reflection() -> (
    Option<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    >,
    Option<
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(portico_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let log = |e: tonic_reflection::server::Error| {
        tracing::error!(%e, "reflection service could not be built");
    };
    let v1 = builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(log)
        .ok();
    let v1alpha = builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(log)
        .ok();
    (v1, v1alpha)
}
