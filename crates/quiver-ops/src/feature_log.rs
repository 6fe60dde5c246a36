//! Feature logging: a sample of the online reads of each feature service that declares
//! `logging:`, with every value, event time and status served, written as Parquet files under
//! the service's destination (a folder under the data root).
//!
//! A read only decides whether it is sampled and, if so, moves what it read (the found rows,
//! the keys, the plan) into a bounded queue: nothing is copied or encoded on the request's
//! thread, and a full queue drops the entry (counted) rather than slowing or failing the read.
//! A thread of its own decodes the entries into Arrow and writes one file per destination
//! every `roll_every` or `roll_rows` entity rows, whole before it is visible, so every file is
//! a valid Quiver source (`timestamp_field: __log_timestamp`). The columns are Feast's: the
//! join keys, then per feature `view__feature`, `view__feature__timestamp` and
//! `view__feature__status` (Feast's status numbers), then `__log_timestamp`, `__log_date` and
//! `__request_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver_core::{Definitions, KeyType, KeyValue, SampleRate};
use quiver_online::{FeatureValue, FieldStatus, FoundRows};
use quiver_source::Sources;

use crate::catalog::PlannedRead;
use crate::value::arrow_array;

/// How the feature log batches its files.
#[derive(Debug, Clone, Copy)]
pub struct FeatureLogOptions {
    /// A destination's rows are written at least this often.
    pub roll_every: Duration,
    /// ... and once this many entity rows wait.
    pub roll_rows: usize,
    /// Reads waiting to be written; more are dropped.
    pub queue: usize,
}

impl Default for FeatureLogOptions {
    fn default() -> Self {
        Self {
            roll_every: Duration::from_secs(60),
            roll_rows: 100_000,
            queue: 10_000,
        }
    }
}

/// Where a feature service's reads are logged, worked out once per read plan.
#[derive(Debug)]
pub(crate) struct LogTarget {
    /// The service.
    pub(crate) service: String,
    /// Its destination, relative to the data root.
    pub(crate) destination: String,
    /// The share of reads logged.
    pub(crate) rate: SampleRate,
    /// Every join key of the service's views, in order, with its declared type.
    pub(crate) key_types: Vec<(String, KeyType)>,
}

impl LogTarget {
    /// The target of a read of `service` in `defs`, if it declares `logging:`.
    pub(crate) fn of(defs: &Definitions, service: &str) -> Option<Self> {
        let s = defs.feature_services.get(service)?;
        let logging = s.logging.as_ref()?;
        let mut key_types: Vec<(String, KeyType)> = Vec::new();
        for r in &s.features {
            let keys = defs.view(&r.view).and_then(|v| defs.join_keys(v)).ok()?;
            for k in keys {
                if !key_types.iter().any(|(n, _)| *n == k.name) {
                    key_types.push((k.name, k.key_type));
                }
            }
        }
        Some(Self {
            service: service.to_owned(),
            destination: logging.destination.clone(),
            rate: logging.sample_rate,
            key_types,
        })
    }
}

/// One logged read.
pub(crate) struct Entry {
    /// Where it goes.
    pub(crate) target: Arc<LogTarget>,
    /// The plan that read the rows.
    pub(crate) planned: Arc<PlannedRead>,
    /// The request's key columns.
    pub(crate) keys: Vec<(String, Vec<KeyValue>)>,
    /// What the read found.
    pub(crate) found: FoundRows,
    /// When it was served (ns).
    pub(crate) at: i64,
    /// The request's id.
    pub(crate) request_id: String,
}

enum Message {
    Entry(Box<Entry>),
    /// Write everything waiting, then answer.
    Flush(SyncSender<()>),
}

/// The queue of the thread that writes the logs (it ends when the log is dropped, after
/// writing what waits).
pub(crate) struct FeatureLog {
    tx: SyncSender<Message>,
}

impl std::fmt::Debug for FeatureLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureLog").finish_non_exhaustive()
    }
}

impl FeatureLog {
    /// Starts the writer thread; written and failed rows are counted in `metrics`.
    pub(crate) fn start(
        sources: Arc<Sources>,
        options: FeatureLogOptions,
        metrics: crate::metrics::FeatureLogCounters,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue.max(1));
        // Without its thread the queue fills and every entry is dropped (and counted).
        let _ = std::thread::Builder::new()
            .name("quiver-feature-log".into())
            .spawn(move || write_logs(&rx, &sources, options, &metrics));
        Self { tx }
    }

    /// Queues `entry`; `false` when the queue is full (or its thread gone) and it was dropped.
    pub(crate) fn offer(&self, entry: Entry) -> bool {
        self.tx.try_send(Message::Entry(Box::new(entry))).is_ok()
    }

    /// Writes every queued entry now and waits until it is written.
    pub(crate) fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for FeatureLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The writer thread: collects entries per destination, writes them as files.
