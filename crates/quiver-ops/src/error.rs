//! The error type of `quiver-ops`.

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`OpsError`].
pub type Result<T, E = OpsError> = std::result::Result<T, E>;

/// Errors of Quiver's operations. Each keeps its typed source and knows its [`ErrorKind`], so
/// every protocol reports it the same way.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A request that cannot be run as asked; the message names what is wrong.
    #[error("{0}")]
    InvalidRequest(String),
    /// A request over one of the limits; the message names the limit and its value.
    #[error("{0}")]
    LimitExceeded(String),
    /// A request without valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A caller the permissions do not allow this action.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A named thing that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A valid request the current state cannot run (a view that is not online).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] quiver_registry::RegistryError),
    /// The online store, an online read or a materialization failed.
    #[error(transparent)]
    Online(#[from] quiver_online::OnlineError),
    /// A training set failed.
    #[error(transparent)]
    Offline(#[from] quiver_offline::OfflineError),
    /// Work on the Spark cluster failed.
    #[error(transparent)]
    Spark(#[from] quiver_spark::SparkError),
    /// A source's files could not be read or written.
    #[error(transparent)]
    Source(#[from] quiver_source::SourceError),
    /// An object-model error (unknown view or feature, a bad key value).
    #[error(transparent)]
    Core(#[from] quiver_core::CoreError),
    /// A file of Quiver's own (a stored profile) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A background task failed to run (a panic, a runtime shutting down).
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpsError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}

impl HasKind for OpsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::Registry(e) => e.kind(),
            Self::Online(e) => e.kind(),
            Self::Offline(e) => e.kind(),
            Self::Spark(e) => e.kind(),
            Self::Source(e) => e.kind(),
            Self::Core(e) => e.kind(),
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                ErrorKind::StorageFull
            }
            Self::Io { .. } => ErrorKind::FailedPrecondition,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}
