//! The [`OnlineStore`] trait: the contract every online store backend keeps.
//!
//! Every stored row belongs to one [`ViewId`]: a project, a feature view, and the view's
//! online *generation* (the registry version at which its current online layout began). One
//! generation of one view is one key range of its own: a view that is removed and added
//! again, or whose keys or features change, gets a new generation and so a new, empty range.
//! Rows of an earlier incarnation can never be served by a later one, whatever the order in
//! which deletions and late writes land. [`OnlineStore::retain`] deletes every range a
//! registry version no longer serves.
//!
//! Entity keys are `quiver_core::encode_entity_key`'s canonical encoding; values are
//! [`crate::row`]s. Every backend resolves writes *newest wins inside the store*: a stored row
//! is only ever replaced by one whose `(event_ts, created_ts, sequence)` is greater or equal,
//! whatever order writes arrive in and however many writers there are, without a read before
//! the write on the client. Watermarks, run records and leases live beside the rows.
//!
//! Backends: [`crate::RocksDbStore`] (embedded, one process) here, and Redis / Redis Cluster
//! in `quiver-redis` (shared by several processes).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;
use crate::runs::RunRecord;

/// Run records kept per view; older ones are dropped.
pub const RUNS_KEPT: usize = 200;

/// Counts and sizes of an online store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// The store's estimate of the number of stored keys.
    pub estimated_rows: u64,
    /// Bytes on disk (RocksDB's SST files; 0 where the store does not report it).
    pub disk_bytes: u64,
    /// Bytes in memory (RocksDB's memtables; Redis's used memory).
    pub memory_bytes: u64,
    /// The store's estimate of the bytes compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// Compactions and flushes running now.
    pub running_compactions: u64,
    /// Block reads the block cache answered since the store opened (0 without one).
    #[serde(default)]
    pub block_cache_hits: u64,
    /// Block reads that missed the block cache since the store opened.
    #[serde(default)]
    pub block_cache_misses: u64,
}

/// What one view generation holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ViewContents {
    /// Stored rows (expired rows not purged yet included).
    pub rows: u64,
    /// The newest event time (ns) among them.
    pub newest_event_ts: Option<i64>,
}

/// The stored rows of one view: a project, a feature view and its online generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewId {
    project: String,
    view: String,
    generation: u64,
    /// The binary key prefix of the view's rows in ordered stores, computed once.
    prefix: Vec<u8>,
}

impl ViewId {
    /// The rows of `view` of `project` at online `generation`.
    pub fn new(project: &str, view: &str, generation: u64) -> Self {
        let mut prefix = name_prefix(project, view);
        prefix.extend_from_slice(&generation.to_be_bytes());
        Self {
            project: project.to_owned(),
            view: view.to_owned(),
            generation,
            prefix,
        }
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The feature view.
    pub fn view(&self) -> &str {
        &self.view
    }

    /// The view's online generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key prefix of the view's rows in an ordered store:
    /// `u16 BE len(project) | project | u16 BE len(view) | view | u64 BE generation`.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

impl std::fmt::Display for ViewId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (generation {})",
            self.project, self.view, self.generation
        )
    }
}

/// `u16 BE len(project) | project | u16 BE len(view) | view`: the prefix of every generation
/// of a view.
pub(crate) fn name_prefix(project: &str, view: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + project.len() + view.len());
    for part in [project, view] {
        out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A view the store must keep, with its ttl (`None`: keep rows forever).
#[derive(Debug, Clone)]
pub struct LiveView {
    /// The view's rows.
    pub id: ViewId,
    /// Rows older than twice this are removed by the store (compaction, key expiry).
    pub ttl_nanos: Option<i64>,
}

/// `(entity key, encoded row)` pairs to write.
pub type KeyedRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Rows of one view to write.
#[derive(Debug, Clone, Copy)]
pub struct ViewRows<'a> {
    /// The view.
    pub view: &'a ViewId,
    /// `(entity key, encoded row)` pairs.
    pub rows: &'a [(Vec<u8>, Vec<u8>)],
}

