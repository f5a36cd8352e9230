//! gRPC methods of this capability, thin adapters over [`crate::app`].

use portico_proto::v1::bulk_order_service_server::{BulkOrderService, BulkOrderServiceServer};

use crate::state::AppState;

/// The gRPC service; methods not implemented here answer UNIMPLEMENTED.
pub struct GrpcBulkOrderService {
    #[allow(dead_code)]
    state: AppState,
}

/// Builds the tonic server for this service.
pub fn server(state: AppState) -> BulkOrderServiceServer<GrpcBulkOrderService> {
    BulkOrderServiceServer::new(GrpcBulkOrderService { state })
}

#[tonic::async_trait]
impl BulkOrderService for GrpcBulkOrderService {}
