//! The error type of `quiver-source`.

use std::path::PathBuf;

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`SourceError`].
pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// Errors reading or writing a source's Parquet files. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source path names no file, folder or glob match.
    #[error("{path}: {message}")]
    NotFound {
        /// The path as resolved under the data root, or the URL.
        path: String,
        /// What is missing.
        message: String,
    },
    /// A folder of the source is reached twice (a symlink loop, or two links to one folder):
    /// its files would be read more than once.
    #[error(
        "{}: this folder is the same folder as {} (a symlink loop or a second link to it); a source must reach each folder once",
        path.display(),
        first.display()
    )]
    FolderReachedTwice {
        /// The second way the folder was reached.
        path: PathBuf,
        /// The first way.
        first: PathBuf,
    },
    /// A file that is not usable: not Parquet, a missing column, a column of the wrong type.
    #[error("source '{source_name}' ({file}): {message}")]
    Data {
        /// The source.
        source_name: String,
        /// The file or object.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A source that cannot take new files: its path is a file or a glob, not a folder.
    #[error(
        "source '{source_name}': its path '{path}' is not a folder; make it a folder of Parquet files to append rows offline"
    )]
    NotAFolder {
        /// The source.
        source_name: String,
        /// Its path as defined.
        path: String,
    },
    /// Rows that cannot be appended to the source as given.
    #[error("source '{source_name}': {message}")]
    InvalidRows {
        /// The source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A path that leaves the data root (absolute, `..`, or through a symlink), or names
    /// something other than a regular file or folder. The message says nothing about what is
    /// outside the root.
    #[error(
        "'{path}' is not a file or folder under the data root; sources, entity files and push targets must be"
    )]
    OutsideDataRoot {
        /// The path as it was given.
        path: String,
    },
    /// A file that would be replaced, when replacing was not asked for.
    #[error("'{path}' exists already (allow overwriting it to replace it)")]
    Exists {
        /// The path as it was given.
        path: String,
    },
    /// An object could not be listed, read or written.
    #[error(transparent)]
    Storage(#[from] quiver_storage::StorageError),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl SourceError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

impl HasKind for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. }
            | Self::FolderReachedTwice { .. }
            | Self::Data { .. }
            | Self::NotAFolder { .. } => ErrorKind::FailedPrecondition,
            Self::InvalidRows { .. } => ErrorKind::InvalidArgument,
            Self::OutsideDataRoot { .. } => ErrorKind::PermissionDenied,
            Self::Exists { .. } => ErrorKind::AlreadyExists,
            Self::Storage(e) => e.kind(),
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}