/// Entity keys of one view to read.
#[derive(Debug, Clone, Copy)]
pub struct ViewKeys<'a> {
    /// The view.
    pub view: &'a ViewId,
    /// Canonical entity keys.
    pub keys: &'a [Vec<u8>],
}

/// For each [`ViewKeys`] of a read, the stored row of each key in order (`None`: no row).
pub type StoredRows = Vec<Vec<Option<Vec<u8>>>>;

/// An online read in progress.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<StoredRows>> + Send + 'a>>;

/// Where the latest values of every feature per entity key live.
///
/// Rows are opaque encoded values ([`crate::row`]); keys are canonical entity keys. Every
/// implementation keeps the contract of this module: newest wins inside the store, each
/// [`ViewId`] is a key range of its own, watermarks, run records and leases live beside the
/// rows. Only [`OnlineStore::read`] is asynchronous (it is on every request's path); the
/// other methods block and are called from threads that may block.
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// Reads the rows of several views at once (a remote store fans the keys of every view
    /// out to its nodes in one round trip).
    fn read<'a>(&'a self, reads: &'a [ViewKeys<'a>]) -> ReadFuture<'a>;

    /// Writes rows of one or more views newest-wins. `durable` asks for the rows to survive
    /// a crash of the process once this returns (RocksDB's write-ahead log); bulk loads pass
    /// `false` and call [`OnlineStore::commit_watermark`] or [`OnlineStore::flush`]. RocksDB
    /// applies the batch atomically; a remote store applies each row atomically.
    fn write(&self, batch: &[ViewRows<'_>], durable: bool) -> Result<()>;

    /// Makes every earlier write durable.
    fn flush(&self) -> Result<()>;

    /// Makes every earlier write durable (on a replicated store: acknowledged by the
    /// replicas), then records `watermark` (ns) for the view.
    fn commit_watermark(&self, view: &ViewId, watermark: i64) -> Result<()>;

    /// The view's materialization watermark (ns), if any.
    fn watermark(&self, view: &ViewId) -> Result<Option<i64>>;

    /// Folds the view's flushed newest-wins writes into whole rows, so reads no longer merge
    /// them (RocksDB: a compaction of the view's key range, for after a bulk load). A store
    /// whose reads never merge does nothing.
    fn compact_view(&self, view: &ViewId) -> Result<()> {
        let _ = view;
        Ok(())
    }

    /// Makes the store hold the views `live` of `project` at registry `version`: every other
    /// view generation of the project up to `version` has its rows and watermark deleted, and
    /// row expiry follows each live view's ttl. Generations newer than `version` belong to a
    /// version the caller has not seen yet and are kept. Returns what was deleted.
    /// Idempotent.
    fn retain(&self, project: &str, version: u64, live: &[LiveView]) -> Result<Vec<ViewId>>;

    /// Records (or updates, by its id) a materialization run; keeps the newest
    /// [`RUNS_KEPT`] runs of each view.
    fn record_run(&self, run: &RunRecord) -> Result<()>;

    /// Runs of `project` (of one view when given), newest first, at most `limit`.
    fn runs(&self, project: &str, view: Option<&str>, limit: usize) -> Result<Vec<RunRecord>>;

    /// Takes the lease `name` for `holder` for `ttl`, or extends it if `holder` has it;
    /// `false` while another holder's lease has not expired.
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives up the lease `name` if `holder` has it.
    fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Who holds the lease `name` now, if anyone.
    fn lease_holder(&self, name: &str) -> Result<Option<String>>;

    /// Counts and sizes.
    fn stats(&self) -> Result<StoreStats>;

    /// The rows of one view generation and the newest event time among them. Reads every
    /// row of the view once (for status reports, never on a request's path).
    fn view_contents(&self, view: &ViewId) -> Result<ViewContents>;

    /// Writes a consistent copy of the store to `dir`, which must not exist.
    fn backup(&self, dir: &Path) -> Result<()>;

    /// Where the store is, for messages (a folder, addresses); never credentials.
    fn location(&self) -> String;
}
