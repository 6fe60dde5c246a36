//! The error type of `quiver-core`.

use crate::types::KeyType;

/// Result alias with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// What kind of failure an error is, whatever protocol reports it. Every library error of the
/// workspace knows its kind ([`HasKind`]); each protocol maps kinds to its own statuses once,
/// at its edge (gRPC codes, HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something the wrong way (a bad type, a bad value).
    InvalidArgument,
    /// A named object does not exist (a feature view, a feature, a registry version).
    NotFound,
    /// What the request would create exists already (a saved dataset's file).
    AlreadyExists,
    /// Someone else changed the state the request was based on (a concurrent apply).
    Conflict,
    /// The request is valid but the system is not in a state to run it (a source whose files
    /// vanished, a view that is not online, a store held by another process).
    FailedPrecondition,
    /// A transient failure: retrying later may succeed.
    Unavailable,
    /// The disk (or another storage resource) is full; nothing was written.
    StorageFull,
    /// The operation is not supported.
    Unimplemented,
    /// The operation was cancelled by its caller.
    Cancelled,
    /// The request exceeds one of the server's limits (rows, bytes, connections); the error
    /// names the limit and its value.
    LimitExceeded,
    /// The caller has no (valid) credentials.
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    PermissionDenied,
    /// A bug or a broken invariant on the server's side.
    Internal,
}

/// An error that knows its [`ErrorKind`].
pub trait HasKind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

impl ErrorKind {
    /// The kind of an I/O error: a full disk is [`ErrorKind::StorageFull`], everything else
    /// [`ErrorKind::Internal`].
    pub fn of_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Self::StorageFull
            }
            _ => Self::Internal,
        }
    }
}

/// Errors from parsing and resolving Quiver objects. Each names the offending value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// A type name that is not one of Quiver's value types.
    #[error(
        "unknown type '{0}' (expected bool, int32, int64, float32, float64, string, bytes, timestamp or list<...> of one of these)"
    )]
    InvalidType(String),
    /// A join-key type that is not int32, int64, string or bytes.
    #[error("invalid join key type '{0}' (expected int32, int64, string or bytes)")]
    InvalidKeyType(String),
    /// A malformed duration.
    #[error("invalid duration '{0}' (expected e.g. 0, 90s, 15m, 36h, 1d, 2w or 1d12h)")]
    InvalidDuration(String),
    /// A malformed time.
    #[error(
        "invalid time '{0}' (expected RFC 3339 like 2024-01-01T00:00:00Z, a date like 2024-01-01, or now)"
    )]
    InvalidTime(String),
    /// A time outside the range of nanosecond instants.
    #[error("time '{0}' is outside the range Quiver stores (1677-09-21 to 2262-04-11 UTC)")]
    TimeOutOfRange(String),
    /// A malformed selection of data to profile.
    #[error(
        "invalid data selection '{0}' (expected a window START..END of times or now-PERIOD, a period like 7d for the last 7 days, or a Parquet file or folder under the data root)"
    )]
    InvalidSelection(String),
    /// An offline engine that is not `native` or `spark`.
    #[error("unknown offline engine '{0}' (expected native or spark)")]
    InvalidEngine(String),
    /// The Spark engine was asked for but `offline_engine` is not Spark.
    #[error(
        "the Spark engine is not configured: set offline_engine: {{type: spark, connect: sc://host:port}} in quiver.yaml"
    )]
    EngineNotConfigured,
    /// A unit of integer times that is not `s`, `ms`, `us` or `ns`.
    #[error("invalid timestamp unit '{0}' (expected s, ms, us or ns)")]
    InvalidTimestampUnit(String),
    /// A malformed feature reference.
    #[error("invalid feature reference '{0}' (expected view:feature or view:*)")]
    InvalidFeatureRef(String),
    /// A feature view that does not exist.
    #[error("unknown feature view '{0}'")]
    UnknownFeatureView(String),
    /// A feature service that does not exist.
    #[error("unknown feature service '{0}'")]
    UnknownFeatureService(String),
    /// An entity that does not exist.
    #[error("unknown entity '{0}'")]
    UnknownEntity(String),
    /// A feature that its view does not have.
    #[error("unknown feature '{view}:{feature}'")]
    UnknownFeature {
        /// The view.
        view: String,
        /// The missing feature.
        feature: String,
    },
    /// Two requested features would produce the same output column.
    #[error(
        "two requested features have the output name '{0}'; request full feature names (view__feature) or drop one"
    )]
    DuplicateOutputName(String),
    /// An entity key with a value for a join key the view does not have.
    #[error("unknown join key '{0}'")]
    UnknownJoinKey(String),
    /// An entity key without a value for one of the view's join keys.
    #[error("missing join key '{0}'")]
    MissingJoinKey(String),
    /// An entity key with two values for one join key.
    #[error("join key '{0}' given twice")]
    DuplicateJoinKey(String),
    /// A join-key value that cannot be converted to the declared type.
    #[error("join key '{key}': expected {expected}, got {got}")]
    JoinKeyType {
        /// The join key.
        key: String,
        /// Its declared type.
        expected: KeyType,
        /// What was sent.
        got: String,
    },
    /// A string or bytes key longer than 4 GiB.
    #[error("join key '{0}' is too long")]
    JoinKeyTooLong(String),
}

impl HasKind for CoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownFeatureView(_)
            | Self::UnknownFeatureService(_)
            | Self::UnknownFeature { .. }
            | Self::UnknownEntity(_) => ErrorKind::NotFound,
            Self::EngineNotConfigured => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        }
    }
}
