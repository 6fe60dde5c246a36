//! The versioned registry: an append-only log of immutable, numbered versions.
//!
//! Layout (the same on a local folder and, later, in an object store):
//!
//! ```text
//! <registry>/projects/<project>/versions/00000000000000000001.json
//! <registry>/projects/<project>/versions/00000000000000000002.json
//! ```
//!
//! Each version file holds the project's complete definitions plus time, author and the list
//! of changes from its parent. Files are written once with *create-if-absent* and never
//! modified, so:
//! - `apply` is atomic: a version appears whole or not at all;
//! - two concurrent applies based on version N both try to create N+1 and exactly one
//!   succeeds; the other gets [`RegistryError::Conflict`] (no lost update);
//! - any number of processes read concurrently without locks;
//! - every version stays readable for `log`, `show` and `diff`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use quiver_core::Definitions;
use quiver_storage::{ObjectStorage, ObjectUrl};
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::plan::{Change, Plan};

/// Immutable blobs with create-if-absent writes: what the registry needs from storage.
///
/// A local folder implements it with hard links; an object store would use conditional
/// `PUT` (`If-None-Match: *`).
pub trait BlobStore: Send + Sync {
    /// Writes `bytes` at `key` unless it exists. Returns `false` if it already existed.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool>;
    /// Reads the blob at `key`, or `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Lists the names of the blobs directly under `prefix` (a folder-like key ending in `/`).
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes temporary objects that failed writers left under `prefix`; returns how many.
    fn sweep(&self, prefix: &str) -> Result<usize>;
}

/// A [`BlobStore`] on a local folder. Needs no setup: folders are created on first write.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prefix of the temporary files a blob is written to before it is published.
const TMP_PREFIX: &str = ".tmp-";

impl LocalBlobStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl BlobStore for LocalBlobStore {
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let target = self.root.join(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(RegistryError::io(&dir))?;
        if target.exists() {
            return Ok(false);
        }
        // Write the whole blob to a private temporary file, make it durable, then publish it
        // with link(2), which fails if the target exists: readers never see a partial file.
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            // A failed write (a full disk) leaves nothing behind.
            let _ = fs::remove_file(&tmp);
            return Err(RegistryError::Io {
                path: tmp,
                source: e,
            });
        }
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(RegistryError::io(&dir))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(RegistryError::Io {
                path: target,
                source: e,
            }),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.root.join(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::Io { path, source: e }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(RegistryError::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(RegistryError::io(&dir))?;
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn sweep(&self, prefix: &str) -> Result<usize> {
        Ok(quiver_source::sweep_temporary_files(
            &self.root.join(prefix),
            &[TMP_PREFIX],
        )?)
    }
}

/// A [`BlobStore`] under a prefix of a bucket. A version is published with a conditional
/// `PUT` (`If-None-Match: *`), which the server applies atomically: the object appears whole
/// or not at all, and of two writers of one key exactly one succeeds. Before its first write
/// the store checks once that the server really refuses a second create of one key, and fails
/// with [`RegistryError::NoConditionalWrites`] if it does not.
#[derive(Debug)]
pub struct ObjectBlobStore {
    storage: Arc<ObjectStorage>,
    root: ObjectUrl,
    /// Set once the server has been seen refusing a second create.
    checked: OnceLock<()>,
}

impl ObjectBlobStore {
    /// A store under `root` (a URL taken as a folder).
    pub fn new(storage: Arc<ObjectStorage>, root: ObjectUrl) -> Self {
        Self {
            storage,
            root,
            checked: OnceLock::new(),
        }
    }

    /// Writes a probe object twice with create-if-absent: the second must be refused. Done
    /// until it succeeds once.
    fn check_conditional_writes(&self) -> Result<()> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        let probe = self.root.join(&format!(
            ".conditional-write-probe-{}-{}",
            std::process::id(),
            quiver_core::now_nanos()
        ));
        let created = self.storage.put_if_absent(&probe, "1".into());
        let refused = created
            .as_ref()
            .ok()
            .map(|_| self.storage.put_if_absent(&probe, "2".into()));
        let _ = self.storage.delete(&probe);
        let unsupported = || RegistryError::NoConditionalWrites {
            url: self.root.to_string(),
        };
        let is_unsupported = |e: &quiver_storage::StorageError| {
            e.failure() == Some(quiver_storage::Failure::Unsupported)
        };
        match (created, refused) {
            (Err(e), _) | (Ok(_), Some(Err(e))) if is_unsupported(&e) => Err(unsupported()),
            (Err(e), _) | (Ok(_), Some(Err(e))) => Err(e.into()),
            (Ok(true), Some(Ok(false))) => {
                let _ = self.checked.set(());
                Ok(())
            }
            _ => Err(unsupported()),
        }
    }
}

impl BlobStore for ObjectBlobStore {
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.check_conditional_writes()?;
        Ok(self
            .storage
            .put_if_absent(&self.root.join(key), bytes.to_vec().into())?)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.storage.get(&self.root.join(key))?.map(|b| b.to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let folder = self.root.join(prefix);
        let under = folder.folder_prefix();
        Ok(self
            .storage
            .list(&folder)?
            .into_iter()
            .filter_map(|o| {
                let name = o.url.key().strip_prefix(&under)?;
                (!name.contains('/') && !name.starts_with('.')).then(|| name.to_owned())
            })
            .collect())
    }

