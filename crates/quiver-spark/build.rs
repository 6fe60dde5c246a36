//! Compiles the Spark Connect protocol (`proto/spark/connect`, Apache Spark's own definitions)
//! into a client with the pure-Rust protox (no system `protoc`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.join("spark").display());
    let fds = protox::compile([proto.join("spark/connect/base.proto")], [&proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
