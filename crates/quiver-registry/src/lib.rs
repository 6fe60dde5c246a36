//! Feature repositories and Quiver's versioned registry.
//!
//! - [`config`]: `quiver.yaml` ([`RepoConfig`]).
//! - [`definitions`]: finding, parsing and validating definition files; every problem is
//!   reported at once with file, line and object ([`load_definitions`]).
//! - [`plan`]: the diff between two sets of definitions, with breaking changes ([`Plan`]).
//! - [`store`]: the append-only log of immutable registry versions ([`Registry`]).
//!
//! ```no_run
//! use std::path::Path;
//! use quiver_registry::{Plan, Registry, RepoConfig, load_definitions};
//! use quiver_source::Sources;
//!
//! let repo = Path::new("my_repo");
//! let config = RepoConfig::load(repo)?;
//! let definitions = load_definitions(repo, &config, &config.sources(repo))?;
//! let registry = Registry::open_local(&config.registry_path(repo), &config.project);
//! let current = registry.latest()?;
//! let plan = Plan::between(
//!     current.as_ref().map(|v| &v.definitions).unwrap_or(&Default::default()),
//!     &definitions,
//! );
//! if !plan.is_empty() {
//!     registry.commit(current.map(|v| v.version), definitions, "me")?;
//! }
//! # Ok::<_, quiver_registry::RegistryError>(())
//! ```

pub mod config;
pub mod definitions;
pub mod error;
pub mod plan;
pub mod store;

pub use config::{
    AuthConfig, CONFIG_FILE, OidcConfig, OnlineStoreConfig, PushConfig, RedisConfig, RedisTls,
    RepoConfig, RocksDbConfig, Secret, ServerConfig, ServerLimits, ServerTls, TokenEntry,
    load_tokens,
};
pub use definitions::{
    definition_files, definitions_file, is_valid_name, load_definitions, validate_files,
};
pub use error::{Diagnostic, RegistryError, Result};
pub use plan::{Action, Change, Plan};
pub use store::{BlobStore, LocalBlobStore, ObjectBlobStore, Registry, RegistryVersion};
