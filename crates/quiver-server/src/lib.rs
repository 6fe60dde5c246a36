//! Quiver's server: one process serving training sets over Arrow Flight, online features over
//! gRPC (Quiver's API and Feast's `ServingService`, with health checking and reflection) and
//! HTTP/JSON (Feast's feature-server endpoints), and the registry over gRPC.
//!
//! The only crate that knows tonic services. Requests resolve features from the
//! [`Catalog`]'s in-memory registry snapshot, which follows new registry versions without a
//! restart; errors become gRPC statuses in one place (`error`).

mod catalog;
mod error;
mod feast;
mod flight;
mod grpc;
mod offline_append;
mod online;
pub mod proto;
mod registry_files;
mod server;

pub use catalog::{Catalog, Snapshot};
pub use error::{Result, ServerError};
pub use feast::{FeastServing, http_router};
pub use flight::TrainingSetService;
pub use grpc::{OnlineGrpc, RegistryGrpc};
pub use online::{Limits, Online};
pub use registry_files::RepoContext;
pub use server::{
    BoundAddresses, DEFAULT_FLIGHT_PORT, DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, ServeOptions, serve,
    shutdown_signal,
};
