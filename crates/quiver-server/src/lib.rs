//! Quiver's server: one process serving training sets over Arrow Flight, online features over
//! gRPC (Quiver's API and Feast's `ServingService`, with health checking and reflection) and
//! HTTP/JSON (Feast's feature-server endpoints), the registry (Quiver's API and Feast's
//! `RegistryServer`), materialization and the online store's administration over gRPC; it owns
//! the repository's online store.
//!
//! The only crate that knows tonic services. Every operation is `quiver-ops`'
//! [`quiver_ops::FeatureStore`]'s; the handlers translate messages, and errors become gRPC
//! and HTTP statuses in one place (`error`), from their kind.

mod codec;
pub mod connection;
mod error;
mod feast;
mod feast_offline;
mod feast_registry;
mod flight;
mod gate;
mod grpc;
mod jwks;
pub mod messages;
mod metrics;
mod online_wire;
pub mod proto;
mod registry_files;
mod server;

pub use codec::Codec;
pub use error::{Result, ServerError, grpc_code, http_status, status};
pub use feast::{FeastServing, http_router};
pub use feast_registry::FeastRegistry;
pub use flight::{TrainingSetService, UploadLimits};
pub use grpc::{MaterializationGrpc, OnlineGrpc, OnlineStoreGrpc, RegistryGrpc};
pub use online_wire::OnlineService;
pub use server::{
    BoundAddresses, DEFAULT_FLIGHT_PORT, DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, ServeOptions, serve,
    shutdown_signal,
};
