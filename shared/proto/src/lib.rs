//! The Portico gRPC contract, generated from `proto/portico/v1/*.proto`.
//!
//! The `.proto` files are the contract document for internal services (calling
//! identity, error codes and field semantics are described there); this crate only
//! turns them into Rust: prost messages and tonic clients and servers for
//! `WebhookService`, `EventService`, `BulkOrderService` and `IntegrationService`.
//!
//! The files are compiled at build time by [protox](https://docs.rs/protox), a
//! pure-Rust protobuf compiler, so building needs no system `protoc` and no C
//! toolchain; the only build-time network access is the crate registry.

/// Package `portico.v1`: messages, enums, `*_client` and `*_server` modules.
// Generated code: clippy flags e.g. `large_enum_variant` on oneofs; not ours to style.
#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("portico.v1");
}

/// Encoded `FileDescriptorSet` of every Portico `.proto` file (with their imports),
/// for registering with `tonic-reflection` so grpcurl-style tools can discover the
/// services.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("portico_descriptor");
