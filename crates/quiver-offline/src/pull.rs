//! A source's rows in a time window, the way Feast's offline stores pull them: every row
//! (`pull_all_from_table_or_query`) or the newest row per key (`pull_latest_from_table_or_query`,
//! what `feast materialize` reads).
//!
//! The window is `start <= event_ts <= end`, both ends inclusive, as for materialization.
//! "Newest" is the contract's order: event time, then created time, then file and row, so a
//! pull of the latest rows gives exactly the rows Quiver's own materialization writes. Rows
//! with a null event time are outside every window; a row with a null key is kept by
//! [`PullMode::All`] and matches no key for [`PullMode::Latest`]. Row groups are pruned by
//! their event-time statistics; the latest rows are found in a first pass over the key and
//! time columns (on every worker, about 100 bytes per distinct key) and only they are decoded
//! by the second. Batches stream one row group at a time, so memory does not grow with the
//! source.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use quiver_core::{JoinKey, KeyType, Source};
use quiver_source::{
    NewestVersions, SourceScan, Sources, Task, in_parallel, merge_version, winners_by_task,
};

use crate::error::{OfflineError, Result};

/// Which rows of the window a pull returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// Every row.
    All,
    /// The newest row of each key.
    Latest,
}

/// A pull from one source.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// Join key columns, as the source's files name them (what Feast sends) or as views
    /// name them (after `field_mapping`); output columns keep the names given.
    pub keys: Vec<String>,
    /// Feature columns, named either way.
    pub features: Vec<String>,
    /// The event-time column as the caller names it: the source's `timestamp_field` or the
    /// file column it is mapped from. The output column has this name.
    pub timestamp_field: String,
    /// The created-time column, named the same way, when the caller wants it.
    pub created_timestamp_column: Option<String>,
    /// Inclusive window start, ns since the epoch (`i64::MIN` for none).
    pub start: i64,
    /// Inclusive window end, ns.
    pub end: i64,
    /// All rows or the newest per key.
    pub mode: PullMode,
}

/// Pulls `request`'s rows of `source`: checks every column first, then (for
/// [`PullMode::Latest`]) finds the newest row per key on `threads` workers, and returns the
/// rows as a stream of batches.
pub fn pull(
    sources: &Sources,
    source: &Source,
    request: &PullRequest,
    threads: usize,
) -> Result<PulledRows> {
    let schema = sources.schema(source)?;
    // A name given either way: (file column, mapped name).
    let names = |name: &str| -> (String, String) {
        match source.field_mapping.get(name) {
            Some(mapped) => (name.to_owned(), mapped.clone()),
            None => (source.column_for(name).to_owned(), name.to_owned()),
        }
    };
    let field = |name: &str, role: &str| {
        let (_, mapped) = names(name);
        schema.column(&mapped).cloned().ok_or_else(|| {
            OfflineError::invalid(format!(
                "source '{}' has no {role} column '{name}' (columns: {})",
                source.name,
                schema.column_names().join(", ")
            ))
        })
    };
    let time_name = |given: &str, declared: Option<&str>, role: &str| {
        let declared = declared.ok_or_else(|| {
            OfflineError::invalid(format!("source '{}' declares no {role}", source.name))
        })?;
        if given == declared || given == source.column_for(declared) {
            Ok(declared.to_owned())
        } else {
            Err(OfflineError::invalid(format!(
                "source '{}': the {role} is '{declared}', not '{given}'",
                source.name
            )))
        }
    };
    let event = time_name(
        &request.timestamp_field,
        Some(&source.timestamp_field),
        "timestamp_field",
    )?;
    let created = request
        .created_timestamp_column
        .as_deref()
        .map(|c| {
            time_name(
                c,
                source.created_timestamp_column.as_deref(),
                "created_timestamp_column",
            )
        })
        .transpose()?;
    let mut keys = Vec::with_capacity(request.keys.len());
    for name in &request.keys {
        let f = field(name, "join key")?;
        keys.push(JoinKey {
            name: names(name).1,
            key_type: key_type(f.data_type()).ok_or_else(|| {
                OfflineError::invalid(format!(
                    "source '{}': join key '{name}' is of type {}, which cannot be a key",
                    source.name,
                    f.data_type()
                ))
            })?,
        });
    }
    // Output columns: (file column, output name, type): keys, features, then times.
    let mut columns: Vec<(String, String, DataType)> = Vec::new();
    for (name, role) in request
        .keys
        .iter()
        .map(|k| (k, "join key"))
        .chain(request.features.iter().map(|f| (f, "feature")))
    {
        if columns.iter().any(|(_, out, _)| out == name) {
            return Err(OfflineError::invalid(format!(
                "column '{name}' is asked for twice"
            )));
        }
        let t = field(name, role)?.data_type().clone();
        columns.push((names(name).0, name.clone(), t));
    }
    let times = std::iter::once((event, &request.timestamp_field))
        .chain(created.zip(request.created_timestamp_column.as_ref()));
    for (declared, given) in times {
        if !columns.iter().any(|(_, out, _)| out == given) {
            let t = field(&declared, "time")?.data_type().clone();
            columns.push((source.column_for(&declared).to_owned(), given.clone(), t));
        }
    }
    let scan = sources.scan(source, keys, &[])?;
    let tasks = scan.tasks(request.start, request.end);
    let window = (request.start, request.end);
    let winners = match request.mode {
        PullMode::All => None,
        PullMode::Latest => Some(newest_rows(&scan, &tasks, window, threads)?),
    };
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(_, out, t)| Field::new(out, t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mut read: Vec<String> = scan
        .key_and_time_columns()
        .into_iter()
        .map(str::to_owned)
        .collect();
    for (col, _, _) in &columns {
        if !read.contains(col) {
            read.push(col.clone());
        }
    }
    Ok(PulledRows {
        columns: columns.into_iter().map(|(col, _, t)| (col, t)).collect(),
        scan,
        tasks,
        winners,
        read,
        schema,
        window,
        next: 0,
        reader: None,
    })
}

/// The key type a source column of type `t` is read as.
fn key_type(t: &DataType) -> Option<KeyType> {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            Some(KeyType::Int32)
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Some(KeyType::Int64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyType::String),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(KeyType::Bytes),
        _ => None,
    }
}

