//! Scanning one view's source: every file opened once (the handles are kept, so a file that
//! is replaced or removed while the scan runs is still read whole), footers checked, row
//! groups pruned by event-time statistics, projected readers, and a work-sharing pool.

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::reader::{ChunkReader, Length};
use quiver_core::{Feature, JoinKey, KeyColumns, Source, canonical_order};

use crate::SourceFile;
use crate::error::{Result, SourceError};
use crate::objects::ObjectReader;
use crate::time::nanos;

/// Rows per decoded batch: bounds memory per worker.
pub const BATCH_ROWS: usize = 16 * 1024;

/// One row group to read.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    /// Index of the file in the scan.
    pub file: usize,
    /// Row group in the file.
    pub row_group: usize,
    /// Index of the row group's first row in its file.
    pub first_row: u64,
    /// Rows in the row group.
    pub rows: u64,
}

impl Task {
    /// The tie-break sequence of row `row` of the row group: file index, then row in the
    /// file. Later files (sorted by path) and later rows win ties.
    pub fn sequence(&self, row: u64) -> u64 {
        ((self.file as u64) << ROW_BITS) | (self.first_row + row)
    }
}

/// Bits of a sequence that hold the row within its file.
pub const ROW_BITS: u32 = 40;

/// An open file of a scan.
#[derive(Debug)]
struct ScanFile {
    file: SourceFile,
    reader: FileReader,
    footer: ArrowReaderMetadata,
}

/// How a scan reads one file: positioned reads of a held local file, or ranged GETs of an
/// object.
#[derive(Debug)]
pub(crate) enum FileReader {
    /// A local file, held open.
    Local(SharedFile),
    /// An object, read conditional on the entity tag it was listed with.
    Object(ObjectReader),
}

/// An open file read with positioned reads, so any number of readers on any threads share one
/// handle without sharing a file offset (`File::try_clone` would share it).
#[derive(Debug, Clone)]
pub(crate) struct SharedFile {
    file: Arc<File>,
    len: u64,
}

impl SharedFile {
    pub(crate) fn new(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            len,
        })
    }
}

impl SharedFile {
    pub(crate) fn handle(&self) -> &File {
        &self.file
    }
}

impl Length for SharedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SharedFile {
    type T = BufReader<PositionedReader>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::with_capacity(
            64 * 1024,
            PositionedReader {
                file: Arc::clone(&self.file),
                pos: start,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buffer = vec![0; length];
        read_exact_at(&self.file, &mut buffer, start)?;
        Ok(buffer.into())
    }
}

/// A reader of a [`SharedFile`] from a position of its own.
#[derive(Debug)]
pub(crate) struct PositionedReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// A view's source, opened: every file's footer checked and decoded once.
#[derive(Debug)]
pub struct SourceScan {
    source: Source,
    files: Vec<ScanFile>,
    /// The view's join keys in canonical order, with their source columns.
    keys: Vec<(JoinKey, String)>,
    ts_column: String,
    created_column: Option<String>,
}

impl SourceScan {
    /// Opens `files` of `source` and checks that each has the key and timestamp columns and
    /// the `features` with compatible types.
    pub(crate) fn open(
        source: &Source,
        files: Vec<(SourceFile, FileReader, ArrowReaderMetadata)>,
        keys: Vec<JoinKey>,
        features: &[&Feature],
    ) -> Result<Self> {
        let keys: Vec<(JoinKey, String)> = canonical_order(keys)
            .into_iter()
            .map(|k| {
                let col = source.column_for(&k.name).to_owned();
                (k, col)
            })
            .collect();
        let files = files
            .into_iter()
            .map(|(file, reader, footer)| ScanFile {
                file,
                reader,
                footer,
            })
            .collect();
        let scan = Self {
            source: source.clone(),
            files,
            ts_column: source.column_for(&source.timestamp_field).to_owned(),
            created_column: source
                .created_timestamp_column
                .as_deref()
                .map(|c| source.column_for(c).to_owned()),
            keys,
        };
        for (fi, f) in scan.files.iter().enumerate() {
            crate::check_view_columns(
                f.footer.schema(),
                source,
                scan.keys.iter().map(|(k, _)| k),
                features.iter().copied(),
            )
            .map_err(|m| scan.error(fi, m))?;
        }
        Ok(scan)
    }

    /// An error about file `file` of this scan.
    pub fn error(&self, file: usize, message: String) -> SourceError {
        SourceError::Data {
            source_name: self.source.name.clone(),
            file: self.files[file].file.to_string(),
            message,
        }
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Number of files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// File `file`.
    pub fn file(&self, file: usize) -> &SourceFile {
        &self.files[file].file
    }

    /// The view's join keys in canonical order.
    pub fn keys(&self) -> impl Iterator<Item = &JoinKey> {
        self.keys.iter().map(|(k, _)| k)
    }

    /// The source column of a feature.
    pub fn feature_column<'a>(&'a self, feature: &'a Feature) -> &'a str {
        self.source.column_for(&feature.name)
    }

    /// The source columns of the event time and, when the source has one, the created time.
    pub fn time_columns(&self) -> (&str, Option<&str>) {
        (&self.ts_column, self.created_column.as_deref())
    }

    /// The Arrow type of source column `column` in file `file`, if the file has it.
    pub fn column_type(&self, file: usize, column: &str) -> Option<&DataType> {
        self.files[file]
            .footer
            .schema()
            .field_with_name(column)
            .ok()
            .map(arrow::datatypes::Field::data_type)
    }

    /// The source columns of the join keys, canonical order.
    pub fn key_columns(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(_, c)| c.as_str())
    }

