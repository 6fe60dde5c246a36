//! `quiver.yaml`: a feature repository's settings.

use std::path::{Path, PathBuf};

use quiver_core::Period;
use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, RegistryError, Result};

/// File name of a repository's settings.
pub const CONFIG_FILE: &str = "quiver.yaml";

/// Settings of a feature repository, from its `quiver.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Project name: the namespace of every object and online key.
    pub project: String,
    /// Registry folder, relative to the repository (default `registry`), or a URL in object
    /// storage (`s3://bucket/registry`) that several machines share.
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
    /// Where training sets are computed unless a request says otherwise (native by default).
    #[serde(default)]
    pub offline_engine: quiver_core::OfflineEngine,
    /// Where `s3://`, `gs://` and `az://` sources, registries and outputs are served from
    /// (credentials come from the environment, never from here).
    #[serde(default)]
    pub object_storage: quiver_storage::StorageSettings,
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
    /// A port of its own for `GET /metrics`, without authentication (unset: only `/metrics`
    /// on the HTTP port).
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// `false` turns metrics off: nothing recorded per request, no `/metrics` (default on).
    #[serde(default)]
    pub metrics: Option<bool>,
    /// Request and connection limits (unset ones take the built-in defaults).
    #[serde(default)]
    pub limits: ServerLimits,
    /// TLS on every port (plaintext when unset).
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// How callers prove who they are (no authentication when unset).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The audit log file, relative to the repository (default `audit.log`).
    #[serde(default)]
    pub audit_log: Option<String>,
    /// How the reads of feature services with `logging:` are written.
    #[serde(default)]
    pub feature_log: FeatureLogSettings,
}

/// `server.feature_log`: how sampled reads are batched into files (unset ones take the
/// built-in defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLogSettings {
    /// A destination's waiting rows are written at least this often (default 1m).
    #[serde(default)]
    pub roll_every: Option<Period>,
    /// ... and once this many entity rows wait (default 100,000).
    #[serde(default)]
    pub roll_rows: Option<usize>,
    /// Sampled reads waiting to be written; more are dropped and counted (default 10,000).
    #[serde(default)]
    pub queue: Option<usize>,
}

/// `server.tls`: the server's certificate and, for mutual TLS, the CA its clients' certificates
/// must chain to. Paths are relative to the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate it signed.
    #[serde(default)]
    pub client_ca_file: Option<String>,
}

/// `server.auth`, by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    /// Every caller is anonymous.
    None,
    /// Bearer tokens listed (as SHA-256 hashes) in `tokens_file`, relative to the repository.
    Token {
        /// The tokens file (see [`TokenEntry`]).
        tokens_file: String,
    },
    /// OpenID Connect: JWTs of an identity provider (the settings Feast's `auth: type:
    /// oidc` has).
    Oidc(OidcConfig),
}

/// `server.auth: {type: oidc, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's discovery document (`.../.well-known/openid-configuration`): its
    /// `jwks_uri` gives the keys, its `issuer` the issuer tokens must name.
    #[serde(default)]
    pub auth_discovery_url: Option<String>,
    /// A JWKS file to take the keys from instead (relative to the repository).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The client whose roles are read from `resource_access.<client_id>.roles`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// When set, tokens must name it in `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// The issuer tokens must name (default: the discovery document's).
    #[serde(default)]
    pub issuer: Option<String>,
    /// How long fetched keys are used before they are fetched again (default 300).
    #[serde(default = "default_jwks_lifespan")]
    pub jwks_cache_lifespan_seconds: u64,
    /// How far token times may be off (default 60s).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: Period,
    /// PEM CA certificates to trust for an `https` provider (default: the system's).
    #[serde(default)]
    pub ca_cert_path: Option<String>,
}

fn default_jwks_lifespan() -> u64 {
    300
}

fn default_clock_skew() -> Period {
    Period(std::time::Duration::from_secs(60))
}

/// One token of a tokens file (`tokens: [...]`): only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token.
    pub principal: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Roles the principal has.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups the principal is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// When the token stops being accepted (RFC 3339); never when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