    fn sweep(&self, _prefix: &str) -> Result<usize> {
        // An object is written by one PUT: no failed writer leaves a partial object behind.
        Ok(0)
    }
}

/// One registry version: the project's complete definitions and how they came to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryVersion {
    /// Version number, starting at 1.
    pub version: u64,
    /// When it was applied.
    pub created_at: DateTime<Utc>,
    /// Who applied it.
    pub author: String,
    /// The changes from the previous version.
    pub changes: Vec<Change>,
    /// The project's complete definitions at this version.
    pub definitions: Definitions,
    /// The online generation of every online view: the version at which its online rows
    /// started to be valid. It changes when a view is added, comes back online, or changes
    /// its join keys or features, so rows stored for an earlier incarnation of a view are
    /// never served by a later one (see [`Registry::commit`]).
    #[serde(default)]
    pub generations: BTreeMap<String, u64>,
}

impl RegistryVersion {
    /// The online generation of `view` at this version (0 if it is not online).
    pub fn generation(&self, view: &str) -> u64 {
        self.generations.get(view).copied().unwrap_or(0)
    }
}

/// The online generations of `new` (to be registered as `version`) given its parent: a view
/// keeps its parent's generation while it stays online with the same online layout, and
/// starts a new one otherwise.
fn generations(
    parent: Option<&RegistryVersion>,
    new: &Definitions,
    version: u64,
) -> BTreeMap<String, u64> {
    new.feature_views
        .keys()
        .filter_map(|name| {
            let layout = new.online_layout(name)?;
            let inherited = parent.and_then(|p| {
                (p.definitions.online_layout(name).as_ref() == Some(&layout))
                    .then(|| p.generations.get(name).copied())
                    .flatten()
            });
            Some((name.clone(), inherited.unwrap_or(version)))
        })
        .collect()
}

/// The registry of one project.
pub struct Registry {
    store: Box<dyn BlobStore>,
    project: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of `project` in a local folder.
    pub fn open_local(path: &Path, project: &str) -> Self {
        Self::new(Box::new(LocalBlobStore::new(path)), project)
    }

    /// The registry of `project` at `location`: a URL in object storage (through `storage`),
    /// or a local folder.
    pub fn open(
        location: &str,
        repo: &Path,
        storage: &Arc<ObjectStorage>,
        project: &str,
    ) -> Result<Self> {
        Ok(match ObjectUrl::parse(location)? {
            Some(url) => Self::new(
                Box::new(ObjectBlobStore::new(Arc::clone(storage), url)),
                project,
            ),
            None => Self::open_local(&repo.join(location), project),
        })
    }

