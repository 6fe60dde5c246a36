//! Materialization: the latest row per entity key of an online view, from its Parquet source
//! into the online store.
//!
//! The source's row groups whose event-time statistics overlap the window are read by the
//! shared scan layer on every worker thread, a bounded batch at a time. A first pass over the
//! key and time columns finds the newest version of every key in the window (memory: about
//! 100 bytes per distinct key, up to [`MAX_TRACKED_KEYS`]; beyond that the pass is dropped);
//! the second pass decodes and writes only those rows, in key order, one batch per source
//! batch. The store's newest-wins merge resolves keys across batches, files and runs either
//! way, so windows may be re-run or run out of order. Rows with a null key or event time are
//! skipped and counted. Versions are `(event ns, created ns, file and row)`, exactly the
//! point-in-time join's order. Incremental runs advance the view's watermark only after all
//! its rows are durable. [`ComputedRun`] writes newest rows computed elsewhere (a Spark
//! cluster) by the same rules.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use quiver_core::{Feature, FeatureView, JoinKey, ScalarType, Source, ValueType, format_nanos};
use quiver_source::{
    NewestVersions, SourceScan, Sources, Task, VersionedRows, in_parallel, merge_version,
    winners_by_task,
};

use crate::error::{OnlineError, Result};
use crate::row::{RowVersion, RowWriter, layout_fingerprint};
use crate::store::{OnlineStore, ViewId, ViewRows};

/// Which rows to materialize (times in ns since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Rows with `start <= event_ts <= end`; the watermark is not touched.
    Range {
        /// Inclusive start.
        start: i64,
        /// Inclusive end.
        end: i64,
    },
    /// From each view's watermark (minus `lookback`) to `end`; the first run starts at
    /// `end - ttl`, or at the earliest data when the ttl is 0. Advances the watermark to `end`.
    Incremental {
        /// Inclusive end.
        end: i64,
        /// How far before the watermark to re-read, for late data.
        lookback: Duration,
    },
}

/// One online view to materialize: its definition, source and stored rows.
#[derive(Debug, Clone)]
pub struct ViewTarget<'a> {
    /// The view.
    pub view: &'a FeatureView,
    /// Its source.
    pub source: &'a Source,
    /// Its join keys.
    pub keys: Vec<JoinKey>,
    /// Where its rows go.
    pub id: ViewId,
}

/// How a materialization runs.
#[derive(Debug, Clone, Copy)]
pub struct MaterializeOptions<'a> {
    /// Worker threads.
    pub threads: usize,
    /// Set to stop the run between batches ([`OnlineError::Cancelled`]); the watermark does
    /// not move.
    pub cancel: Option<&'a AtomicBool>,
    /// Run the workers at a lower CPU priority than the process's other threads, so a
    /// server's requests come first and the run takes what they leave.
    pub background: bool,
}

impl Default for MaterializeOptions<'_> {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            cancel: None,
            background: false,
        }
    }
}

/// Lowers the CPU priority of the calling thread to the lowest (nice 19, as RocksDB does for
/// its background pools; Linux only, elsewhere a no-op).
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    }
}

/// What materialization did for one view.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewReport {
    /// The feature view.
    pub view: String,
    /// Window start (ns, inclusive).
    pub start: i64,
    /// Window end (ns, inclusive).
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
    /// The newest event time (ns) among the rows in the window, which were written.
    #[serde(default)]
    pub newest_event_ts: Option<i64>,
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
    /// A view starts; `rows` is the number of rows its passes will read.
    ViewStarted {
        /// The view.
        view: &'a str,
        /// Rows to read.
        rows: u64,
    },
    /// More rows were read.
    Rows(u64),
}

/// Above this many distinct keys in a window, pass 1 gives up (its map holds about 100 bytes
/// per key) and pass 2 reads every row, leaving newest-wins to each batch and the store.
const MAX_TRACKED_KEYS: usize = 10_000_000;