fn write_logs(
    rx: &Receiver<Message>,
    sources: &Sources,
    options: FeatureLogOptions,
    metrics: &crate::metrics::FeatureLogCounters,
) {
    let mut waiting: BTreeMap<String, (Instant, usize, Vec<Entry>)> = BTreeMap::new();
    loop {
        let oldest = waiting.values().map(|(since, _, _)| *since).min();
        let timeout = oldest.map_or(options.roll_every, |t| {
            options.roll_every.saturating_sub(t.elapsed())
        });
        let message = rx.recv_timeout(timeout);
        let mut flush_all = None;
        match message {
            Ok(Message::Entry(entry)) => {
                let rows = entry.found_rows();
                let slot = waiting
                    .entry(entry.target.destination.clone())
                    .or_insert_with(|| (Instant::now(), 0, Vec::new()));
                slot.1 += rows;
                slot.2.push(*entry);
            }
            Ok(Message::Flush(done)) => flush_all = Some(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for (_, (_, _, entries)) in std::mem::take(&mut waiting) {
                    write_entries(sources, entries, metrics);
                }
                return;
            }
        }
        let due: Vec<String> = waiting
            .iter()
            .filter(|(_, (since, rows, _))| {
                flush_all.is_some()
                    || *rows >= options.roll_rows
                    || since.elapsed() >= options.roll_every
            })
            .map(|(folder, _)| folder.clone())
            .collect();
        for folder in due {
            if let Some((_, _, entries)) = waiting.remove(&folder) {
                write_entries(sources, entries, metrics);
            }
        }
        if let Some(done) = flush_all {
            let _ = done.send(());
        }
    }
}

impl Entry {
    fn found_rows(&self) -> usize {
        self.keys.first().map_or(0, |(_, v)| v.len())
    }

    /// The columns this entry's rows are written with.
    fn schema(&self) -> Schema {
        let utc = || Some("UTC".into());
        let mut fields: Vec<Field> = self
            .target
            .key_types
            .iter()
            .map(|(name, t)| Field::new(name, t.value_type().to_arrow(), true))
            .collect();
        for f in self.planned.plan.features() {
            let name = format!("{}__{}", f.view, f.feature.name);
            fields.push(Field::new(&name, f.feature.value_type.to_arrow(), true));
            fields.push(Field::new(
                format!("{name}__timestamp"),
                DataType::Timestamp(TimeUnit::Microsecond, utc()),
                true,
            ));
            fields.push(Field::new(
                format!("{name}__status"),
                DataType::Int32,
                false,
            ));
        }
        fields.push(Field::new(
            "__log_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            false,
        ));
        fields.push(Field::new("__log_date", DataType::Date32, false));
        fields.push(Field::new("__request_id", DataType::Utf8, false));
        Schema::new(fields)
    }
}

/// Feast's number of a status (`FieldStatus` in Feast's serving protos).
fn feast_status(status: FieldStatus) -> i32 {
    match status {
        FieldStatus::Present => 1,
        FieldStatus::NullValue => 2,
        FieldStatus::NotFound => 3,
        FieldStatus::OutsideMaxAge => 4,
    }
}

/// Writes `entries` (of one destination) as one file per schema, in order.
fn write_entries(
    sources: &Sources,
    entries: Vec<Entry>,
    metrics: &crate::metrics::FeatureLogCounters,
) {
    let mut run: Vec<Entry> = Vec::new();
    let mut schema: Option<Schema> = None;
    for entry in entries {
        let own = entry.schema();
        if schema.as_ref().is_some_and(|s| *s != own) {
            write_run(sources, std::mem::take(&mut run), schema.take(), metrics);
        }
        schema = Some(own);
        run.push(entry);
    }
    write_run(sources, run, schema, metrics);
}

