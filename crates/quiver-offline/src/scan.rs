//! Reading one view's Parquet source: files, row groups pruned by event time, projected
//! readers, and a small work-sharing pool for both cores.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
};
use quiver_core::{Definitions, Feature, FeatureView, JoinKey, Source};
use quiver_registry::{check_view_columns, row_group_reader, source_files};

use crate::error::{OfflineError, Result};
use crate::keys::{KeyColumns, sorted_keys};
use crate::timestamp::nanos;

/// Rows per decoded batch: bounds memory per worker.
pub(crate) const BATCH_ROWS: usize = 16 * 1024;

/// One row group to read.
pub(crate) struct Task {
    pub(crate) file: usize,
    pub(crate) row_group: usize,
    /// Index of the row group's first row in its file.
    pub(crate) first_row: u64,
    pub(crate) rows: u64,
}

/// A view's source, opened: every file's footer checked and decoded once.
pub(crate) struct SourceScan<'a> {
    source: &'a Source,
    files: Vec<PathBuf>,
    footers: Vec<ArrowReaderMetadata>,
    /// The view's join keys in canonical order, with their source columns.
    pub(crate) keys: Vec<(JoinKey, String)>,
    pub(crate) ts_column: String,
    pub(crate) created_column: Option<String>,
}

impl<'a> SourceScan<'a> {
    /// Opens the source of `view` and checks that every file has the key and timestamp
    /// columns and the `features` with compatible types.
    pub(crate) fn open(
        defs: &'a Definitions,
        data_root: &Path,
        view: &FeatureView,
        features: &[&Feature],
    ) -> Result<Self> {
        let source = defs.sources.get(&view.source).ok_or_else(|| {
            OfflineError::invalid(format!(
                "feature view '{}' names unknown source '{}'",
                view.name, view.source
            ))
        })?;
        let keys = sorted_keys(defs.join_keys(view)?)
            .into_iter()
            .map(|k| {
                let col = source.column_for(&k.name).to_owned();
                (k, col)
            })
            .collect();
        let mut scan = Self {
            source,
            files: source_files(data_root, &source.path)?,
            footers: Vec::new(),
            keys,
            ts_column: source.column_for(&source.timestamp_field).to_owned(),
            created_column: source
                .created_timestamp_column
                .as_deref()
                .map(|c| source.column_for(c).to_owned()),
        };
        for fi in 0..scan.files.len() {
            let footer = scan.check_file(fi, features)?;
            scan.footers.push(footer);
        }
        Ok(scan)
    }

    fn check_file(&self, fi: usize, features: &[&Feature]) -> Result<ArrowReaderMetadata> {
        let err = |m: String| self.error(fi, m);
        let file = File::open(&self.files[fi]).map_err(|e| err(e.to_string()))?;
        let footer = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
            .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
        let keys = self.keys.iter().map(|(k, _)| k);
        check_view_columns(footer.schema(), self.source, keys, features.iter().copied())
            .map_err(err)?;
        Ok(footer)
    }

    pub(crate) fn error(&self, file: usize, message: String) -> OfflineError {
        OfflineError::Source {
            source_name: self.source.name.clone(),
            path: self.files[file].clone(),
            message,
        }
    }

    /// The source column of a feature.
    pub(crate) fn feature_column(&self, feature: &Feature) -> String {
        self.source.column_for(&feature.name).to_owned()
    }

