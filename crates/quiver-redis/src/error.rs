//! The error type of `quiver-redis`.

use std::path::PathBuf;

use quiver_online::OnlineError;

/// Result alias with [`RedisStoreError`].
pub type Result<T, E = RedisStoreError> = std::result::Result<T, E>;

/// Errors of the Redis online store.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// Settings that cannot work (no nodes, a TLS file that is not PEM).
    #[error("redis online store: {0}")]
    Config(String),
    /// A TLS file could not be read.
    #[error("redis online store: {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Redis answered with an error, or could not be reached.
    #[error("redis online store {store}: {source}")]
    Redis {
        /// The nodes, for messages.
        store: String,
        /// What the client or the server said.
        source: redis::RedisError,
    },
    /// Redis answered something the store did not write.
    #[error("redis online store {store}: unexpected answer: {message}")]
    Unexpected {
        /// The nodes, for messages.
        store: String,
        /// What was wrong.
        message: String,
    },
    /// The replicas did not confirm the writes in time.
    #[error("redis online store {store}: {message}")]
    NotReplicated {
        /// The nodes, for messages.
        store: String,
        /// Which node and how far behind.
        message: String,
    },
    /// The store's own runtime failed (a task panicked or was cancelled).
    #[error("redis online store: {0}")]
    Runtime(String),
}

impl RedisStoreError {
    /// Whether retrying later may succeed (a node down, a failover, a timeout).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Redis { source, .. } => {
                !matches!(source.retry_method(), redis::RetryMethod::NoRetry)
                    || source.is_timeout()
                    || source.is_io_error()
                    || is_partial_answer(source)
            }
            Self::NotReplicated { .. } | Self::Runtime(_) => true,
            Self::Config(_) | Self::File { .. } | Self::Unexpected { .. } => false,
        }
    }
}

/// A command split across slots (`MGET` of a cluster) of which one part failed: the client
/// reports the parts' answers as not adding up, during a failover for instance.
fn is_partial_answer(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Client && e.to_string().contains("multi-slot results")
}

impl From<RedisStoreError> for OnlineError {
    fn from(e: RedisStoreError) -> Self {
        match &e {
            RedisStoreError::Config(_) | RedisStoreError::File { .. } => {
                OnlineError::FailedPrecondition(e.to_string())
            }
            RedisStoreError::Redis { store, source } if e.is_transient() => {
                OnlineError::Unavailable {
                    store: store.clone(),
                    message: source.to_string(),
                }
            }
            RedisStoreError::NotReplicated { store, message } => OnlineError::Unavailable {
                store: store.clone(),
                message: message.clone(),
            },
            RedisStoreError::Runtime(message) => OnlineError::Unavailable {
                store: "redis".into(),
                message: message.clone(),
            },
            RedisStoreError::Redis { store, source } => OnlineError::Remote {
                store: store.clone(),
                message: source.to_string(),
            },
            RedisStoreError::Unexpected { store, message } => OnlineError::Remote {
                store: store.clone(),
                message: message.clone(),
            },
        }
    }
}
