//! gRPC methods of this capability, thin adapters over [`crate::app`].

use portico_proto::v1::integration_service_server::{IntegrationService, IntegrationServiceServer};

use crate::state::AppState;

/// The gRPC service; methods not implemented here answer UNIMPLEMENTED.
pub struct GrpcIntegrationService {
    #[allow(dead_code)]
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> IntegrationServiceServer<GrpcIntegrationService> {
    IntegrationServiceServer::new(GrpcIntegrationService { state })
}

#[tonic::async_trait]
impl IntegrationService for GrpcIntegrationService {}