/// Pass 1: for each task, the offsets of the rows that are some key's newest in the window.
fn newest_rows(
    scan: &SourceScan,
    tasks: &[Task],
    (start, end): (i64, i64),
    threads: usize,
) -> Result<Vec<Vec<u32>>> {
    let columns = scan.key_and_time_columns();
    let maps = in_parallel(
        tasks.len(),
        threads,
        NewestVersions::default,
        |t, newest| {
            let task = &tasks[t];
            let mut offset = 0u64;
            let mut key = Vec::new();
            for batch in scan.reader(task, &columns, None)? {
                let batch = batch.map_err(|e| scan.error(task.file, e.to_string()))?;
                let times = scan.key_and_times(&batch, task.file)?;
                for i in 0..batch.num_rows() {
                    let event = times.event.value(i);
                    key.clear();
                    if times.event.is_valid(i)
                        && (start..=end).contains(&event)
                        && times.keys.encode(i, &mut key)
                    {
                        let version =
                            (event, times.created_at(i), task.sequence(offset + i as u64));
                        merge_version(newest, &key, version);
                    }
                }
                offset += batch.num_rows() as u64;
            }
            Ok::<_, OfflineError>(())
        },
    )?;
    let mut maps = maps.into_iter();
    let mut newest = maps.next().unwrap_or_default();
    for map in maps {
        for (key, version) in map {
            merge_version(&mut newest, &key, version);
        }
    }
    Ok(winners_by_task(tasks, &newest))
}

/// The rows of a pull, a batch at a time (an iterator of [`Result<RecordBatch>`]).
pub struct PulledRows {
    scan: SourceScan,
    tasks: Vec<Task>,
    /// For [`PullMode::Latest`]: the rows to read of each task.
    winners: Option<Vec<Vec<u32>>>,
    /// File columns read (keys and times first, for the window check).
    read: Vec<String>,
    /// Output columns: file column and type.
    columns: Vec<(String, DataType)>,
    schema: SchemaRef,
    window: (i64, i64),
    next: usize,
    reader: Option<(usize, ParquetRecordBatchReader)>,
}

impl std::fmt::Debug for PulledRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulledRows")
            .field("schema", &self.schema)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl PulledRows {
    /// The schema of every batch: keys, features, the event time, the created time.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The next task's reader, or `None` when every task is read.
    fn open_next(&mut self) -> Result<Option<()>> {
        while self.next < self.tasks.len() {
            let t = self.next;
            self.next += 1;
            let rows = self.winners.as_ref().map(|w| w[t].as_slice());
            if rows.is_some_and(<[u32]>::is_empty) {
                continue;
            }
            let read: Vec<&str> = self.read.iter().map(String::as_str).collect();
            self.reader = Some((t, self.scan.reader(&self.tasks[t], &read, rows)?));
            return Ok(Some(()));
        }
        Ok(None)
    }

    /// A read batch reduced to the window's rows and the output columns.
    fn output(&self, file: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let times = self.scan.key_and_times(batch, file)?;
        let (start, end) = self.window;
        let in_window: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(times.event.is_valid(i) && (start..=end).contains(&times.event.value(i))))
            .collect();
        let columns = self
            .columns
            .iter()
            .map(|(col, t)| {
                let a = batch
                    .column_by_name(col)
                    .ok_or_else(|| self.scan.error(file, format!("column '{col}' is missing")))?;
                Ok(cast(a, t)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let out = RecordBatch::try_new(self.schema(), columns)?;
        Ok(filter_record_batch(&out, &in_window)?)
    }
}

impl Iterator for PulledRows {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.reader.is_none() {
                match self.open_next() {
                    Ok(Some(())) => {}
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let (t, reader) = self.reader.as_mut()?;
            let file = self.tasks[*t].file;
            match reader.next() {
                None => self.reader = None,
                Some(Err(e)) => {
                    self.reader = None;
                    return Some(Err(self.scan.error(file, e.to_string()).into()));
                }
                Some(Ok(batch)) => match self.output(file, &batch) {
                    Ok(out) if out.num_rows() == 0 => {}
                    other => return Some(other),
                },
            }
        }
    }
}
