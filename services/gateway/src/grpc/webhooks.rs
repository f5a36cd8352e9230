//! gRPC methods of this capability, thin adapters over [`crate::app`].

use portico_proto::v1::webhook_service_server::{WebhookService, WebhookServiceServer};

use crate::state::AppState;

/// The gRPC service; methods not implemented here answer UNIMPLEMENTED.
pub struct GrpcWebhookService {
    #[allow(dead_code)]
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> WebhookServiceServer<GrpcWebhookService> {
    WebhookServiceServer::new(GrpcWebhookService { state })
}

#[tonic::async_trait]
impl WebhookService for GrpcWebhookService {}
