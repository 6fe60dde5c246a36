//! The error type of `quiver-registry`.

use std::fmt;
use std::path::PathBuf;

use quiver_core::{ErrorKind, HasKind};

/// Result alias with [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// One problem found in a feature repository, located by file, line and object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// File, relative to the repository.
    pub file: PathBuf,
    /// 1-based line, or 0 when unknown.
    pub line: usize,
    /// The object, e.g. `feature view 'driver_stats'`, when the problem belongs to one.
    pub object: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors of the registry: invalid definitions, conflicts, storage.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository's definitions are invalid; every problem found is listed.
    #[error("{} error(s) in the feature repository:\n{}", .0.len(), render(.0))]
    Invalid(Vec<Diagnostic>),
    /// Another apply created the version this apply was about to create.
    #[error(
        "conflict: the registry of project '{project}' moved to version {current} while this apply was based on version {based_on}; run plan again and re-apply"
    )]
    Conflict {
        /// Project.
        project: String,
        /// The version this apply started from.
        based_on: u64,
        /// The version now in the registry.
        current: u64,
    },
    /// A registry version that does not exist.
    #[error("project '{project}' has no registry version {version}")]
    UnknownVersion {
        /// Project.
        project: String,
        /// The missing version.
        version: u64,
    },
    /// An apply based on a version the registry does not have yet.
    #[error(
        "project '{project}' has no registry version {based_on} to apply on (its latest version is {latest})"
    )]
    UnknownBase {
        /// Project.
        project: String,
        /// The version the apply named.
        based_on: u64,
        /// The latest version.
        latest: u64,
    },
    /// The project has never been applied.
    #[error("project '{0}' has no registry version yet; run `quiver apply` first")]
    Empty(String),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A registry in object storage could not be read or written.
    #[error(transparent)]
    Storage(#[from] quiver_storage::StorageError),
    /// The object storage server does not keep a guarantee the registry relies on.
    #[error(
        "{url}: the object storage server does not honour create-if-absent writes (PUT with If-None-Match: *), so two applies could both win; keep the registry on a server that does (AWS S3, MinIO, SeaweedFS, R2) or on a local folder"
    )]
    NoConditionalWrites {
        /// The registry's URL.
        url: String,
    },
    /// A source's data cannot be used: missing, unreadable, or inconsistent files.
    #[error(transparent)]
    Source(#[from] quiver_source::SourceError),
    /// A stored registry object that cannot be decoded.
    #[error("{}: corrupt registry object: {message}", path.display())]
    Corrupt {
        /// Path of the object.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// An object model error (unknown view, bad reference, ...).
    #[error(transparent)]
    Core(#[from] quiver_core::CoreError),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl HasKind for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidArgument,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::UnknownBase { .. } => ErrorKind::FailedPrecondition,
            Self::UnknownVersion { .. } | Self::Empty(_) => ErrorKind::NotFound,
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::Source(e) => e.kind(),
            Self::Storage(e) => e.kind(),
            Self::NoConditionalWrites { .. } => ErrorKind::FailedPrecondition,
            Self::Corrupt { .. } => ErrorKind::Internal,
            Self::Core(e) => e.kind(),
        }
    }
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