fn write_run(
    sources: &Sources,
    entries: Vec<Entry>,
    schema: Option<Schema>,
    metrics: &crate::metrics::FeatureLogCounters,
) {
    let (Some(schema), Some(first)) = (schema, entries.first()) else {
        return;
    };
    let (destination, service) = (
        first.target.destination.clone(),
        first.target.service.clone(),
    );
    let rows: usize = entries.iter().map(Entry::found_rows).sum();
    let written = batch_of(&schema, entries).and_then(|batch| {
        // The folder is made under the data root, then resolved beneath it (no link may
        // lead out).
        let made = sources.data_root().join(&destination);
        std::fs::create_dir_all(&made).map_err(|e| format!("{}: {e}", made.display()))?;
        let folder = sources.resolve(&destination).map_err(|e| e.to_string())?;
        sources
            .write_file(&folder, &batch)
            .map_err(|e| e.to_string())
    });
    match written {
        Ok(_) => metrics.written(&service, rows),
        Err(e) => {
            metrics.failed(&service, rows);
            tracing::error!(feature_service = %service, "cannot write the feature log: {e}");
        }
    }
}

/// A key value as the feature value of its declared type (`Null` when it does not fit).
fn key_value(t: KeyType, v: Option<&KeyValue>) -> FeatureValue<'_> {
    match (t, v) {
        (KeyType::Int32, Some(KeyValue::Int(i))) => {
            i32::try_from(*i).map_or(FeatureValue::Null, FeatureValue::Int32)
        }
        (KeyType::Int64, Some(KeyValue::Int(i))) => FeatureValue::Int64(*i),
        (KeyType::String, Some(KeyValue::String(s))) => FeatureValue::String(s),
        (KeyType::Bytes, Some(KeyValue::Bytes(b))) => FeatureValue::Bytes(b),
        _ => FeatureValue::Null,
    }
}

/// The rows of `entries` (all of `schema`) as one batch.
fn batch_of(schema: &Schema, entries: Vec<Entry>) -> Result<RecordBatch, String> {
    let Some(first) = entries.first() else {
        return Err("nothing to write".into());
    };
    let planned = Arc::clone(&first.planned);
    let target = Arc::clone(&first.target);
    let key_types = &target.key_types;
    let features = planned.plan.features();
    // The answers borrow their plans and the values borrow the answers: both stay here
    // until the batch is built.
    let mut found = Vec::with_capacity(entries.len());
    let mut parts = Vec::with_capacity(entries.len());
    for entry in entries {
        let rows = entry.found_rows();
        let Entry {
            planned,
            keys,
            found: rows_found,
            at,
            request_id,
            ..
        } = entry;
        found.push(rows_found);
        parts.push((planned, keys, at, request_id, rows));
    }
    let answers: Vec<_> = found
        .into_iter()
        .zip(&parts)
        .map(|(f, (planned, ..))| f.features(&planned.plan))
        .collect();
    let mut key_columns: Vec<Vec<FeatureValue<'_>>> = vec![Vec::new(); key_types.len()];
    let mut values: Vec<Vec<FeatureValue<'_>>> = vec![Vec::new(); features.len()];
    let timestamps = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut times: Vec<_> = features.iter().map(|_| timestamps()).collect();
    let mut statuses: Vec<Int32Builder> = features.iter().map(|_| Int32Builder::new()).collect();
    let (mut logged_at, mut dates, mut ids) =
        (timestamps(), Date32Builder::new(), StringBuilder::new());
    for (read, (_, keys, at, request_id, rows)) in answers.iter().zip(&parts) {
        for ((name, t), column) in key_types.iter().zip(&mut key_columns) {
            let given = keys.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            column.extend((0..*rows).map(|row| key_value(*t, given.and_then(|c| c.get(row)))));
        }
        for (col, out) in values.iter_mut().enumerate() {
            for row in 0..*rows {
                let cell = read.cell(col, row).map_err(|e| e.to_string())?;
                out.push(cell.value);
                times[col].append_option(cell.event_ts.map(|t| t.div_euclid(1_000)));
                statuses[col].append_value(feast_status(cell.status));
            }
        }
        let day = i32::try_from(at.div_euclid(86_400_000_000_000)).unwrap_or(i32::MAX);
        for _ in 0..*rows {
            logged_at.append_value(at.div_euclid(1_000));
            dates.append_value(day);
            ids.append_value(request_id);
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for ((_, t), column) in key_types.iter().zip(&key_columns) {
        columns.push(arrow_array(t.value_type(), column));
    }
    for (col, f) in features.iter().enumerate() {
        columns.push(arrow_array(f.feature.value_type, &values[col]));
        columns.push(Arc::new(times[col].finish()));
        columns.push(Arc::new(statuses[col].finish()));
    }
    columns.push(Arc::new(logged_at.finish()));
    columns.push(Arc::new(dates.finish()));
    columns.push(Arc::new(ids.finish()));
    RecordBatch::try_new(Arc::new(schema.clone()), columns).map_err(|e| e.to_string())
}
