//! The error type of `quiver-online`.

use std::path::{Path, PathBuf};

/// Result alias with [`OnlineError`].
pub type Result<T, E = OnlineError> = std::result::Result<T, E>;

/// Errors of the online store, online reads and materialization.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// RocksDB failed (including "the store is locked by another process").
    #[error("online store {}: {message}", path.display())]
    RocksDb {
        /// The store's folder.
        path: PathBuf,
        /// RocksDB's message.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A stored row that cannot be decoded.
    #[error("corrupt online row: {0}")]
    CorruptRow(String),
    /// The store's structure is damaged.
    #[error("corrupt online store: {0}")]
    Corrupt(String),
    /// A request that cannot be answered as asked (unknown key, wrong type, bad shape).
    #[error("{0}")]
    InvalidRequest(String),
    /// Source data that cannot be materialized (a vanished file, a column of the wrong type).
    #[error("source '{source_name}' ({}): {message}", path.display())]
    Source {
        /// The source.
        source_name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An object model error (unknown view, feature, bad key value).
    #[error(transparent)]
    Core(#[from] quiver_core::CoreError),
    /// A registry error (source files that cannot be found).
    #[error(transparent)]
    Registry(#[from] quiver_registry::RegistryError),
}

impl OnlineError {
    pub(crate) fn rocksdb(path: &Path, e: rocksdb::Error) -> Self {
        Self::RocksDb {
            path: path.to_path_buf(),
            message: e.into_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Whether the error is the caller's fault (a bad request), not the server's.
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, Self::InvalidRequest(_) | Self::Core(_))
    }
}
