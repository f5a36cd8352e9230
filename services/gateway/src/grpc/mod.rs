//! The gRPC door: tonic services over the same [`crate::app`] functions as REST, plus
//! `grpc.health.v1` (Kubernetes probes) and reflection (grpcurl discovery).

pub mod bulk_orders;
pub mod events;
pub mod integrations;
pub mod observe;
pub mod webhooks;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::auth::{Caller, authenticate};
use crate::error::ApiError;
use crate::state::AppState;

/// Authenticates a gRPC call from its metadata, exactly as REST does from headers.
pub async fn caller<T>(state: &AppState, request: &Request<T>) -> Result<Caller, ApiError> {
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

/// Serves gRPC on `listener` until `shutdown`, then lets in-flight calls finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<portico_proto::v1::event_service_server::EventServiceServer<events::GrpcEventService>>()
        .await;
    health
        .set_serving::<portico_proto::v1::webhook_service_server::WebhookServiceServer<
            webhooks::GrpcWebhookService,
        >>()
        .await;
    health
        .set_serving::<portico_proto::v1::bulk_order_service_server::BulkOrderServiceServer<
            bulk_orders::GrpcBulkOrderService,
        >>()
        .await;
    health
        .set_serving::<portico_proto::v1::integration_service_server::IntegrationServiceServer<
            integrations::GrpcIntegrationService,
        >>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(portico_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            tracing::error!(%e, "reflection service could not be built");
            e
        });
    let timeout = Duration::from_millis(state.config().request_timeout_ms);
    let mut builder = tonic::transport::Server::builder()
        .timeout(timeout)
        .layer(observe::ObserveLayer);
    let router = builder
        .add_service(health_service)
        .add_service(events::server(state.clone()))
        .add_service(webhooks::server(state.clone()))
        .add_service(bulk_orders::server(state.clone()))
        .add_service(integrations::server(state.clone()))
        .add_optional_service(reflection.ok());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let drain = shutdown.clone();
    router
        .serve_with_incoming_shutdown(incoming, async move {
            drain.cancelled().await;
            health
                .set_not_serving::<portico_proto::v1::event_service_server::EventServiceServer<
                    events::GrpcEventService,
                >>()
                .await;
        })
        .await
}
