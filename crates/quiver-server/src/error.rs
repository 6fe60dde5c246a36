//! The error type of `quiver-server`, and the one place library errors become protocol
//! statuses: gRPC codes and HTTP statuses, both from the error's [`ErrorKind`].

use quiver_core::{ErrorKind, HasKind};
use tonic::{Code, Status};

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
    /// An operation failed (opening the repository, the online store).
    #[error(transparent)]
    Ops(#[from] quiver_ops::OpsError),
    /// A transport failure.
    #[error("server: {0}")]
    Transport(String),
}

/// The gRPC code of an error kind.
pub fn grpc_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::StorageFull => Code::ResourceExhausted,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::LimitExceeded => Code::ResourceExhausted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The HTTP status of an error kind.
pub fn http_status(kind: ErrorKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition => S::BAD_REQUEST,
        ErrorKind::NotFound => S::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => S::CONFLICT,
        ErrorKind::Unavailable => S::SERVICE_UNAVAILABLE,
        ErrorKind::StorageFull => S::INSUFFICIENT_STORAGE,
        ErrorKind::Unimplemented => S::NOT_IMPLEMENTED,
        // nginx's "client closed request".
        ErrorKind::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        ErrorKind::LimitExceeded => S::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthenticated => S::UNAUTHORIZED,
        ErrorKind::PermissionDenied => S::FORBIDDEN,
        ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

/// An error as a gRPC status: its kind's code and its message.
pub fn status<E: HasKind + std::fmt::Display + ?Sized>(e: &E) -> Status {
    Status::new(grpc_code(e.kind()), e.to_string())
}

/// The kind of a gRPC status, for answering a status over HTTP.
pub(crate) fn kind_of_code(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::Aborted | Code::AlreadyExists => ErrorKind::Conflict,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::ResourceExhausted => ErrorKind::StorageFull,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Internal,
    }
}

/// The status of an operation that failed to run (a blocking task that panicked).
pub(crate) fn join_status(e: &tokio::task::JoinError) -> Status {
    Status::internal(format!("the request's task failed: {e}"))
}
