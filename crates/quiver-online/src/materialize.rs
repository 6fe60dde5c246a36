//! Materialization: the latest row per entity key of each online view, from Parquet into the
//! online store.
//!
//! For each view, the source's row groups whose event-time statistics overlap the window are
//! read by all cores at once, a bounded batch at a time. A first pass over the key and
//! timestamp columns finds the newest version of every key in the window (memory: about 100
//! bytes per distinct key, up to [`MAX_TRACKED_KEYS`]; beyond that the pass is dropped); the
//! second pass encodes and writes only those rows, in key order, one atomic batch per source
//! batch. The store's newest-wins merge resolves keys across batches, files and runs either
//! way, so windows may be re-run or run out of order. Rows with a null key or event time are
//! skipped and counted. Incremental runs advance the view's watermark only after all its rows
//! are durable.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use quiver_core::{
    Definitions, FeatureView, JoinKey, KeyType, ScalarType, Source, ValueType, push_bytes_key,
    push_int32_key, push_int64_key,
};
use quiver_registry::{check_view_columns, row_group_reader, source_files};

use crate::error::{OnlineError, Result};
use crate::row::{RowVersion, RowWriter, layout_fingerprint};
use crate::store::{KeyedRows, OnlineStore};

/// Rows per decoded batch: bounds memory per worker.
const BATCH_ROWS: usize = 16 * 1024;

/// Which rows to materialize.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    /// Rows with `start <= event_ts <= end` (µs); the watermark is not touched.
    Range {
        /// Inclusive start, µs.
        start: i64,
        /// Inclusive end, µs.
        end: i64,
    },
    /// From each view's watermark (minus `lookback`) to `end`; the first run starts at
    /// `end - ttl`, or at the earliest data when the ttl is 0. Advances the watermark to `end`.
    Incremental {
        /// Inclusive end, µs.
        end: i64,
        /// How far before the watermark to re-read, for late data.
        lookback: Duration,
    },
}

/// What materialization did for one view.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ViewReport {
    /// The feature view.
    pub view: String,
    /// Window start (µs, inclusive).
    pub start: i64,
    /// Window end (µs, inclusive).
    pub end: i64,
    /// Parquet files of the source.
    pub files: usize,
    /// Row groups read (others were skipped by their statistics).
    pub row_groups_read: usize,
    /// Rows decoded.
    pub rows_scanned: u64,
    /// Rows inside the window.
    pub rows_in_window: u64,
    /// Rows written (the newest per key of each batch).
    pub rows_written: u64,
    /// Bytes of encoded rows written.
    pub bytes_written: u64,
    /// Rows skipped because a join key was null.
    pub skipped_null_key: u64,
    /// Rows skipped because the event timestamp was null.
    pub skipped_null_timestamp: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// Progress events, for progress bars.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// A view starts; `rows` is the number of rows in the row groups to read.
    ViewStarted {
        /// The view.
        view: &'a str,
        /// Rows to read.
        rows: u64,
    },
    /// More rows were read.
    Rows(u64),
}