fn ttl_nanos(view: &FeatureView) -> Option<i64> {
    view.ttl
        .limit()
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The window a run of `target` reads: a range as given, or an incremental window from the
/// view's watermark.
pub fn resolve_window(
    store: &dyn OnlineStore,
    target: &ViewTarget<'_>,
    window: Window,
) -> Result<(i64, i64)> {
    let (start, end) = match window {
        Window::Range { start, end } => (start, end),
        Window::Incremental { end, lookback } => {
            let lookback = i64::try_from(lookback.as_nanos()).unwrap_or(i64::MAX);
            let start = match store.watermark(&target.id)? {
                Some(wm) => wm.saturating_sub(lookback),
                None => ttl_nanos(target.view).map_or(i64::MIN, |ttl| end.saturating_sub(ttl)),
            };
            (start, end)
        }
    };
    if start > end {
        return Err(OnlineError::InvalidRequest(format!(
            "feature view '{}': window start {} is after its end {}",
            target.view.name,
            fmt_nanos(start),
            fmt_nanos(end)
        )));
    }
    Ok((start, end))
}

/// Materializes one online view over `window`.
pub fn materialize_view(
    store: &dyn OnlineStore,
    sources: &Sources,
    target: &ViewTarget<'_>,
    window: Window,
    options: MaterializeOptions<'_>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ViewReport> {
    let started = Instant::now();
    let view = target.view;
    let (start, end) = online_window(store, target, window)?;
    let features: Vec<&Feature> = view.features.iter().collect();
    let scan = sources.scan(target.source, target.keys.clone(), &features)?;
    let plan = ViewPlan {
        target,
        tasks: scan.tasks(start, end),
        scan,
        start,
        end,
        fingerprint: layout_fingerprint(&view.features),
        cancel: options.cancel,
    };
    let total_rows: u64 = plan.tasks.iter().map(|t| t.rows).sum();
    // Both passes report every row group they finish.
    progress(Progress::ViewStarted {
        view: &view.name,
        rows: 2 * total_rows,
    });

    // Pass 1 (keys and times only): the newest version of every key in the window, so pass 2
    // decodes and writes only those rows. Dropped when the window has more keys than can be
    // tracked in memory: pass 2 then reads everything and keeps each batch's newest.
    let pass1 = Counters::default();
    let newest = Mutex::new(NewestVersions::default());
    let init = || {
        if options.background {
            lower_thread_priority();
        }
    };
    in_parallel(plan.tasks.len(), options.threads, init, |t, ()| {
        plan.scan_versions(&plan.tasks[t], &newest, &pass1)?;
        progress(Progress::Rows(plan.tasks[t].rows));
        Ok::<_, OnlineError>(())
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
    in_parallel(plan.tasks.len(), options.threads, init, |t, ()| {
        let task_winners = winners.as_ref().map(|w| w[t].as_slice());
        plan.run(store, &plan.tasks[t], task_winners, &counters)?;
        progress(Progress::Rows(plan.tasks[t].rows));
        Ok::<_, OnlineError>(())
    })?;
    plan.check_cancel()?;
    commit(store, target, window, end)?;
    Ok(counters.report(
        view,
        (start, end),
        (plan.scan.file_count(), plan.tasks.len()),
        started,
    ))
}

/// The window of a run of `target`, which must be online.
fn online_window(
    store: &dyn OnlineStore,
    target: &ViewTarget<'_>,
    window: Window,
) -> Result<(i64, i64)> {
    if !target.view.online {
        return Err(OnlineError::FailedPrecondition(format!(
            "feature view '{}' is not online (online: false)",
            target.view.name
        )));
    }
    resolve_window(store, target, window)
}

/// Ends a run whose rows are all written: an incremental run advances the watermark to `end`
/// (never back) once the rows are durable; a range run makes them durable. A bulk load (a
/// range run, or the first incremental run of a view) is then compacted, so reads find whole
/// rows rather than merging every written row on each request.
fn commit(
    store: &dyn OnlineStore,
    target: &ViewTarget<'_>,
    window: Window,
    end: i64,
) -> Result<()> {
    match window {
        Window::Incremental { .. } => {
            let previous = store.watermark(&target.id)?;
            store.commit_watermark(&target.id, end.max(previous.unwrap_or(i64::MIN)))?;
            if previous.is_none() {
                store.compact_view(&target.id)?;
            }
            Ok(())
        }
        Window::Range { .. } => {
            store.flush()?;
            store.compact_view(&target.id)
        }
    }
}

/// What a scan elsewhere (a Spark cluster) read for a [`ComputedRun`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanFacts {
    /// Parquet files of the source.
    pub files: usize,
    /// Row groups whose event times overlap the window.
    pub row_groups_read: usize,
    /// Rows of those row groups.
    pub rows_scanned: u64,
    /// Rows inside the window.
    pub rows_in_window: u64,
    /// Rows in the window skipped because a join key was null.
    pub skipped_null_key: u64,
    /// Rows skipped because the event timestamp was null.
    pub skipped_null_timestamp: u64,
}

/// A materialization whose newest row per key is computed away from this process (on a
/// Spark cluster) and written here exactly as [`materialize_view`] writes its own: the same
/// row encoding, the store's newest-wins merge, and the watermark moved only after every row
/// is durable.
#[derive(Debug)]
pub struct ComputedRun<'a> {
    target: &'a ViewTarget<'a>,
    window: Window,
    start: i64,
    end: i64,
    fingerprint: u32,
    counters: Counters,
    started: Instant,
}

impl<'a> ComputedRun<'a> {
    /// Starts a run of `target` (which must be online) over `window`.
    pub fn start(
        store: &dyn OnlineStore,
        target: &'a ViewTarget<'a>,
        window: Window,
    ) -> Result<Self> {
        let started = Instant::now();
        let (start, end) = online_window(store, target, window)?;
        Ok(Self {
            target,
            window,
            start,
            end,
            fingerprint: layout_fingerprint(&target.view.features),
            counters: Counters::default(),
            started,
        })
    }

    /// The resolved window: start and end (ns, inclusive).
    pub fn window(&self) -> (i64, i64) {
        (self.start, self.end)
    }

    /// Writes `rows` (each key's newest row in the window, features in the view's order and
    /// declared types), in key order.
    pub fn write(&self, store: &dyn OnlineStore, rows: &VersionedRows) -> Result<()> {
        let view = self.target.view;
        if rows.features.len() != view.features.len() {
            return Err(OnlineError::InvalidRequest(format!(
                "feature view '{}': {} feature columns computed for {} features",
                view.name,
                rows.features.len(),
                view.features.len()
            )));
        }
        let features: Vec<Col<'_>> = view
            .features
            .iter()
            .zip(&rows.features)
            .map(|(f, a)| Col::new(f.value_type, a))
            .collect();
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(rows.versions.len());
        let mut newest = i64::MIN;
        for (i, version) in rows.versions.iter().enumerate() {
            let mut key = Vec::new();
            if !rows.keys.encode(i, &mut key) {
                continue;
            }
            newest = newest.max(version.0);
            let mut row = RowWriter::new(self.fingerprint, *version, features.len());
            for col in &features {
                col.write(i, &mut row);
            }
            out.push((key, row.finish()));
        }
        if out.is_empty() {
            return Ok(());
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        store.write(
            &[ViewRows {
                view: &self.target.id,
                rows: &out,
            }],
            false,
        )?;
        let bytes: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
        let c = &self.counters;
        c.written.fetch_add(out.len() as u64, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        c.newest_event.fetch_max(newest, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the run once every row is written: the watermark advances (incremental runs) or
    /// the rows are made durable (ranges).
    pub fn finish(self, store: &dyn OnlineStore, facts: ScanFacts) -> Result<ViewReport> {
        commit(store, self.target, self.window, self.end)?;
        let c = &self.counters;
        c.scanned.store(facts.rows_scanned, Ordering::Relaxed);
        c.in_window.store(facts.rows_in_window, Ordering::Relaxed);
        c.null_key.store(facts.skipped_null_key, Ordering::Relaxed);
        c.null_ts
            .store(facts.skipped_null_timestamp, Ordering::Relaxed);
        Ok(c.report(
            self.target.view,
            (self.start, self.end),
            (facts.files, facts.row_groups_read),
            self.started,
        ))
    }
}

fn fmt_nanos(ns: i64) -> String {
    match ns {
        i64::MIN => "the beginning".into(),
        i64::MAX => "the end".into(),
        _ => format_nanos(ns),
    }
}

#[derive(Debug)]
struct Counters {
    scanned: AtomicU64,
    in_window: AtomicU64,
    /// The newest event time of the rows in the window.
    newest_event: AtomicI64,
    written: AtomicU64,
    bytes: AtomicU64,
    null_key: AtomicU64,
    null_ts: AtomicU64,
}

impl Counters {
    /// The report of a run of `view` over `window` that read `files` files and `row_groups`
    /// row groups.
    fn report(
        &self,
        view: &FeatureView,
        (start, end): (i64, i64),
        (files, row_groups): (usize, usize),
        started: Instant,
    ) -> ViewReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ViewReport {
            view: view.name.clone(),
            start,
            end,
            files,
            row_groups_read: row_groups,
            rows_scanned: load(&self.scanned),
            rows_in_window: load(&self.in_window),
            rows_written: load(&self.written),
            newest_event_ts: (load(&self.in_window) > 0)
                .then(|| self.newest_event.load(Ordering::Relaxed)),
            bytes_written: load(&self.bytes),
            skipped_null_key: load(&self.null_key),
            skipped_null_timestamp: load(&self.null_ts),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            scanned: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            newest_event: AtomicI64::new(i64::MIN),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            null_key: AtomicU64::new(0),
            null_ts: AtomicU64::new(0),
        }
    }
}

/// Everything needed to turn a view's source row groups into online rows.
struct ViewPlan<'a> {
    target: &'a ViewTarget<'a>,
    scan: SourceScan,
    tasks: Vec<Task>,
    start: i64,
    end: i64,
    fingerprint: u32,
    cancel: Option<&'a AtomicBool>,
}

impl ViewPlan<'_> {
    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(OnlineError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Pass 2 over one row group: the winning rows when pass 1 found them, else every row,
    /// keeping the newest per key of each batch.
    fn run(
        &self,
        store: &dyn OnlineStore,
        task: &Task,
        winners: Option<&[u32]>,
        counters: &Counters,
    ) -> Result<()> {
        if winners.is_some_and(<[u32]>::is_empty) {
            return Ok(());
        }
        let mut columns = self.scan.key_and_time_columns();
        columns.extend(
            self.target
                .view
                .features
                .iter()
                .map(|f| self.scan.feature_column(f)),
        );
        let mut done = 0usize;
        for batch in self.scan.reader(task, &columns, winners)? {
            self.check_cancel()?;
            let batch = batch.map_err(|e| self.scan.error(task.file, e.to_string()))?;
            let n = batch.num_rows();
            let row_of = |i: usize| {
                task.sequence(winners.map_or((done + i) as u64, |w| u64::from(w[done + i])))
            };
            // Without pass 1, this pass counts what pass 1 would have.
            let counting = winners.is_none().then_some(counters);
            let mut rows = self.encode_batch(&batch, task.file, &row_of, counting)?;
            done += n;
            if counting.is_some() {
                counters.scanned.fetch_add(n as u64, Ordering::Relaxed);
            }
            if !rows.is_empty() {
                rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
                store.write(
                    &[ViewRows {
                        view: &self.target.id,
                        rows: &rows,
                    }],
                    false,
                )?;
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
    /// `sequence(i)` is the tie-break sequence of the batch's row `i`.
    fn batch_entries(
        &self,
        batch: &RecordBatch,
        file: usize,
        sequence: &dyn Fn(usize) -> u64,
        counters: Option<&Counters>,
    ) -> Result<(Vec<u8>, Vec<Entry>)> {
        let times = self.scan.key_and_times(batch, file)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(batch.num_rows());
        let mut key = Vec::with_capacity(batch.num_rows() * 9);
        let (mut in_window, mut null_key, mut null_ts) = (0u64, 0u64, 0u64);
        let mut newest = i64::MIN;
        for i in 0..batch.num_rows() {
            if times.event.is_null(i) {
                null_ts += 1;
                continue;
            }
            let event = times.event.value(i);
            if event < self.start || event > self.end {
                continue;
            }
            let start = key.len();
            if !times.keys.encode(i, &mut key) {
                null_key += 1;
                continue;
            }
            in_window += 1;
            newest = newest.max(event);
            entries.push((
                start,
                key.len(),
                (event, times.created_at(i), sequence(i)),
                i,
            ));
        }
        if let Some(c) = counters {
            c.in_window.fetch_add(in_window, Ordering::Relaxed);
            c.newest_event.fetch_max(newest, Ordering::Relaxed);
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
        sequence: &dyn Fn(usize) -> u64,
        counters: Option<&Counters>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (keys, entries) = self.batch_entries(batch, file, sequence, counters)?;
        let entries = newest_per_key(&keys, entries);
        let view = self.target.view;
        let feature_arrays: Vec<ArrayRef> = view
            .features
            .iter()
            .map(|f| self.scan.feature_array(batch, file, f))
            .collect::<quiver_source::Result<_>>()?;
        let features: Vec<Col<'_>> = view
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
        let columns = self.scan.key_and_time_columns();
        let mut offset = 0u64;
        for batch in self.scan.reader(task, &columns, None)? {
            self.check_cancel()?;
            let batch = batch.map_err(|e| self.scan.error(task.file, e.to_string()))?;
            let (keys, entries) = self.batch_entries(
                &batch,
                task.file,
                &|i| task.sequence(offset + i as u64),
                Some(counters),
            )?;
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
}

/// `(start, end)` of a key in a batch's key buffer, its version, and its row in the batch.
type Entry = (usize, usize, RowVersion, usize);

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
