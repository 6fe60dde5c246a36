//! The [`OnlineStore`] trait and its RocksDB implementation.
//!
//! Key layout (column family `rows`):
//!
//! ```text
//! u16 BE len(project) | project | u16 BE len(view) | view | canonical entity key
//! ```
//!
//! so one view's rows are one contiguous key range (deleted with a single range tombstone).
//! The entity key is `quiver_core::encode_entity_key`'s encoding; values are [`crate::row`]s.
//! Writes are RocksDB *merges* resolved by a newest-wins merge operator: a stored row is only
//! ever replaced by one whose `(event_ts, created_ts, sequence)` is greater or equal, whatever
//! order writes arrive in, without a read before the write.
//!
//! Column family `meta` holds one materialization watermark per view under the same prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, MergeOperands, Options, WriteBatch,
    WriteOptions,
};

use crate::error::{OnlineError, Result};
use crate::row::Row;

const ROWS: &str = "rows";
const META: &str = "meta";

/// Counts and sizes of an online store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// RocksDB's estimate of the number of stored rows.
    pub estimated_rows: u64,
    /// Bytes in SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables.
    pub memtable_bytes: u64,
}

/// `(entity key, encoded row)` pairs to write.
pub type KeyedRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Called with each requested key's index and its row, if any.
pub type RowVisitor<'a> = dyn FnMut(usize, Option<&[u8]>) -> Result<()> + 'a;

/// Where the latest values of every feature per entity key live.
///
/// Rows are opaque encoded values ([`crate::row`]); keys are canonical entity keys. A second
/// implementation (e.g. Redis Cluster) implements the same five operations.
pub trait OnlineStore: Send + Sync {
    /// Reads the rows of `view` for `keys`, calling `each(i, row)` for every key in order,
    /// with `None` where the key has no row.
    fn read(
        &self,
        project: &str,
        view: &str,
        keys: &[&[u8]],
        each: &mut RowVisitor<'_>,
    ) -> Result<()>;

    /// Writes `(entity key, row)` pairs newest-wins, as one atomic batch. `durable` waits for
    /// the write-ahead log; bulk loads pass `false` and call [`OnlineStore::commit_watermark`].
    fn write(
        &self,
        project: &str,
        view: &str,
        rows: &[(Vec<u8>, Vec<u8>)],
        durable: bool,
    ) -> Result<()>;

    /// Makes every earlier write durable.
    fn flush(&self) -> Result<()>;

    /// Makes every earlier write durable, then records `watermark` (µs) for the view.
    fn commit_watermark(&self, project: &str, view: &str, watermark: i64) -> Result<()>;

    /// The view's materialization watermark (µs), if any.
    fn watermark(&self, project: &str, view: &str) -> Result<Option<i64>>;

    /// Deletes every row and the watermark of a view.
    fn delete_view(&self, project: &str, view: &str) -> Result<()>;

    /// Counts and sizes.
    fn stats(&self) -> Result<StoreStats>;
}

/// The key prefix of one view's rows.
pub fn view_prefix(project: &str, view: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + project.len() + view.len());
    for part in [project, view] {
        out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The exclusive end of a prefix's key range.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// Splits a row key into its view prefix and entity key.
fn split_prefix(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = 0;
    for _ in 0..2 {
        let len = usize::from(u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]));
        at += 2 + len;
    }
    (at <= key.len()).then(|| key.split_at(at))
}

fn newest_wins(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let version = |b: &[u8]| Row::parse(b).map(|r| r.version()).ok();
    let mut best: Option<&[u8]> = existing.filter(|b| version(b).is_some());
    for op in operands {
        let Some(v) = version(op) else { continue };
        if best.and_then(version).is_none_or(|b| v >= b) {
            best = Some(op);
        }
    }
    best.map(<[u8]>::to_vec)
}

/// Per-view purge horizons for the compaction filter: rows whose event time is older than
/// `now - horizon` are dropped. Views without an entry are kept.
type PurgeHorizons = Arc<RwLock<HashMap<Vec<u8>, i64>>>;

/// Settings of a [`RocksDbStore`].
#[derive(Debug, Clone)]
pub struct RocksDbOptions {
    /// Block cache size in bytes.
    pub block_cache_bytes: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
        }
    }
}

/// The embedded RocksDB online store.
pub struct RocksDbStore {
    db: DB,
    path: PathBuf,
    purge: PurgeHorizons,
}