    /// The registry of `project` on any blob store.
    pub fn new(store: Box<dyn BlobStore>, project: &str) -> Self {
        Self {
            store,
            project: project.to_owned(),
        }
    }

    /// The project this registry belongs to.
    pub fn project(&self) -> &str {
        &self.project
    }

    fn prefix(&self) -> String {
        format!("projects/{}/versions/", self.project)
    }

    fn key(&self, version: u64) -> String {
        format!("{}{version:020}.json", self.prefix())
    }

    /// All version numbers, ascending. Only names this registry writes count (twenty
    /// digits and `.json`); anything else in the folder is ignored.
    pub fn versions(&self) -> Result<Vec<u64>> {
        let mut versions: Vec<u64> = self
            .store
            .list(&self.prefix())?
            .iter()
            .filter_map(|name| {
                let digits = name.strip_suffix(".json")?;
                (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse().ok())
                    .flatten()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The newest version number, or `None` if nothing was ever applied.
    pub fn latest_version(&self) -> Result<Option<u64>> {
        Ok(self.versions()?.last().copied())
    }

    /// The newest version, or `None` if nothing was ever applied.
    pub fn latest(&self) -> Result<Option<RegistryVersion>> {
        self.latest_version()?.map(|v| self.get(v)).transpose()
    }

    /// The newest version's definitions, or an error if nothing was ever applied.
    pub fn current(&self) -> Result<RegistryVersion> {
        self.latest()?
            .ok_or_else(|| RegistryError::Empty(self.project.clone()))
    }

    /// One version.
    pub fn get(&self, version: u64) -> Result<RegistryVersion> {
        let key = self.key(version);
        let bytes = self
            .store
            .get(&key)?
            .ok_or_else(|| RegistryError::UnknownVersion {
                project: self.project.clone(),
                version,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            path: key.into(),
            message: e.to_string(),
        })
    }

    /// Removes temporary files that failed applies left in the registry.
    pub fn sweep_temporary_files(&self) -> Result<usize> {
        self.store.sweep(&self.prefix())
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<RegistryVersion>> {
        self.versions()?.into_iter().map(|v| self.get(v)).collect()
    }

    /// Commits `definitions` as the version after `based_on` (`None`: the first version).
    ///
    /// Fails with [`RegistryError::Conflict`] if any other version was committed after
    /// `based_on`, so an apply never overwrites changes it did not see.
    pub fn commit(
        &self,
        based_on: Option<u64>,
        definitions: Definitions,
        author: &str,
    ) -> Result<RegistryVersion> {
        let latest = self.latest_version()?.unwrap_or(0);
        if based_on.unwrap_or(0) > latest {
            return Err(RegistryError::UnknownBase {
                project: self.project.clone(),
                based_on: based_on.unwrap_or(0),
                latest,
            });
        }
        let parent = based_on.map(|v| self.get(v)).transpose()?;
        let empty = Definitions::default();
        let plan = Plan::between(
            parent.as_ref().map_or(&empty, |p| &p.definitions),
            &definitions,
        );
        let number = based_on.unwrap_or(0) + 1;
        let version = RegistryVersion {
            version: number,
            created_at: Utc::now(),
            author: author.to_owned(),
            changes: plan.changes,
            generations: generations(parent.as_ref(), &definitions, number),
            definitions,
        };
        let bytes = serde_json::to_vec_pretty(&version).map_err(|e| RegistryError::Corrupt {
            path: self.key(version.version).into(),
            message: e.to_string(),
        })?;
        if self
            .store
            .put_if_absent(&self.key(version.version), &bytes)?
        {
            Ok(version)
        } else {
            Err(RegistryError::Conflict {
                project: self.project.clone(),
                based_on: based_on.unwrap_or(0),
                current: self.latest_version()?.unwrap_or(0),
            })
        }
    }
}