/// Reads a tokens file, naming the line of a bad entry.
pub fn load_tokens(path: &Path) -> Result<Vec<TokenEntry>> {
    let text = std::fs::read_to_string(path).map_err(RegistryError::io(path))?;
    let invalid = |line, message| {
        RegistryError::Invalid(vec![Diagnostic {
            file: path.to_path_buf(),
            line,
            object: None,
            message,
        }])
    };
    let node = marked_yaml::parse_yaml(0, &text).map_err(|e| {
        invalid(
            crate::definitions::load_error_line(&e),
            format!("invalid YAML: {e}"),
        )
    })?;
    let file: TokensFile =
        crate::definitions::decode_node(&node).map_err(|(line, message)| invalid(line, message))?;
    for t in &file.tokens {
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                0,
                format!(
                    "token of '{}': sha256 must be 64 hex digits (the SHA-256 of the token, from `quiver token create`)",
                    t.principal
                ),
            ));
        }
    }
    Ok(file.tokens)
}

/// `server.limits`: what one client may send or hold; each exceeded limit is an error that
/// names it and its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    /// Entity rows per online read or push (default 10,000); the largest gRPC and HTTP
    /// request follows from it.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Open connections per port (default 1,024, and never more than the open-file limit
    /// allows).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How long a new connection may take to send its first request (default 10s).
    #[serde(default)]
    pub header_timeout: Option<Period>,
    /// How long a connection may stay open with no request in flight (default 5m).
    #[serde(default)]
    pub idle_timeout: Option<Period>,
    /// Rows of one entity table uploaded over Arrow Flight (default 100,000,000).
    #[serde(default)]
    pub max_upload_rows: Option<usize>,
    /// MiB of one entity table uploaded over Arrow Flight (default 4,096).
    #[serde(default)]
    pub max_upload_mb: Option<usize>,
    /// MiB of entity tables uploaded with Feast's DoPut and waiting for their DoGet, all
    /// together (default 1,024).
    #[serde(default)]
    pub max_pending_upload_mb: Option<usize>,
}

/// Settings of the online store (`online_store:`), chosen by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawOnlineStore")]
pub enum OnlineStoreConfig {
    /// The embedded RocksDB store (`type: rocksdb`, the default): one process holds it.
    RocksDb(RocksDbConfig),
    /// Redis or Redis Cluster (`type: redis`): shared by every process of the repository.
    Redis(RedisConfig),
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        Self::RocksDb(RocksDbConfig::default())
    }
}

/// Settings of the embedded RocksDB store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Store folder, relative to the repository (default `online_store`).
    pub path: String,
    /// Block cache size in MiB (default 256).
    pub block_cache_mb: u64,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        Self {
            path: "online_store".into(),
            block_cache_mb: 256,
        }
    }
}

/// Settings of a Redis or Redis Cluster store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host:port` of one or more nodes (of a cluster, any of them: the rest are discovered).
    pub nodes: Vec<String>,
    /// ACL user name.
    pub username: Option<String>,
    /// Where the password comes from.
    pub password: Option<Secret>,
    /// TLS to the nodes, when set.
    pub tls: Option<RedisTls>,
    /// How long one command may wait for an answer before the store reports itself
    /// unavailable (default 2s).
    pub timeout: std::time::Duration,
}

/// A secret given in `quiver.yaml` (discouraged) or named by an environment variable.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The value itself (`password:`).
    Value(String),
    /// The environment variable that holds it (`password_env:`).
    Env(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Secret(..)"),
            Self::Env(var) => write!(f, "Secret(${var})"),
        }
    }
}

impl Secret {
    /// The secret's value; an unset variable is an error naming it.
    pub fn value(&self) -> Result<String> {
        match self {
            Self::Value(v) => Ok(v.clone()),
            Self::Env(var) => std::env::var(var).map_err(|_| {
                RegistryError::Invalid(vec![Diagnostic {
                    file: CONFIG_FILE.into(),
                    line: 0,
                    object: None,
                    message: format!(
                        "online_store.password_env names environment variable '{var}', which is not set"
                    ),
                }])
            }),
        }
    }
}

