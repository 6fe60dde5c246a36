//! The error type of `quiver-storage`: every error names the URL, and the operation and
//! bucket when a request failed.

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Why a request to object storage failed, told apart so each gets its own message and
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No object at the URL.
    NotFound,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The credentials were refused, or none were found.
    Credentials,
    /// Known credentials without the permission.
    PermissionDenied,
    /// The server did not answer in time (after the retries).
    Timeout,
    /// The server asked to slow down (after the retries).
    Throttled,
    /// The server could not be reached (after the retries).
    Unreachable,
    /// The object exists and the write was create-if-absent.
    AlreadyExists,
    /// The object changed since it was listed (a conditional read).
    Changed,
    /// The server does not support a feature Quiver relies on.
    Unsupported,
    /// Anything else the server answered.
    Other,
}

/// Errors of object storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A URL that is not `<scheme>://<bucket>/<key>`.
    #[error("'{url}' is not a valid object URL: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A client for the bucket could not be made from the settings and the environment.
    #[error("{url}: cannot set up a client for bucket '{bucket}': {source}")]
    Client {
        /// The URL.
        url: String,
        /// Its bucket.
        bucket: String,
        /// Cause.
        source: Box<object_store::Error>,
    },
    /// A request failed.
    #[error("{url}: {operation} in bucket '{bucket}' failed: {}: {source}", describe(*failure))]
    Request {
        /// The URL.
        url: String,
        /// Its bucket.
        bucket: String,
        /// What was being done (`GET`, `PUT if absent`, `LIST`, ...).
        operation: &'static str,
        /// Why it failed.
        failure: Failure,
        /// The client's error.
        source: Box<object_store::Error>,
    },
}

fn describe(failure: Failure) -> &'static str {
    match failure {
        Failure::NotFound => "no such object",
        Failure::NoSuchBucket => "the bucket does not exist",
        Failure::Credentials => {
            "the credentials were refused or none were found (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or an instance role)"
        }
        Failure::PermissionDenied => "permission denied for these credentials",
        Failure::Timeout => "timed out (after retries)",
        Failure::Throttled => "throttled by the server (after retries)",
        Failure::Unreachable => "the server could not be reached (after retries)",
        Failure::AlreadyExists => "the object exists already",
        Failure::Changed => "the object was replaced while it was being read",
        Failure::Unsupported => "the server does not support this request",
        Failure::Other => "the server refused it",
    }
}

impl StorageError {
    /// Why a request failed, when one did.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Self::Request { failure, .. } => Some(*failure),
            _ => None,
        }
    }
}

/// Classifies a client error: the status code, the S3 error code in the body, or the
/// transport error kind.
pub(crate) fn classify(e: &object_store::Error) -> Failure {
    use object_store::Error as E;
    let text = chain_text(e);
    match e {
        E::NotFound { .. } if text.contains("NoSuchBucket") => Failure::NoSuchBucket,
        E::NotFound { .. } => Failure::NotFound,
        E::AlreadyExists { .. } => Failure::AlreadyExists,
        E::Precondition { .. } => Failure::Changed,
        E::Unauthenticated { .. } => Failure::Credentials,
        E::PermissionDenied { .. }
            if ["InvalidAccessKeyId", "SignatureDoesNotMatch"]
                .iter()
                .any(|c| text.contains(c)) =>
        {
            Failure::Credentials
        }
        E::PermissionDenied { .. } => Failure::PermissionDenied,
        E::NotImplemented { .. } | E::NotSupported { .. } => Failure::Unsupported,
        // No credentials in the environment: the chain's last resort, the instance metadata
        // service, refused or is absent.
        _ if text.contains("169.254.169.254") || text.contains("169.254.170.2") => {
            Failure::Credentials
        }
        _ if text.contains("NoSuchBucket") => Failure::NoSuchBucket,
        _ if text.contains("SlowDown")
            || text.contains("429 Too Many Requests")
            || text.contains("503 Service Unavailable") =>
        {
            Failure::Throttled
        }
        _ if http_kind(e) == Some(object_store::client::HttpErrorKind::Timeout) => Failure::Timeout,
        _ if http_kind(e) == Some(object_store::client::HttpErrorKind::Connect) => {
            Failure::Unreachable
        }
        _ if text.contains("credential") || text.contains("Credential") => Failure::Credentials,
        _ => Failure::Other,
    }
}

fn http_kind(e: &object_store::Error) -> Option<object_store::client::HttpErrorKind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            return Some(h.kind());
        }
        next = err.source();
    }
    None
}

fn chain_text(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        text.push_str(": ");
        text.push_str(&err.to_string());
        next = err.source();
    }
    text
}

impl HasKind for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. } => ErrorKind::InvalidArgument,
            Self::Client { .. } => ErrorKind::FailedPrecondition,
            Self::Request { failure, .. } => match failure {
                Failure::NotFound | Failure::NoSuchBucket => ErrorKind::FailedPrecondition,
                Failure::Credentials | Failure::PermissionDenied => ErrorKind::FailedPrecondition,
                Failure::Timeout | Failure::Throttled | Failure::Unreachable => {
                    ErrorKind::Unavailable
                }
                Failure::AlreadyExists => ErrorKind::AlreadyExists,
                Failure::Changed => ErrorKind::Conflict,
                Failure::Unsupported => ErrorKind::Unimplemented,
                Failure::Other => ErrorKind::Internal,
            },
        }
    }
}
