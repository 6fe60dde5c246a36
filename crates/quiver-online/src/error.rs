//! The error type of `quiver-online`.

use std::path::{Path, PathBuf};

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`OnlineError`].
pub type Result<T, E = OnlineError> = std::result::Result<T, E>;

/// Errors of the online store, online reads and materialization.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// Another process holds the store (RocksDB's lock).
    #[error("online store {} is held by another process", path.display())]
    Locked {
        /// The store's folder.
        path: PathBuf,
    },
    /// The disk is full: nothing of the write that failed was stored.
    #[error("online store {}: no space left on device ({message})", path.display())]
    StorageFull {
        /// The store's folder.
        path: PathBuf,
        /// RocksDB's message.
        message: String,
    },
    /// The store cannot answer right now; retrying later may succeed.
    #[error("online store {store}: {message}")]
    Unavailable {
        /// The store (a folder, addresses).
        store: String,
        /// Why.
        message: String,
    },
    /// A remote store answered with an error that retrying will not fix.
    #[error("online store {store}: {message}")]
    Remote {
        /// The store's addresses.
        store: String,
        /// The store's message.
        message: String,
    },
    /// RocksDB failed.
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
    /// A request that names something the view cannot do (materializing an offline view).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller cancelled the operation.
    #[error("cancelled")]
    Cancelled,
    /// Source data that cannot be read or materialized.
    #[error(transparent)]
    Source(#[from] quiver_source::SourceError),
    /// An object model error (unknown view, feature, bad key value).
    #[error(transparent)]
    Core(#[from] quiver_core::CoreError),
}

impl OnlineError {
    pub(crate) fn rocksdb(path: &Path, e: rocksdb::Error) -> Self {
        let message = e.into_string();
        let path = path.to_path_buf();
        // Another process: "While lock file: …/LOCK: Resource temporarily unavailable";
        // this process: "lock hold by current process … /LOCK: No locks available".
        if message.contains("While lock file") || message.contains("lock hold by current process") {
            Self::Locked { path }
        } else if message.contains("No space left") || message.contains("NoSpace") {
            Self::StorageFull { path, message }
        } else {
            Self::RocksDb { path, message }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

impl HasKind for OnlineError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Locked { .. } | Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::StorageFull { .. } => ErrorKind::StorageFull,
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::RocksDb { .. } | Self::Remote { .. } | Self::CorruptRow(_) | Self::Corrupt(_) => {
                ErrorKind::Internal
            }
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Source(e) => e.kind(),
            Self::Core(e) => e.kind(),
        }
    }
}