/// Materializes the online views `views` (all online views when empty).
pub fn materialize(
    store: &dyn OnlineStore,
    defs: &Definitions,
    data_root: &Path,
    views: &[String],
    window: Window,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<ViewReport>> {
    let selected: Vec<&FeatureView> = if views.is_empty() {
        defs.feature_views.values().filter(|v| v.online).collect()
    } else {
        let mut out = Vec::new();
        for name in views {
            let view = defs.view(name)?;
            if !view.online {
                return Err(OnlineError::InvalidRequest(format!(
                    "feature view '{name}' is not online (online: false)"
                )));
            }
            out.push(view);
        }
        out
    };
    selected
        .into_iter()
        .map(|view| materialize_view(store, defs, data_root, view, window, progress))
        .collect()
}

/// Above this many distinct keys in a window, pass 1 gives up (its map holds about 100 bytes
/// per key) and pass 2 reads every row, leaving newest-wins to each batch and the store.
const MAX_TRACKED_KEYS: usize = 10_000_000;

/// Runs `work` on every task with one worker per core; the first error stops the rest.
fn in_parallel(tasks: &[Task], work: impl Fn(&Task) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<OnlineError>> = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .min(tasks.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if failure.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    if let Err(e) = work(task) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn ttl_micros(view: &FeatureView) -> Option<i64> {
    view.ttl
        .limit()
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn materialize_view(
    store: &dyn OnlineStore,
    defs: &Definitions,
    data_root: &Path,
    view: &FeatureView,
    window: Window,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ViewReport> {
    let started = Instant::now();
    let source = defs.sources.get(&view.source).ok_or_else(|| {
        OnlineError::InvalidRequest(format!(
            "feature view '{}' names unknown source '{}'",
            view.name, view.source
        ))
    })?;
    let (start, end) = match window {
        Window::Range { start, end } => (start, end),
        Window::Incremental { end, lookback } => {
            let lookback = i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX);
            let start = match store.watermark(&defs.project, &view.name)? {
                Some(wm) => wm.saturating_sub(lookback),
                None => ttl_micros(view).map_or(i64::MIN, |ttl| end.saturating_sub(ttl)),
            };
            (start, end)
        }
    };
    if start > end {
        return Err(OnlineError::InvalidRequest(format!(
            "feature view '{}': window start {} is after its end {}",
            view.name,
            fmt_micros(start),
            fmt_micros(end)
        )));
    }
    let plan = ViewPlan::new(defs, data_root, view, source, start, end)?;
    let total_rows: u64 = plan.tasks.iter().map(|t| t.rows).sum();
    // Both passes report every row group they finish.
    progress(Progress::ViewStarted {
        view: &view.name,
        rows: 2 * total_rows,
    });

    // Pass 1 (keys and timestamps only): the newest version of every key in the window, so
    // pass 2 decodes and writes only those rows. Dropped when the window has more keys than
    // can be tracked in memory: pass 2 then reads everything and keeps each batch's newest.
    let pass1 = Counters::default();
    let newest = Mutex::new(NewestVersions::default());
    in_parallel(&plan.tasks, |task| {
        plan.scan_versions(task, &newest, &pass1)?;
        progress(Progress::Rows(task.rows));
        Ok(())
    })?;
    let winners = newest
        .into_inner()
        .ok()
        .filter(|m| m.len() <= MAX_TRACKED_KEYS)
        .map(|m| winners_by_task(&plan.tasks, &m));
    let counters = match winners {
        Some(_) => pass1,
        None => Counters::default(),
    };
    in_parallel(&plan.tasks, |task| {
        let task_winners = winners.as_ref().map(|w| w[task.index].as_slice());
        plan.run(store, &defs.project, task, task_winners, &counters)?;
        progress(Progress::Rows(task.rows));
        Ok(())
    })?;
    match window {
        Window::Incremental { .. } => {
            let previous = store
                .watermark(&defs.project, &view.name)?
                .unwrap_or(i64::MIN);
            store.commit_watermark(&defs.project, &view.name, end.max(previous))?;
        }
        Window::Range { .. } => store.flush()?,
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(ViewReport {
        view: view.name.clone(),
        start,
        end,
        files: plan.files.len(),
        row_groups_read: plan.tasks.len(),
        rows_scanned: load(&counters.scanned),
        rows_in_window: load(&counters.in_window),
        rows_written: load(&counters.written),
        bytes_written: load(&counters.bytes),
        skipped_null_key: load(&counters.null_key),
        skipped_null_timestamp: load(&counters.null_ts),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

fn fmt_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(|| us.to_string(), |t| t.to_rfc3339())
}

#[derive(Default)]
struct Counters {
    scanned: AtomicU64,
    in_window: AtomicU64,
    written: AtomicU64,
    bytes: AtomicU64,
    null_key: AtomicU64,
    null_ts: AtomicU64,
}

/// One row group to read.
struct Task {
    /// Position in the plan's task list.
    index: usize,
    file: usize,
    row_group: usize,
    /// Index of the row group's first row in its file (for the tie-break sequence).
    first_row: u64,
    rows: u64,
}

/// Everything needed to turn a view's source row groups into online rows.
struct ViewPlan<'a> {
    view: &'a FeatureView,
    source: &'a Source,
    files: Vec<PathBuf>,
    /// Each file's footer, decoded once and shared by the tasks reading its row groups.
    metadata: Vec<ArrowReaderMetadata>,
    tasks: Vec<Task>,
    /// Join keys sorted by name (the canonical key order), with their source column names.
    keys: Vec<(JoinKey, String)>,
    /// Source column of each feature, in view order.
    feature_columns: Vec<String>,
    /// Source columns of the event and created timestamps.
    ts_column: String,
    created_column: Option<String>,
    start: i64,
    end: i64,
    fingerprint: u32,
}

impl<'a> ViewPlan<'a> {
    /// Checks every file's schema and picks the row groups that overlap the window, before
    /// anything is written.
    fn new(
        defs: &Definitions,
        data_root: &Path,
        view: &'a FeatureView,
        source: &'a Source,
        start: i64,
        end: i64,
    ) -> Result<Self> {
        let column_of = |name: &str| source.column_for(name).to_owned();
        let mut keys: Vec<(JoinKey, String)> = defs
            .join_keys(view)?
            .into_iter()
            .map(|k| {
                let col = column_of(&k.name);
                (k, col)
            })
            .collect();
        keys.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let feature_columns: Vec<String> =
            view.features.iter().map(|f| column_of(&f.name)).collect();
        let ts_column = column_of(&source.timestamp_field);

        let files = source_files(data_root, &source.path)?;
        let mut tasks = Vec::new();
        let mut footers = Vec::with_capacity(files.len());
        for (fi, path) in files.iter().enumerate() {
            let err = |message: String| OnlineError::Source {
                source_name: source.name.clone(),
                path: path.clone(),
                message,
            };
            let file = File::open(path).map_err(|e| err(e.to_string()))?;
            let footer = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
                .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
            let schema = footer.schema().clone();
            check_view_columns(&schema, source, keys.iter().map(|(k, _)| k), &view.features)
                .map_err(err)?;

            // Row groups whose event-time range misses the window are never decoded.
            let metadata = footer.metadata().clone();
            let converter =
                StatisticsConverter::try_new(&ts_column, &schema, footer.parquet_schema())
                    .map_err(|e| err(e.to_string()))?;
            let micros = |a: ArrayRef| -> Option<ArrayRef> {
                cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()
            };
            let mins = converter
                .row_group_mins(metadata.row_groups().iter())
                .ok()
                .and_then(micros);
            let maxs = converter
                .row_group_maxes(metadata.row_groups().iter())
                .ok()
                .and_then(micros);
            let mut first_row = 0u64;
            for (rg, meta) in metadata.row_groups().iter().enumerate() {
                let rows = u64::try_from(meta.num_rows()).unwrap_or(0);
                let bound = |a: &Option<ArrayRef>| {
                    a.as_ref().and_then(|a| {
                        let a = a.as_primitive::<TimestampMicrosecondType>();
                        (a.is_valid(rg)).then(|| a.value(rg))
                    })
                };
                let overlaps = match (bound(&mins), bound(&maxs)) {
                    (Some(min), Some(max)) => max >= start && min <= end,
                    _ => true,
                };
                if overlaps && rows > 0 {
                    tasks.push(Task {
                        index: tasks.len(),
                        file: fi,
                        row_group: rg,
                        first_row,
                        rows,
                    });
                }
                first_row += rows;
            }
            footers.push(footer);
        }
        Ok(Self {
            view,
            source,
            files,
            metadata: footers,
            tasks,
            keys,
            feature_columns,
            created_column: source.created_timestamp_column.as_deref().map(column_of),
            ts_column,
            start,
            end,
            fingerprint: layout_fingerprint(&view.features),
        })
    }

    fn source_error(&self, file: usize, message: String) -> OnlineError {
        OnlineError::Source {
            source_name: self.source.name.clone(),
            path: self.files[file].clone(),
            message,
        }
    }

    /// Reads one row group and writes its newest row per key, a batch at a time: only the
    /// `winners` (offsets in the row group) when pass 1 found them, else every row, keeping
    /// the newest per key of each batch.
    fn run(
        &self,
        store: &dyn OnlineStore,
        project: &str,
        task: &Task,
        winners: Option<&[u64]>,
        counters: &Counters,
    ) -> Result<()> {
        if winners.is_some_and(<[u64]>::is_empty) {
            return Ok(());
        }
        let mut done = 0usize;
        for batch in self.reader(task, true, winners)? {
            let batch = batch.map_err(|e| self.source_error(task.file, e.to_string()))?;
            let n = batch.num_rows();
            let row_of =
                |i: usize| task.first_row + winners.map_or((done + i) as u64, |w| w[done + i]);
            // Without pass 1, this pass counts what pass 1 would have.
            let counting = winners.is_none().then_some(counters);
            let mut rows = self
                .encode_batch(&batch, task.file, &row_of, counting)
                .map_err(|e| self.source_error(task.file, e.to_string()))?;
            done += n;
            if counting.is_some() {
                counters.scanned.fetch_add(n as u64, Ordering::Relaxed);
            }
            if !rows.is_empty() {
                rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
                store.write(project, &self.view.name, &rows, false)?;
                counters
                    .written
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The in-window rows of a batch with a non-null key, in batch order:
    /// `(key bytes in the returned buffer, version, row)`.
    ///
    /// `row_of(i)` is the position in its file of the batch's row `i` (the tie-break).
    fn batch_entries(
        &self,
        batch: &RecordBatch,
        file: usize,
        row_of: &dyn Fn(usize) -> u64,
        counters: Option<&Counters>,
    ) -> ArrowResult<(Vec<u8>, Vec<Entry>)> {
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        let ts = column(batch, &self.ts_column, &micros)?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let created = self
            .created_column
            .as_deref()
            .map(|c| column(batch, c, &micros))
            .transpose()?;
        let created = created
            .as_ref()
            .map(AsArray::as_primitive::<TimestampMicrosecondType>);
        let key_arrays: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|(k, col)| column(batch, col, &k.key_type.value_type().to_arrow()))
            .collect::<ArrowResult<_>>()?;

        let mut entries: Vec<Entry> = Vec::with_capacity(batch.num_rows());
        let mut key = Vec::with_capacity(batch.num_rows() * 9);
        let (mut in_window, mut null_key, mut null_ts) = (0u64, 0u64, 0u64);
        'rows: for i in 0..batch.num_rows() {
            if ts.is_null(i) {
                null_ts += 1;
                continue;
            }
            let event = ts.value(i);
            if event < self.start || event > self.end {
                continue;
            }
            let start = key.len();
            for ((k, _), array) in self.keys.iter().zip(&key_arrays) {
                if array.is_null(i) {
                    null_key += 1;
                    key.truncate(start);
                    continue 'rows;
                }
                let bytes = match k.key_type {
                    KeyType::Int32 => {
                        push_int32_key(array.as_primitive::<Int32Type>().value(i), &mut key);
                        continue;
                    }
                    KeyType::Int64 => {
                        push_int64_key(array.as_primitive::<Int64Type>().value(i), &mut key);
                        continue;
                    }
                    KeyType::String => array.as_string::<i32>().value(i).as_bytes(),
                    KeyType::Bytes => array.as_binary::<i32>().value(i),
                };
                push_bytes_key(bytes, &mut key, &k.name)
                    .map_err(|e| arrow::error::ArrowError::InvalidArgumentError(e.to_string()))?;
            }
            in_window += 1;
            let created_ts =
                created.map_or(
                    i64::MIN,
                    |c| if c.is_null(i) { i64::MIN } else { c.value(i) },
                );
            let seq = ((file as u64) << 40) | row_of(i);
            entries.push((start, key.len(), (event, created_ts, seq), i));
        }
        if let Some(c) = counters {
            c.in_window.fetch_add(in_window, Ordering::Relaxed);
            c.null_key.fetch_add(null_key, Ordering::Relaxed);
            c.null_ts.fetch_add(null_ts, Ordering::Relaxed);
        }
        Ok((key, entries))
    }

    /// Encodes the batch's newest row per key.
    fn encode_batch(
        &self,
        batch: &RecordBatch,
        file: usize,
        row_of: &dyn Fn(usize) -> u64,
        counters: Option<&Counters>,
    ) -> ArrowResult<KeyedRows> {
        let (keys, entries) = self.batch_entries(batch, file, row_of, counters)?;
        let entries = newest_per_key(&keys, entries);
        let feature_arrays: Vec<ArrayRef> = self
            .view
            .features
            .iter()
            .zip(&self.feature_columns)
            .map(|(f, col)| column(batch, col, &f.value_type.to_arrow()))
            .collect::<ArrowResult<_>>()?;
        let features: Vec<Col<'_>> = self
            .view
            .features
            .iter()
            .zip(&feature_arrays)
            .map(|(f, a)| Col::new(f.value_type, a))
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for (start, end, version, i) in entries {
            let key = &keys[start..end];
            let mut row = RowWriter::new(self.fingerprint, version, features.len());
            for col in &features {
                col.write(i, &mut row);
            }
            out.push((key.to_vec(), row.finish()));
        }
        Ok(out)
    }

    /// Folds the newest version of every key of one row group into `newest`; stops once it
    /// holds more than [`MAX_TRACKED_KEYS`] keys.
    fn scan_versions(
        &self,
        task: &Task,
        newest: &Mutex<NewestVersions>,
        counters: &Counters,
    ) -> Result<()> {
        let full = |m: &NewestVersions| m.len() > MAX_TRACKED_KEYS;
        if newest.lock().map_or(true, |m| full(&m)) {
            return Ok(());
        }
        let mut offset = task.first_row;
        for batch in self.reader(task, false, None)? {
            let batch = batch.map_err(|e| self.source_error(task.file, e.to_string()))?;
            let (keys, entries) = self
                .batch_entries(&batch, task.file, &|i| offset + i as u64, Some(counters))
                .map_err(|e| self.source_error(task.file, e.to_string()))?;
            offset += batch.num_rows() as u64;
            counters
                .scanned
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            let mut shared = newest
                .lock()
                .map_err(|_| OnlineError::Corrupt("poisoned lock".into()))?;
            if full(&shared) {
                return Ok(());
            }
            for (start, end, version, _) in entries {
                merge_version(&mut shared, &keys[start..end], version);
            }
        }
        Ok(())
    }

    /// A reader of one row group: the key and timestamp columns, plus the features when
    /// `with_features`.
    fn reader(
        &self,
        task: &Task,
        with_features: bool,
        rows: Option<&[u64]>,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
        let mut wanted: Vec<&str> = self.keys.iter().map(|(_, c)| c.as_str()).collect();
        if with_features {
            wanted.extend(self.feature_columns.iter().map(String::as_str));
        }
        wanted.push(&self.ts_column);
        wanted.extend(self.created_column.as_deref());
        // Only `rows` (offsets in the row group, ascending) are decoded when given.
        let mut selected = rows.map(|r| r.iter().map(|&r| r as usize));
        row_group_reader(
            &self.files[task.file],
            &self.metadata[task.file],
            &wanted,
            task.row_group,
            task.rows,
            selected
                .as_mut()
                .map(|r| r as &mut dyn Iterator<Item = usize>),
            BATCH_ROWS,
        )
        .map_err(|e| self.source_error(task.file, e))
    }
}

/// `(start, end)` of a key in a batch's key buffer, its version, and its row in the batch.
type Entry = (usize, usize, RowVersion, usize);

/// The newest version of every key of a window (foldhash: SipHash dominated this pass).
type NewestVersions = HashMap<Vec<u8>, RowVersion, foldhash::fast::RandomState>;

type ArrowResult<T> = std::result::Result<T, arrow::error::ArrowError>;

/// For each task, the offsets in its row group of the rows that are some key's newest.
fn winners_by_task(tasks: &[Task], newest: &NewestVersions) -> Vec<Vec<u64>> {
    let mut by_file: HashMap<usize, Vec<u64>> = HashMap::new();
    for (_, _, seq) in newest.values() {
        by_file
            .entry(usize::try_from(seq >> 40).unwrap_or(usize::MAX))
            .or_default()
            .push(seq & ((1 << 40) - 1));
    }
    for rows in by_file.values_mut() {
        rows.sort_unstable();
    }
    tasks
        .iter()
        .map(|t| {
            let rows = by_file.get(&t.file).map_or(&[][..], Vec::as_slice);
            let from = rows.partition_point(|&r| r < t.first_row);
            let to = rows.partition_point(|&r| r < t.first_row + t.rows);
            rows[from..to].iter().map(|r| r - t.first_row).collect()
        })
        .collect()
}

/// `entries` reduced to the newest row of each key, sorted by key: sorting puts each key's
/// newest row last in its run, and rows are then written in key order (RocksDB's memtable
/// inserts sorted keys far faster).
fn newest_per_key(keys: &[u8], mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_unstable_by(|a, b| keys[a.0..a.1].cmp(&keys[b.0..b.1]).then(a.2.cmp(&b.2)));
    let mut newest: Vec<Entry> = Vec::with_capacity(entries.len());
    for (j, e) in entries.iter().enumerate() {
        let last_of_key = entries
            .get(j + 1)
            .is_none_or(|next| keys[next.0..next.1] != keys[e.0..e.1]);
        if last_of_key {
            newest.push(*e);
        }
    }
    newest
}

fn merge_version(map: &mut NewestVersions, key: &[u8], version: RowVersion) {
    match map.get_mut(key) {
        Some(v) if *v < version => *v = version,
        Some(_) => {}
        None => {
            map.insert(key.to_vec(), version);
        }
    }
}

/// A column of `batch` cast to `t`.
fn column(batch: &RecordBatch, name: &str, t: &DataType) -> ArrowResult<ArrayRef> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!("column '{name}' is missing"))
    })?;
    cast(col, t)
}

/// A feature column, downcast once per batch.
enum Col<'a> {
    Scalar(Scalar<'a>),
    List(&'a ListArray, Scalar<'a>),
}

enum Scalar<'a> {
    Bool(&'a BooleanArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    String(&'a StringArray),
    Bytes(&'a BinaryArray),
    Timestamp(&'a TimestampMicrosecondArray),
}

impl<'a> Scalar<'a> {
    fn new(t: ScalarType, a: &'a dyn Array) -> Self {
        match t {
            ScalarType::Bool => Self::Bool(a.as_boolean()),
            ScalarType::Int32 => Self::Int32(a.as_primitive::<Int32Type>()),
            ScalarType::Int64 => Self::Int64(a.as_primitive::<Int64Type>()),
            ScalarType::Float32 => Self::Float32(a.as_primitive::<Float32Type>()),
            ScalarType::Float64 => Self::Float64(a.as_primitive::<Float64Type>()),
            ScalarType::String => Self::String(a.as_string::<i32>()),
            ScalarType::Bytes => Self::Bytes(a.as_binary::<i32>()),
            ScalarType::Timestamp => Self::Timestamp(a.as_primitive::<TimestampMicrosecondType>()),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Self::Bool(a) => a.is_null(i),
            Self::Int32(a) => a.is_null(i),
            Self::Int64(a) => a.is_null(i),
            Self::Float32(a) => a.is_null(i),
            Self::Float64(a) => a.is_null(i),
            Self::String(a) => a.is_null(i),
            Self::Bytes(a) => a.is_null(i),
            Self::Timestamp(a) => a.is_null(i),
        }
    }

    /// Appends value `i`; strings and bytes get a `u32` length prefix when `prefixed`.
    /// A null list element is written as the type's zero value.
    fn push(&self, i: usize, prefixed: bool, out: &mut Vec<u8>) {
        fn var(b: &[u8], prefixed: bool, out: &mut Vec<u8>) {
            if prefixed {
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        match self {
            Self::String(a) => var(a.value(i).as_bytes(), prefixed, out),
            Self::Bytes(a) => var(a.value(i), prefixed, out),
            Self::Bool(a) => out.push(u8::from(a.value(i))),
            Self::Int32(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Self::Int64(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Self::Float32(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Self::Float64(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Self::Timestamp(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
        }
    }
}

impl<'a> Col<'a> {
    fn new(t: ValueType, a: &'a ArrayRef) -> Self {
        match t {
            ValueType::Scalar(s) => Self::Scalar(Scalar::new(s, a.as_ref())),
            ValueType::List(s) => {
                let list = a.as_list::<i32>();
                Self::List(list, Scalar::new(s, list.values().as_ref()))
            }
        }
    }

    fn write(&self, i: usize, row: &mut RowWriter) {
        match self {
            Self::Scalar(s) if s.is_null(i) => row.null(),
            Self::Scalar(s) => row.value(|out| s.push(i, false, out)),
            Self::List(l, _) if l.is_null(i) => row.null(),
            Self::List(l, items) => row.value(|out| {
                let offsets = l.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                out.extend_from_slice(
                    &u32::try_from(end - start).unwrap_or(u32::MAX).to_le_bytes(),
                );
                for j in start..end {
                    items.push(j, true, out);
                }
            }),
        }
    }
}