    /// The row groups whose event times may fall in `[lo, hi]` (ns); statistics that are
    /// missing or unreadable keep a row group.
    pub fn tasks(&self, lo: i64, hi: i64) -> Vec<Task> {
        let mut tasks = Vec::new();
        for (fi, f) in self.files.iter().enumerate() {
            let metadata = f.footer.metadata();
            let bounds = StatisticsConverter::try_new(
                &self.ts_column,
                f.footer.schema(),
                f.footer.parquet_schema(),
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

    /// A reader of the named columns of one row group; only the given rows (offsets in the
    /// row group, ascending) when `rows` is set.
    pub fn reader(
        &self,
        task: &Task,
        columns: &[&str],
        rows: Option<&[u32]>,
    ) -> Result<ParquetRecordBatchReader> {
        let f = &self.files[task.file];
        let err = |e: &dyn std::fmt::Display| self.error(task.file, e.to_string());
        let schema = f.footer.schema();
        let indices: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| columns.contains(&field.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(f.footer.parquet_schema(), indices);
        match &f.reader {
            FileReader::Local(file) => build_reader(
                ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), f.footer.clone()),
                task,
                mask,
                rows,
            ),
            FileReader::Object(object) => {
                let chunks = object
                    .prefetch(&f.footer, task.row_group, &mask)
                    .map_err(|e| err(&e))?;
                build_reader(
                    ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, f.footer.clone()),
                    task,
                    mask,
                    rows,
                )
            }
        }
        .map_err(|e| err(&e))
    }

    /// The key, event-time and created-time columns of a decoded batch (times in ns).
    pub fn key_and_times(&self, batch: &RecordBatch, file: usize) -> Result<KeyAndTimes> {
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
        Ok(KeyAndTimes {
            keys,
            event: times(&self.ts_column)?,
            created: self.created_column.as_deref().map(times).transpose()?,
        })
    }

    /// The columns every pass reads: keys and times.
    pub fn key_and_time_columns(&self) -> Vec<&str> {
        let mut c: Vec<&str> = self.keys.iter().map(|(_, c)| c.as_str()).collect();
        c.push(&self.ts_column);
        c.extend(self.created_column.as_deref());
        c
    }

    /// A feature column of a batch read by this scan, converted to the feature's declared
    /// Arrow type.
    pub fn feature_array(
        &self,
        batch: &RecordBatch,
        file: usize,
        feature: &Feature,
    ) -> Result<ArrayRef> {
        let column = self.feature_column(feature);
        let a = batch
            .column_by_name(column)
            .ok_or_else(|| self.error(file, format!("column '{column}' is missing")))?;
        cast(a, &feature.value_type.to_arrow()).map_err(|e| self.error(file, e.to_string()))
    }
}

/// A reader of `mask`'s columns of one row group, only `rows` when set.
fn build_reader<T: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<T>,
    task: &Task,
    mask: ProjectionMask,
    rows: Option<&[u32]>,
) -> parquet::errors::Result<ParquetRecordBatchReader> {
    let builder = match rows {
        Some(rows) => builder.with_row_selection(RowSelection::from_consecutive_ranges(
            rows.iter().map(|&r| r as usize..r as usize + 1),
            usize::try_from(task.rows).unwrap_or(usize::MAX),
        )),
        None => builder,
    };
    builder
        .with_projection(mask)
        .with_row_groups(vec![task.row_group])
        .with_batch_size(BATCH_ROWS)
        .build()
}

/// The key and time columns of one batch.
#[derive(Debug)]
pub struct KeyAndTimes {
    /// Canonical keys.
    pub keys: KeyColumns,
    /// Event times, ns (null where the time is null or out of range).
    pub event: Int64Array,
    /// Created times, ns, when the source has them.
    pub created: Option<Int64Array>,
}

impl KeyAndTimes {
    /// Row `i`'s created time, `i64::MIN` when there is none.
    pub fn created_at(&self, i: usize) -> i64 {
        self.created.as_ref().map_or(
            i64::MIN,
            |c| if c.is_null(i) { i64::MIN } else { c.value(i) },
        )
    }
}

/// Runs `work(task, state)` for every task on `threads` workers, each with its own state from
/// `init`; returns the states. Stops at the first error.
pub fn in_parallel<S: Send, E: Send>(
    tasks: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(usize, &mut S) -> std::result::Result<(), E> + Sync,
) -> std::result::Result<Vec<S>, E> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
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
