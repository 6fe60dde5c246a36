//! The error type of `quiver-spark`.

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`SparkError`].
pub type Result<T, E = SparkError> = std::result::Result<T, E>;

/// Errors of work on a Spark cluster. Each names the cluster, and the view when one failed.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    /// `offline_engine.connect` is not a Spark Connect URL.
    #[error("offline_engine.connect '{url}': {message}")]
    Settings {
        /// The URL as written.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The cluster could not be reached or went away.
    #[error("Spark cluster {cluster} is unreachable: {message}")]
    Unreachable {
        /// The Spark Connect endpoint.
        cluster: String,
        /// Cause.
        message: String,
    },
    /// The cluster refused or failed a query: an analysis error, a failed stage, a missing
    /// file.
    #[error("Spark cluster {cluster}{}: {message}", view.as_ref().map(|v| format!(", feature view '{v}'")).unwrap_or_default())]
    Failed {
        /// The Spark Connect endpoint.
        cluster: String,
        /// The feature view whose query failed, if one.
        view: Option<String>,
        /// Spark's message.
        message: String,
    },
    /// A source the cluster cannot read as Quiver does (its message says why).
    #[error("feature view '{view}' cannot run on Spark: {message}")]
    Unsupported {
        /// The feature view.
        view: String,
        /// Why.
        message: String,
    },
    /// The entity rows could not be staged for the cluster (`offline_engine.staging`).
    #[error("staging the entity rows in {}: {message}", path.display())]
    Staging {
        /// The file being written.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The request was cancelled; its Spark jobs were interrupted.
    #[error("cancelled")]
    Cancelled,
    /// The training set request itself is invalid (checked as the native engine checks it).
    #[error(transparent)]
    Offline(#[from] quiver_offline::OfflineError),
    /// A source could not be listed or its schema read.
    #[error(transparent)]
    Source(#[from] quiver_source::SourceError),
    /// Arrow failed encoding the entity rows or decoding Spark's answer.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl HasKind for SparkError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Settings { .. } | Self::Unsupported { .. } | Self::Staging { .. } => {
                ErrorKind::FailedPrecondition
            }
            Self::Unreachable { .. } => ErrorKind::Unavailable,
            Self::Failed { .. } => ErrorKind::FailedPrecondition,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Offline(e) => e.kind(),
            Self::Source(e) => e.kind(),
            Self::Arrow(_) => ErrorKind::Internal,
        }
    }
}

impl SparkError {
    /// The server no longer has the session: it expired, was released, or the server
    /// restarted. A new session may do the work.
    pub(crate) fn session_gone(&self) -> bool {
        matches!(self, Self::Failed { message, .. } if message.contains("INVALID_HANDLE.SESSION_"))
    }
}
