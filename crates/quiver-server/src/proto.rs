//! Generated gRPC code (see `build.rs` and `proto/`).
#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// Quiver's own API.
pub mod quiver {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("quiver.v1");
    }
}

/// Feast's protocols, wire-compatible.
pub mod feast {
    /// `feast.types`.
    pub mod types {
        tonic::include_proto!("feast.types");
    }
    /// `feast.serving`.
    pub mod serving {
        tonic::include_proto!("feast.serving");
    }
    /// `feast.core`: registry objects.
    pub mod core {
        tonic::include_proto!("feast.core");
    }
    /// `feast.registry`: the registry service.
    pub mod registry {
        tonic::include_proto!("feast.registry");
    }
}

/// Every service's encoded file descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