    /// The row groups whose event times may fall in `[lo, hi]` (ns); statistics that are
    /// missing or unreadable keep a row group.
    pub(crate) fn tasks(&self, lo: i64, hi: i64) -> Vec<Task> {
        let mut tasks = Vec::new();
        for (fi, footer) in self.footers.iter().enumerate() {
            let metadata = footer.metadata();
            let bounds = StatisticsConverter::try_new(
                &self.ts_column,
                footer.schema(),
                footer.parquet_schema(),
            )
            .ok()
            .map(|c| {
                let groups = || metadata.row_groups().iter();
                let as_nanos = |a: std::result::Result<ArrayRef, _>| a.ok().and_then(|a| nanos(&a));
                (
                    as_nanos(c.row_group_mins(groups())),
                    as_nanos(c.row_group_maxes(groups())),
                )
            });
            let mut first_row = 0u64;
            for (rg, meta) in metadata.row_groups().iter().enumerate() {
                let rows = u64::try_from(meta.num_rows()).unwrap_or(0);
                let overlaps = match &bounds {
                    Some((Some(mins), Some(maxs))) if mins.is_valid(rg) && maxs.is_valid(rg) => {
                        maxs.value(rg) >= lo && mins.value(rg) <= hi
                    }
                    _ => true,
                };
                if overlaps && rows > 0 {
                    tasks.push(Task {
                        file: fi,
                        row_group: rg,
                        first_row,
                        rows,
                    });
                }
                first_row += rows;
            }
        }
        tasks
    }

    /// A reader of the named columns of one row group, only the given rows (offsets in the
    /// row group, ascending) when `rows` is set.
    pub(crate) fn reader(
        &self,
        task: &Task,
        columns: &[&str],
        rows: Option<&[u32]>,
    ) -> Result<ParquetRecordBatchReader> {
        let mut selected = rows.map(|r| r.iter().map(|&r| r as usize));
        row_group_reader(
            &self.files[task.file],
            &self.footers[task.file],
            columns,
            task.row_group,
            task.rows,
            selected
                .as_mut()
                .map(|r| r as &mut dyn Iterator<Item = usize>),
            BATCH_ROWS,
        )
        .map_err(|e| self.error(task.file, e))
    }

    /// The key, event-time and created-time columns of a decoded batch (times in ns).
    pub(crate) fn key_and_times(
        &self,
        batch: &RecordBatch,
        file: usize,
    ) -> Result<(
        KeyColumns,
        arrow::array::Int64Array,
        Option<arrow::array::Int64Array>,
    )> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| self.error(file, format!("column '{name}' is missing")))
        };
        let times = |name: &str| {
            nanos(col(name)?)
                .ok_or_else(|| self.error(file, format!("'{name}' is not a timestamp")))
        };
        let key_columns: Vec<&ArrayRef> = self
            .keys
            .iter()
            .map(|(_, c)| col(c))
            .collect::<Result<_>>()?;
        let keys: Vec<JoinKey> = self.keys.iter().map(|(k, _)| k.clone()).collect();
        let keys =
            KeyColumns::new(&keys, &key_columns).map_err(|e| self.error(file, e.to_string()))?;
        let ts = times(&self.ts_column)?;
        let created = self.created_column.as_deref().map(times).transpose()?;
        Ok((keys, ts, created))
    }

    /// The columns every pass reads: keys and times.
    pub(crate) fn key_and_time_columns(&self) -> Vec<&str> {
        let mut c: Vec<&str> = self.keys.iter().map(|(_, c)| c.as_str()).collect();
        c.push(&self.ts_column);
        c.extend(self.created_column.as_deref());
        c
    }
}

/// A feature column of a batch, converted to the feature's declared Arrow type.
pub(crate) fn feature_array(
    batch: &RecordBatch,
    column: &str,
    feature: &Feature,
) -> arrow::error::Result<ArrayRef> {
    let a = batch.column_by_name(column).ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!("column '{column}' is missing"))
    })?;
    cast(a, &feature.value_type.to_arrow())
}

/// Runs `work(task, state)` for every task on `threads` workers, each with its own state from
/// `init`; returns the states. Stops at the first error.
pub(crate) fn in_parallel<S: Send>(
    tasks: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(usize, &mut S) -> Result<()> + Sync,
) -> Result<Vec<S>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<OfflineError>> = Mutex::new(None);
    let states = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, tasks.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t >= tasks || failed.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Err(e) = work(t, &mut state) {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            break;
                        }
                    }
                    state
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<S>>()
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(states),
    }
}
