//! The error type of `quiver-server`, and the one place errors become gRPC statuses.

use quiver_core::CoreError;
use quiver_offline::OfflineError;
use tonic::Status;

/// Result alias with [`ServerError`].
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// Errors of starting and running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] quiver_registry::RegistryError),
    /// The online store could not be opened.
    #[error(transparent)]
    Online(#[from] quiver_online::OnlineError),
    /// A transport failure.
    #[error("server: {0}")]
    Transport(String),
}

/// The status of an object-model error: unknown names are `NOT_FOUND`, the rest
/// `INVALID_ARGUMENT`.
pub(crate) fn core_status(e: &CoreError) -> Status {
    match e {
        CoreError::UnknownFeatureView(_)
        | CoreError::UnknownFeatureService(_)
        | CoreError::UnknownFeature { .. }
        | CoreError::UnknownEntity(_) => Status::not_found(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// The status of a training-set error.
pub(crate) fn offline_status(e: &OfflineError) -> Status {
    match e {
        OfflineError::Core(c) => core_status(c),
        OfflineError::InvalidRequest(m) => Status::invalid_argument(m.clone()),
        OfflineError::Source { .. } | OfflineError::Registry(_) => {
            Status::failed_precondition(e.to_string())
        }
        OfflineError::Spill { .. } | OfflineError::Arrow(_) => Status::internal(e.to_string()),
    }
}

/// The status of an online read or write error.
pub(crate) fn online_status(e: &quiver_online::OnlineError) -> Status {
    use quiver_online::OnlineError as E;
    match e {
        E::Core(c) => core_status(c),
        E::InvalidRequest(m) => Status::invalid_argument(m.clone()),
        E::Source { .. } | E::Registry(_) => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}
