//! The registry as the server sees it: an in-memory snapshot of the latest version, swapped
//! when a newer version appears, so requests never read the registry from disk.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use quiver_core::Definitions;
use quiver_registry::Registry;

use crate::error::Result;

/// The definitions of one registry version.
#[derive(Debug)]
pub struct Snapshot {
    /// Registry version number (0 before the first apply).
    pub version: u64,
    /// The project's definitions at that version.
    pub defs: Definitions,
}

/// The latest registry snapshot, shared by every service.
pub struct Catalog {
    registry: Registry,
    current: RwLock<Arc<Snapshot>>,
}

impl Catalog {
    /// Loads the latest version of the registry (an empty project if nothing was applied).
    pub fn open(registry: Registry) -> Result<Arc<Self>> {
        let snapshot = Self::load(&registry)?;
        Ok(Arc::new(Self {
            registry,
            current: RwLock::new(Arc::new(snapshot)),
        }))
    }

    fn load(registry: &Registry) -> Result<Snapshot> {
        Ok(match registry.latest()? {
            Some(v) => Snapshot {
                version: v.version,
                defs: v.definitions,
            },
            None => Snapshot {
                version: 0,
                defs: Definitions {
                    project: registry.project().to_owned(),
                    ..Definitions::default()
                },
            },
        })
    }

    /// The current snapshot (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    /// The registry this catalog follows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Swaps in the latest version if it is newer than the current one; returns whether it did.
    pub fn refresh(&self) -> Result<bool> {
        let latest = self.registry.latest_version()?.unwrap_or(0);
        if latest <= self.current().version {
            return Ok(false);
        }
        let snapshot = Arc::new(Self::load(&self.registry)?);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version > current.version {
            *current = snapshot;
        }
        Ok(true)
    }

    /// Polls the registry every `interval` on a background task until the runtime stops.
    pub fn follow(self: &Arc<Self>, interval: Duration) {
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let c = Arc::clone(&catalog);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.refresh()).await {
                    eprintln!("quiver serve: cannot read the registry: {e}");
                }
            }
        });
    }
}
