//! Compiles the gRPC contract in `proto/portico/v1/` with protox (pure Rust, no
//! system `protoc`), writes the encoded descriptor set for gRPC reflection, and
//! generates prost messages plus tonic clients and servers.

use prost::Message;
use std::path::PathBuf;

// A slice, not a fixed-size array: adding a file is one line.
const PROTO_FILES: &[&str] = &[
    "portico/v1/common.proto",
    "portico/v1/webhooks.proto",
    "portico/v1/events.proto",
    "portico/v1/bulk_orders.proto",
    "portico/v1/integrations.proto",
    "portico/v1/integration_templates.proto",
    "portico/v1/analytics.proto",
    "portico/v1/live.proto",
    "portico/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::compile(PROTO_FILES, [&root])?;

    // tonic-prost-build does not write the descriptor set itself; reflection needs it.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("portico_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Methods a service does not implement yet answer UNIMPLEMENTED instead of
        // forcing placeholder code that could pretend to work.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
