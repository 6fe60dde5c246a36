//! Where the server that holds a repository's online store listens: a small file it writes
//! into the store's folder, so other processes (the CLI) go through it instead of around it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the endpoint file inside the online store's folder.
pub const ENDPOINT_FILE: &str = "quiver-serve.json";

/// The addresses of a running `quiver serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The server's process id.
    pub pid: u32,
    /// Online gRPC address (`host:port`): Quiver's services, including materialization.
    pub grpc: String,
    /// HTTP address (`host:port`).
    pub http: String,
    /// Arrow Flight address (`host:port`).
    pub flight: String,
}

/// The endpoint file of the online store at `store`.
pub fn endpoint_path(store: &Path) -> PathBuf {
    store.join(ENDPOINT_FILE)
}

impl Endpoint {
    /// Writes the endpoint file of the store at `store` (whole, by rename).
    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        let path = endpoint_path(store);
        let tmp = store.join(format!(".{ENDPOINT_FILE}.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }

    /// The endpoint file of the store at `store`, if there is a readable one. It may be stale
    /// (a server that was killed): callers check that it answers.
    pub fn read(store: &Path) -> Option<Self> {
        let text = std::fs::read(endpoint_path(store)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes the endpoint file of the store at `store` if this process wrote it.
    pub fn remove(store: &Path) {
        if Self::read(store).is_some_and(|e| e.pid == std::process::id()) {
            let _ = std::fs::remove_file(endpoint_path(store));
        }
    }
}