/// TLS settings of a Redis store. Paths are relative to the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// PEM file of the certificate authorities to trust (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file of a client certificate, for servers that require one.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// `tls: true` or `tls: {ca_file: ...}`.
enum RawTls {
    On(bool),
    Settings(RedisTls),
}

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or TLS settings {ca_file, cert_file, key_file}")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<RawTls, E> {
                Ok(RawTls::On(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<RawTls, E> {
                match v {
                    "true" => Ok(RawTls::On(true)),
                    "false" => Ok(RawTls::On(false)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawTls, A::Error> {
                RedisTls::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawTls::Settings)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `online_store:` as written, before its fields are checked against its `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnlineStore {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    path: Option<String>,
    block_cache_mb: Option<u64>,
    nodes: Option<Vec<String>>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    tls: Option<RawTls>,
    timeout: Option<Period>,
}

impl TryFrom<RawOnlineStore> for OnlineStoreConfig {
    type Error = String;

    fn try_from(raw: RawOnlineStore) -> std::result::Result<Self, String> {
        let kind = raw.kind.as_deref().unwrap_or("rocksdb");
        let misplaced = |fields: &[(&str, bool)]| {
            fields
                .iter()
                .find(|(_, set)| *set)
                .map(|(name, _)| format!("online_store.{name} is not a setting of type '{kind}'"))
        };
        match kind {
            "rocksdb" => {
                if let Some(e) = misplaced(&[
                    ("nodes", raw.nodes.is_some()),
                    ("username", raw.username.is_some()),
                    ("password", raw.password.is_some()),
                    ("password_env", raw.password_env.is_some()),
                    ("tls", raw.tls.is_some()),
                    ("timeout", raw.timeout.is_some()),
                ]) {
                    return Err(e);
                }
                let default = RocksDbConfig::default();
                Ok(Self::RocksDb(RocksDbConfig {
                    path: raw.path.unwrap_or(default.path),
                    block_cache_mb: raw.block_cache_mb.unwrap_or(default.block_cache_mb),
                }))
            }
            "redis" => {
                if let Some(e) = misplaced(&[
                    ("path", raw.path.is_some()),
                    ("block_cache_mb", raw.block_cache_mb.is_some()),
                ]) {
                    return Err(e);
                }
                let nodes = raw.nodes.unwrap_or_default();
                if nodes.is_empty() {
                    return Err(
                        "online_store.nodes: a redis store needs at least one node (host:port)"
                            .into(),
                    );
                }
                if let Some(bad) = nodes.iter().find(|n| !is_host_port(n)) {
                    return Err(format!("online_store.nodes: '{bad}' is not host:port"));
                }
                let password = match (raw.password, raw.password_env) {
                    (Some(_), Some(_)) => {
                        return Err("online_store: give password or password_env, not both".into());
                    }
                    (Some(v), None) => Some(Secret::Value(v)),
                    (None, Some(var)) => Some(Secret::Env(var)),
                    (None, None) => None,
                };
                let tls = match raw.tls {
                    None | Some(RawTls::On(false)) => None,
                    Some(RawTls::On(true)) => Some(RedisTls::default()),
                    Some(RawTls::Settings(t)) => Some(t),
                };
                if let Some(t) = &tls
                    && t.cert_file.is_some() != t.key_file.is_some()
                {
                    return Err("online_store.tls: cert_file and key_file go together".into());
                }
                Ok(Self::Redis(RedisConfig {
                    nodes,
                    username: raw.username,
                    password,
                    tls,
                    timeout: raw
                        .timeout
                        .map_or(std::time::Duration::from_secs(2), |p| p.0),
                }))
            }
            other => Err(format!(
                "online_store.type: unknown store type '{other}' (rocksdb or redis)"
            )),
        }
    }
}

/// `host:port` with a non-empty host and a port number.
fn is_host_port(node: &str) -> bool {
    node.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

fn default_registry() -> String {
    "registry".into()
}
fn default_data_root() -> String {
    ".".into()
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
        let config: Self = crate::definitions::decode_node(&node).map_err(|(line, message)| {
            // Checks after parsing (`online_store.nodes: ...`) carry no position: find the
            // setting they name.
            let line = if line > 0 {
                line
            } else {
                let path = message.split([':', ' ']).next().unwrap_or("");
                path.rsplit('.')
                    .find_map(|key| crate::definitions::find_key_line(&node, key))
                    .unwrap_or(0)
            };
            diagnostic(line, message)
        })?;
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

    /// Absolute registry folder for a repository at `repo` (meaningless for a registry URL).
    pub fn registry_path(&self, repo: &Path) -> PathBuf {
        repo.join(&self.registry)
    }

    /// Where the registry is, for messages: its URL or its folder.
    pub fn registry_location(&self, repo: &Path) -> String {
        if quiver_storage::ObjectUrl::is_url(&self.registry) {
            self.registry.clone()
        } else {
            self.registry_path(repo).display().to_string()
        }
    }

    /// The registry of a repository at `repo` (a URL's objects read through `storage`).
    pub fn open_registry(
        &self,
        repo: &Path,
        storage: &std::sync::Arc<quiver_storage::ObjectStorage>,
    ) -> Result<crate::Registry> {
        crate::Registry::open(&self.registry, repo, storage, &self.project)
    }

    /// Object storage with this repository's settings.
    pub fn storage(&self) -> std::sync::Arc<quiver_storage::ObjectStorage> {
        std::sync::Arc::new(quiver_storage::ObjectStorage::new(
            self.object_storage.clone(),
        ))
    }

    /// Absolute data root for a repository at `repo`.
    pub fn data_root(&self, repo: &Path) -> PathBuf {
        repo.join(&self.data_root)
    }

    /// The sources of a repository at `repo`: paths under its data root, URLs through its
    /// object storage settings.
    pub fn sources(&self, repo: &Path) -> quiver_source::Sources {
        quiver_source::Sources::with_storage(self.data_root(repo), self.storage())
    }

    /// Absolute folder of an embedded online store for a repository at `repo` (`None` for a
    /// remote store).
    pub fn online_store_path(&self, repo: &Path) -> Option<PathBuf> {
        match &self.online_store {
            OnlineStoreConfig::RocksDb(c) => Some(repo.join(&c.path)),
            OnlineStoreConfig::Redis(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let c = RepoConfig::parse("project: demo\n").unwrap();
        assert_eq!(c.registry, "registry");
        assert_eq!(c.online_store, OnlineStoreConfig::default());
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

    #[test]
    fn online_store_types_take_their_own_settings() {
        let c =
            RepoConfig::parse("project: p\nonline_store: {path: o, block_cache_mb: 8}\n").unwrap();
        assert_eq!(
            c.online_store,
            OnlineStoreConfig::RocksDb(RocksDbConfig {
                path: "o".into(),
                block_cache_mb: 8
            })
        );
        let c = RepoConfig::parse(
            "project: p\nonline_store:\n  type: redis\n  nodes: [a:1, 'b:2']\n  username: u\n  password_env: PW\n  tls: true\n  timeout: 500ms\n",
        )
        .unwrap();
        let OnlineStoreConfig::Redis(r) = &c.online_store else {
            panic!("{c:?}")
        };
        assert_eq!(r.nodes, ["a:1", "b:2"]);
        assert_eq!(r.password, Some(Secret::Env("PW".into())));
        assert_eq!(r.tls, Some(RedisTls::default()));
        assert_eq!(r.timeout, std::time::Duration::from_millis(500));
        assert_eq!(c.online_store_path(Path::new("/r")), None);
        for (yaml, needle) in [
            ("{type: redis}", "at least one node"),
            (
                "{type: redis, nodes: [localhost]}",
                "'localhost' is not host:port",
            ),
            (
                "{type: redis, nodes: [a:1], path: x}",
                "online_store.path is not a setting of type 'redis'",
            ),
            (
                "{nodes: [a:1]}",
                "online_store.nodes is not a setting of type 'rocksdb'",
            ),
            (
                "{type: redis, nodes: [a:1], password: x, password_env: Y}",
                "not both",
            ),
            (
                "{type: redis, nodes: [a:1], tls: {cert_file: c}}",
                "go together",
            ),
            ("{type: memcached}", "unknown store type 'memcached'"),
            (
                "{type: redis, nodes: [a:1], tls: {ca: x}}",
                "Unknown field `ca`",
            ),
        ] {
            let err = RepoConfig::parse(&format!("project: p\nonline_store: {yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
            assert!(err.contains("quiver.yaml:2"), "{yaml}: {err}");
        }
    }

    #[test]
    fn a_password_variable_that_is_not_set_is_named() {
        let err = Secret::Env("QUIVER_TEST_UNSET_PASSWORD".into())
            .value()
            .unwrap_err()
            .to_string();
        assert!(err.contains("QUIVER_TEST_UNSET_PASSWORD"), "{err}");
        assert_eq!(
            format!("{:?}", Secret::Value("hunter2".into())),
            "Secret(..)"
        );
    }
}
