//! The error type of `quiver-offline`.

use std::path::PathBuf;

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`OfflineError`].
pub type Result<T, E = OfflineError> = std::result::Result<T, E>;

/// Errors of training-set retrieval. Each names the column, view, feature or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A request over a limit; the message names it and its value.
    #[error("{0}")]
    LimitExceeded(String),
    /// A request that cannot be answered as asked: a bad entity table or feature list.
    #[error("{0}")]
    InvalidRequest(String),
    /// Source data that cannot be read (a vanished file, a column of the wrong type).
    #[error(transparent)]
    Source(#[from] quiver_source::SourceError),
    /// A spill file could not be written or read back.
    #[error("spill file {}: {source}", path.display())]
    Spill {
        /// The spill file or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Arrow failed while assembling the result.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An object model error (unknown view or feature, duplicate output name).
    #[error(transparent)]
    Core(#[from] quiver_core::CoreError),
}

impl HasKind for OfflineError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Self::Source(e) => e.kind(),
            Self::Spill { source, .. } => match ErrorKind::of_io(source) {
                ErrorKind::StorageFull => ErrorKind::StorageFull,
                _ => ErrorKind::Internal,
            },
            Self::Arrow(_) => ErrorKind::Internal,
            Self::Core(e) => e.kind(),
        }
    }
}

impl OfflineError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}
