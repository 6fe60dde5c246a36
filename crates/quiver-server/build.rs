//! Compiles `proto/` with the pure-Rust protox (no system `protoc`) and keeps the encoded
//! descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "quiver/v1/online.proto",
    "quiver/v1/registry.proto",
    "quiver/v1/operations.proto",
    "feast/types/Value.proto",
    "feast/serving/ServingService.proto",
    "feast/core/Registry.proto",
    "feast/registry/RegistryServer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile(FILES.iter().map(|f| proto.join(f)), [&proto])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