impl std::fmt::Debug for RocksDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksDbStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, options: &RocksDbOptions) -> Result<Self> {
        let purge: PurgeHorizons = Arc::default();
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        // Tuned for point lookups: a bloom filter per key, a hash index inside each data block
        // (no binary search among restart points), and index and filter blocks held by the
        // table readers rather than competing with data blocks in the block cache.
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        table.set_cache_index_and_filter_blocks(false);
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);

        let mut rows = Options::default();
        rows.set_block_based_table_factory(&table);
        rows.set_compression_type(rocksdb::DBCompressionType::Lz4);
        rows.set_memtable_whole_key_filtering(true);
        rows.set_memtable_prefix_bloom_ratio(0.05);
        rows.set_merge_operator_associative("quiver_newest_wins", newest_wins);
        // Re-compact files at least daily so the ttl filter sees rows that no write touches.
        rows.set_periodic_compaction_seconds(86_400);
        let horizons = purge.clone();
        rows.set_compaction_filter(
            "quiver_ttl",
            move |_level: u32, key: &[u8], value: &[u8]| {
                let Some((prefix, _)) = split_prefix(key) else {
                    return Decision::Keep;
                };
                let Some(horizon) = horizons.read().ok().and_then(|h| h.get(prefix).copied())
                else {
                    return Decision::Keep;
                };
                match Row::parse(value) {
                    Ok(row) if row.event_ts() < now_micros().saturating_sub(horizon) => {
                        Decision::Remove
                    }
                    _ => Decision::Keep,
                }
            },
        );

        let mut db_opts = Options::default();
        // Hot keys are answered from a cache of rows, without touching blocks at all.
        db_opts.set_row_cache(&Cache::new_lru_cache(options.block_cache_bytes / 4));
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as i32,
        );
        let cfs = vec![
            ColumnFamilyDescriptor::new(ROWS, rows),
            ColumnFamilyDescriptor::new(META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(|e| OnlineError::rocksdb(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            purge,
        })
    }

    /// The store's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells the compaction filter each view's ttl (µs, 0 = none): rows older than twice the
    /// ttl are purged. Reads report rows older than the ttl as outside max age before that.
    pub fn set_ttls<'a>(&self, project: &str, ttls: impl IntoIterator<Item = (&'a str, i64)>) {
        if let Ok(mut map) = self.purge.write() {
            for (view, ttl) in ttls {
                let prefix = view_prefix(project, view);
                if ttl > 0 {
                    map.insert(prefix, ttl.saturating_mul(2));
                } else {
                    map.remove(&prefix);
                }
            }
        }
    }

    /// Compacts every row, running the ttl purge now rather than eventually.
    ///
    /// Two passes: RocksDB applies compaction filters to values, not to merge operands, so the
    /// first pass folds pending merges into values and the second filters them.
    pub fn compact(&self) -> Result<()> {
        let cf = self.cf(ROWS)?;
        for _ in 0..2 {
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Writes a consistent copy of the store to `dir` (a RocksDB checkpoint; `dir` must not exist).
    pub fn backup(&self, dir: &Path) -> Result<()> {
        let checkpoint =
            Checkpoint::new(&self.db).map_err(|e| OnlineError::rocksdb(&self.path, e))?;
        checkpoint
            .create_checkpoint(dir)
            .map_err(|e| OnlineError::rocksdb(dir, e))
    }

    /// Replaces the store at `store` (which must not be open) with the backup at `backup`.
    ///
    /// The backup is copied next to the store and swapped in with a rename, so an interrupted
    /// restore leaves the old store in place.
    pub fn restore(backup: &Path, store: &Path) -> Result<()> {
        // Opening the backup checks it is a store before anything is replaced.
        drop(Self::open_read_only(backup)?);
        let staging = store.with_extension("restoring");
        let _ = std::fs::remove_dir_all(&staging);
        copy_dir(backup, &staging)?;
        let old = store.with_extension("replaced");
        let _ = std::fs::remove_dir_all(&old);
        if store.exists() {
            std::fs::rename(store, &old).map_err(OnlineError::io(store))?;
        }
        std::fs::rename(&staging, store).map_err(OnlineError::io(store))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    fn open_read_only(path: &Path) -> Result<DB> {
        let mut rows = Options::default();
        rows.set_merge_operator_associative("quiver_newest_wins", newest_wins);
        let cfs = vec![
            ColumnFamilyDescriptor::new(ROWS, rows),
            ColumnFamilyDescriptor::new(META, Options::default()),
        ];
        DB::open_cf_descriptors_read_only(&Options::default(), path, cfs, false)
            .map_err(|e| OnlineError::rocksdb(path, e))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| OnlineError::Corrupt(format!("column family '{name}' is missing")))
    }

    fn err(&self, e: rocksdb::Error) -> OnlineError {
        OnlineError::rocksdb(&self.path, e)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(OnlineError::io(to))?;
    for entry in std::fs::read_dir(from).map_err(OnlineError::io(from))? {
        let entry = entry.map_err(OnlineError::io(from))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(OnlineError::io(&target))?;
        }
    }
    Ok(())
}

/// Current time in µs since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl OnlineStore for RocksDbStore {
    fn read(
        &self,
        project: &str,
        view: &str,
        keys: &[&[u8]],
        each: &mut RowVisitor<'_>,
    ) -> Result<()> {
        let prefix = view_prefix(project, view);
        let full_key = |k: &[u8]| {
            let mut key = Vec::with_capacity(prefix.len() + k.len());
            key.extend_from_slice(&prefix);
            key.extend_from_slice(k);
            key
        };
        let cf = self.cf(ROWS)?;
        if let [key] = keys {
            // A single key takes RocksDB's plain Get path, cheaper than a batch of one.
            let value = self
                .db
                .get_pinned_cf(cf, full_key(key))
                .map_err(|e| self.err(e))?;
            return each(0, value.as_deref());
        }
        let full: Vec<Vec<u8>> = keys.iter().map(|k| full_key(k)).collect();
        for (i, result) in self
            .db
            .batched_multi_get_cf(cf, &full, false)
            .into_iter()
            .enumerate()
        {
            let value = result.map_err(|e| self.err(e))?;
            each(i, value.as_deref())?;
        }
        Ok(())
    }

    fn write(
        &self,
        project: &str,
        view: &str,
        rows: &[(Vec<u8>, Vec<u8>)],
        durable: bool,
    ) -> Result<()> {
        let prefix = view_prefix(project, view);
        let cf = self.cf(ROWS)?;
        let mut batch = WriteBatch::default();
        let mut key = Vec::new();
        for (entity_key, row) in rows {
            key.clear();
            key.extend_from_slice(&prefix);
            key.extend_from_slice(entity_key);
            batch.merge_cf(cf, &key, row);
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(!durable);
        self.db.write_opt(batch, &opts).map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush_cf(self.cf(ROWS)?).map_err(|e| self.err(e))
    }

    fn commit_watermark(&self, project: &str, view: &str, watermark: i64) -> Result<()> {
        self.flush()?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(META)?,
            view_prefix(project, view),
            watermark.to_le_bytes(),
        );
        self.db.write_opt(batch, &opts).map_err(|e| self.err(e))
    }

    fn watermark(&self, project: &str, view: &str) -> Result<Option<i64>> {
        let value = self
            .db
            .get_pinned_cf(self.cf(META)?, view_prefix(project, view))
            .map_err(|e| self.err(e))?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(i64::from_le_bytes))
    }

    fn delete_view(&self, project: &str, view: &str) -> Result<()> {
        let prefix = view_prefix(project, view);
        let end = prefix_end(&prefix);
        let (rows, meta) = (self.cf(ROWS)?, self.cf(META)?);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        // The watermark goes first: a delete interrupted half-way never leaves a watermark
        // that claims the view's data is there.
        let mut batch = WriteBatch::default();
        batch.delete_cf(meta, &prefix);
        self.db.write_opt(batch, &sync).map_err(|e| self.err(e))?;
        // Whole SST files inside the range are dropped at once; the rest is deleted key by key
        // (RocksDB's DeleteRange is incompatible with the row cache).
        self.db
            .delete_file_in_range_cf(rows, &prefix, &end)
            .map_err(|e| self.err(e))?;
        let mut read = rocksdb::ReadOptions::default();
        read.set_iterate_upper_bound(end.clone());
        let mode = rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf_opt(rows, read, mode) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            batch.delete_cf(rows, key);
            if batch.len() >= 10_000 {
                self.db
                    .write_opt(std::mem::take(&mut batch), &sync)
                    .map_err(|e| self.err(e))?;
            }
        }
        self.db.write_opt(batch, &sync).map_err(|e| self.err(e))?;
        // Reclaim the space now rather than at some later compaction.
        self.db.compact_range_cf(rows, Some(&prefix), Some(&end));
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats> {
        let cf = self.cf(ROWS)?;
        let prop = |name: &str| -> Result<u64> {
            Ok(self
                .db
                .property_int_value_cf(cf, name)
                .map_err(|e| self.err(e))?
                .unwrap_or(0))
        };
        Ok(StoreStats {
            estimated_rows: prop("rocksdb.estimate-num-keys")?,
            sst_bytes: prop("rocksdb.total-sst-files-size")?,
            memtable_bytes: prop("rocksdb.cur-size-all-mem-tables")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_split_and_bound_their_range() {
        let p = view_prefix("proj", "view");
        let mut key = p.clone();
        key.extend_from_slice(b"entity");
        assert_eq!(split_prefix(&key), Some((&p[..], &b"entity"[..])));
        assert!(p <= key && key < prefix_end(&p));
        let other = view_prefix("proj", "view2");
        assert!(!(p <= other && other < prefix_end(&p)));
        assert_eq!(split_prefix(&[0, 9, 1]), None);
    }
}
