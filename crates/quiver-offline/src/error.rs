//! The error type of `quiver-offline`.

use std::path::PathBuf;

/// Result alias with [`OfflineError`].
pub type Result<T, E = OfflineError> = std::result::Result<T, E>;

/// Errors of training-set retrieval. Each names the column, view, feature or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A request that cannot be answered as asked: a bad entity table or feature list.
    #[error("{0}")]
    InvalidRequest(String),
    /// Source data that cannot be read (a vanished file, a column of the wrong type).
    #[error("source '{source_name}' ({}): {message}", path.display())]
    Source {
        /// The source.
        source_name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
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
    /// A registry error (source files that cannot be found).
    #[error(transparent)]
    Registry(#[from] quiver_registry::RegistryError),
}

impl OfflineError {
    /// Whether the error is the caller's fault (a bad request), not the server's.
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, Self::InvalidRequest(_) | Self::Core(_))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}
