//! `quiver.yaml`: a feature repository's settings.

use std::path::{Path, PathBuf};

use quiver_core::Period;
use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, RegistryError, Result};

/// File name of a repository's settings.
pub const CONFIG_FILE: &str = "quiver.yaml";

/// Settings of a feature repository, from its `quiver.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Project name: the namespace of every object and online key.
    pub project: String,
    /// Registry folder, relative to the repository (default `registry`).
    #[serde(default = "default_registry")]
    pub registry: String,
    /// Folder that source paths are relative to, relative to the repository (default `.`).
    #[serde(default = "default_data_root")]
    pub data_root: String,
    /// Online store settings.
    #[serde(default)]
    pub online_store: OnlineStoreConfig,
    /// `quiver serve` settings (environment variables and flags override them).
    #[serde(default)]
    pub server: ServerConfig,
    /// The materialization schedule of online views that declare none (none by default).
    #[serde(default)]
    pub materialization: Option<quiver_core::Schedule>,
    /// How pushed rows are checked and stored.
    #[serde(default)]
    pub push: PushConfig,
}

/// Settings of pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Pushed event times later than now plus this are refused (default 1h).
    #[serde(default = "default_max_future")]
    pub max_future: Period,
    /// A folder source holding this many small pushed files gets them merged (default 64).
    #[serde(default = "default_compact_after_files")]
    pub compact_after_files: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            max_future: default_max_future(),
            compact_after_files: default_compact_after_files(),
        }
    }
}

fn default_max_future() -> Period {
    Period(std::time::Duration::from_secs(3600))
}
fn default_compact_after_files() -> usize {
    64
}

/// Where `quiver serve` listens; unset values take the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default loopback).
    #[serde(default)]
    pub host: Option<String>,
    /// Online gRPC port.
    #[serde(default)]
    pub grpc_port: Option<u16>,
    /// Arrow Flight port.
    #[serde(default)]
    pub flight_port: Option<u16>,
    /// HTTP/JSON port.
    #[serde(default)]
    pub http_port: Option<u16>,
}

/// Settings of the embedded online store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineStoreConfig {
    /// Store folder, relative to the repository (default `online_store`).
    #[serde(default = "default_online_path")]
    pub path: String,
    /// Block cache size in MiB (default 256).
    #[serde(default = "default_block_cache_mb")]
    pub block_cache_mb: u64,
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        Self {
            path: default_online_path(),
            block_cache_mb: default_block_cache_mb(),
        }
    }
}

fn default_registry() -> String {
    "registry".into()
}
fn default_data_root() -> String {
    ".".into()
}
fn default_online_path() -> String {
    "online_store".into()
}
fn default_block_cache_mb() -> u64 {
    256
}

impl RepoConfig {
    /// Reads `quiver.yaml` from a repository folder.
    pub fn load(repo: &Path) -> Result<Self> {
        let path = repo.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(RegistryError::io(&path))?;
        Self::parse(&text)
    }

    /// Parses the text of a `quiver.yaml`.
    pub fn parse(text: &str) -> Result<Self> {
        let diagnostic = |line, message| {
            RegistryError::Invalid(vec![Diagnostic {
                file: CONFIG_FILE.into(),
                line,
                object: None,
                message,
            }])
        };
        let node = marked_yaml::parse_yaml(0, text).map_err(|e| {
            diagnostic(
                crate::definitions::load_error_line(&e),
                format!("invalid YAML: {e}"),
            )
        })?;
        let config: Self = crate::definitions::decode_node(&node)
            .map_err(|(line, message)| diagnostic(line, message))?;
        if !crate::definitions::is_valid_name(&config.project) {
            return Err(diagnostic(
                1,
                format!(
                    "invalid project name '{}': use letters, digits, '_' and '-', starting with a letter",
                    config.project
                ),
            ));
        }
        Ok(config)
    }

    /// Absolute registry folder for a repository at `repo`.
    pub fn registry_path(&self, repo: &Path) -> PathBuf {
        repo.join(&self.registry)
    }

    /// Absolute data root for a repository at `repo`.
    pub fn data_root(&self, repo: &Path) -> PathBuf {
        repo.join(&self.data_root)
    }

    /// Absolute online store folder for a repository at `repo`.
    pub fn online_store_path(&self, repo: &Path) -> PathBuf {
        repo.join(&self.online_store.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let c = RepoConfig::parse("project: demo\n").unwrap();
        assert_eq!(c.registry, "registry");
        assert_eq!(c.online_store.block_cache_mb, 256);
        assert_eq!(c.server, ServerConfig::default());
        let c = RepoConfig::parse("project: demo\nserver: {grpc_port: 7000}\n").unwrap();
        assert_eq!(c.server.grpc_port, Some(7000));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = RepoConfig::parse("project: demo\nregistyr: x\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("quiver.yaml:2"), "{text}");
        assert!(text.contains("registyr"), "{text}");
    }
}
