//! Pushes: rows sent by a client, written to the online store, to the offline source, or to
//! both.
//!
//! A push names a feature view, or a source (Feast's push source): then every view reading
//! that source receives the rows, each only its own columns. Every row is checked against
//! every receiving view before anything is written: join keys, declared types (a value that
//! does not fit its type is refused, never rounded to `inf` or wrapped), event times within
//! the future horizon, no column given twice, no column that no view or source has.
//!
//! Then the rows are written so that neither side keeps a row the other lost: the offline
//! file first (complete and durable before it is visible), then every online view in one
//! atomic batch; if the online write fails, the offline file is removed again. A full disk
//! is reported as such and leaves nothing behind.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, TimestampNanosecondArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema};
use quiver_core::{
    Action, FeatureView, JoinKey, ObjectKind, Source, TimestampUnit, ValueType, encode_entity_key,
    format_nanos, now_nanos,
};
use quiver_online::{FeatureValue, KeyedRows, ViewId, ViewRows, encode_row};
use quiver_source::Sources;

use crate::FeatureStore;
use crate::auth::Caller;
use crate::catalog::Snapshot;
use crate::error::{OpsError, Result};
use crate::value::{InputValue, arrow_array};

/// Where pushed rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTarget {
    /// The online store.
    Online,
    /// A new file of the source.
    Offline,
    /// Both.
    OnlineAndOffline,
}

impl PushTarget {
    fn online(self) -> bool {
        matches!(self, Self::Online | Self::OnlineAndOffline)
    }

    fn offline(self) -> bool {
        matches!(self, Self::Offline | Self::OnlineAndOffline)
    }
}

/// Rows to push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// A feature view, or a source (every view reading it).
    pub name: String,
    /// Rows, column by column: join keys, `event_timestamp`, optionally `created` or
    /// `created_timestamp`, and features (a missing feature is null).
    pub columns: Vec<(String, Vec<InputValue>)>,
    /// Where the rows go.
    pub to: PushTarget,
    /// The unit of times sent as integers; integer times are refused without one.
    pub timestamp_unit: Option<TimestampUnit>,
}

/// What a push wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// Rows pushed.
    pub rows: usize,
    /// The views that received them: online, or (for an offline-only push) in training sets.
    pub views: Vec<String>,
    /// The file the rows were appended to offline.
    pub offline_file: Option<quiver_source::SourceFile>,
}

/// Accepted names of the event-time column of pushed rows.
pub const EVENT_TIME_COLUMNS: &[&str] = &["event_timestamp"];
/// Accepted names of the created-time column of pushed rows (Feast sends `created`).
pub const CREATED_COLUMNS: &[&str] = &["created", "created_timestamp"];

/// Small pushed files above this size are left out of compaction.
const COMPACT_BELOW_BYTES: u64 = 64 << 20;

/// The rows of a push, checked: times in ns, values by column.
struct CheckedRows<'a> {
    request: &'a PushRequest,
    rows: usize,
    event: Vec<i64>,
    created: Vec<i64>,
}

impl CheckedRows<'_> {
    fn column(&self, name: &str) -> Option<&[InputValue]> {
        self.request
            .columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl FeatureStore {
    /// Pushes rows (see the module documentation for the checks and the write order).
    pub fn push(&self, caller: &Caller, request: &PushRequest) -> Result<PushOutcome> {
        let snapshot = self.snapshot();
        let (views, source) = receivers(&snapshot, &request.name)?;
        let receiving: Vec<(ObjectKind, &str)> = views
            .iter()
            .map(|v| (ObjectKind::FeatureView, v.name.as_str()))
            .collect();
        if request.to.online() {
            self.authorize(&snapshot, caller, Action::WriteOnline, &receiving)?;
        }
        if request.to.offline() {
            let mut objects = receiving.clone();
            objects.push((ObjectKind::Source, source.name.as_str()));
            self.authorize(&snapshot, caller, Action::WriteOffline, &objects)?;
        }
        let online: Vec<&FeatureView> = if request.to.online() {
            let online: Vec<&FeatureView> = views.iter().copied().filter(|v| v.online).collect();
            if online.is_empty() {
                return Err(OpsError::FailedPrecondition(format!(
                    "'{}': no online feature view receives these rows (online: false)",
                    request.name
                )));
            }
            online
        } else {
            Vec::new()
        };
        let checked = self.check_rows(&snapshot, request, &views, source)?;

        // Every online row is encoded before anything is written.
        let mut encoded: Vec<(ViewId, KeyedRows)> = Vec::with_capacity(online.len());
        for view in &online {
            encoded.push((
                snapshot.view_id(&view.name),
                self.encode_view_rows(&snapshot, view, &checked)?,
            ));
        }
        let offline = if request.to.offline() {
            let (folder, schema) = self.sources.append_target(source)?;
            Some((
                folder,
                offline_batch(&snapshot, source, &views, &schema, &checked)?,
            ))
        } else {
            None
        };

        let offline_file = match &offline {
            Some((target, batch)) => Some(self.sources.append(target, batch)?),
            None => None,
        };
        if !encoded.is_empty() {
            let batch: Vec<ViewRows<'_>> = encoded
                .iter()
                .map(|(view, rows)| ViewRows { view, rows })
                .collect();
            if let Err(e) = self.store.write(&batch, true) {
                // Neither side keeps a row the other lost.
                if let Some(file) = &offline_file {
                    let _ = self.sources.remove_appended(file);
                }
                return Err(e.into());
            }
        }
        if offline_file.is_some() {
            self.compact_in_background(source);
        }
        let receivers = if request.to.online() { &online } else { &views };
        self.metrics.pushed(
            &request.name,
            request.to,
            checked.rows,
            checked.event.iter().copied().max(),
            online.iter().map(|v| v.name.as_str()),
        );
        self.audit.record(
            caller.name(),
            "push",
            &format!("push:{}", request.name),
            "ok",
            &format!("{} rows", checked.rows),
        );
        Ok(PushOutcome {
            rows: checked.rows,
            views: receivers.iter().map(|v| v.name.clone()).collect(),
            offline_file,
        })
    }

    /// Appends `batch`, rows shaped like the files of feature view `view`'s source (source
    /// column names, as Feast's `offline_write_batch` sends them), to that source: the same
    /// checks, permissions and append path as an offline push of the view.
    pub fn append_batch(
        &self,
        caller: &Caller,
        view: &str,
        batch: &RecordBatch,
    ) -> Result<PushOutcome> {
        let snapshot = self.snapshot();
        let source = snapshot
            .defs
            .feature_views
            .get(view)
            .and_then(|v| snapshot.defs.sources.get(&v.source))
            .ok_or_else(|| OpsError::NotFound(format!("no feature view '{view}'")))?;
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let name = source
                .field_mapping
                .get(field.name())
                .unwrap_or(field.name());
            let name = if *name == source.timestamp_field {
                EVENT_TIME_COLUMNS[0]
            } else if source.created_timestamp_column.as_ref() == Some(name) {
                CREATED_COLUMNS[0]
            } else {
                name.as_str()
            };
            columns.push((
                name.to_owned(),
                InputValue::column_of(array.as_ref(), field.name())?,
            ));
        }
        self.push(
            caller,
            &PushRequest {
                name: view.to_owned(),
                columns,
                to: PushTarget::Offline,
                timestamp_unit: None,
            },
        )
    }

    /// Checks the shape of a push and reads its times.
    fn check_rows<'a>(
        &self,
        snapshot: &Snapshot,
        request: &'a PushRequest,
        views: &[&FeatureView],
        source: &Source,
    ) -> Result<CheckedRows<'a>> {
        let columns = &request.columns;
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        self.options
            .limits
            .check_rows(columns.iter().map(|(n, v)| (n.as_str(), v.len())))?;
        for (i, (name, values)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(n, _)| n == name) {
                return Err(OpsError::invalid(format!("column '{name}' is given twice")));
            }
            if values.len() != rows {
                return Err(OpsError::invalid(format!(
                    "column '{name}' has {} values but '{}' has {rows}",
                    values.len(),
                    columns[0].0
                )));
            }
        }
        let mut source_columns: Option<Vec<String>> = None;
        for (name, _) in columns {
            let of_a_view = views.iter().any(|v| {
                v.feature(name).is_some()
                    || snapshot
                        .defs
                        .join_keys(v)
                        .is_ok_and(|keys| keys.iter().any(|k| k.name == *name))
            });
            let time = EVENT_TIME_COLUMNS.contains(&name.as_str())
                || CREATED_COLUMNS.contains(&name.as_str());
            if of_a_view || time {
                continue;
            }
            // A column of the source that no view reads is accepted (it is appended offline).
            let known = source_columns.get_or_insert_with(|| {
                self.sources
                    .schema(source)
                    .map(|s| s.column_names().iter().map(|c| (*c).to_owned()).collect())
                    .unwrap_or_default()
            });
            if !known.contains(name) {
                let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
                return Err(OpsError::invalid(format!(
                    "column '{name}' is neither a join key nor a feature of feature view{} '{}', nor a column of source '{}'",
                    if names.len() > 1 { "s" } else { "" },
                    names.join("', '"),
                    source.name
                )));
            }
        }
        let find = |names: &[&str]| {
            columns
                .iter()
                .find(|(n, _)| names.contains(&n.as_str()))
                .map(|(n, v)| (n.as_str(), v.as_slice()))
        };
        let (event_name, event_values) = find(EVENT_TIME_COLUMNS)
            .ok_or_else(|| OpsError::invalid("missing column 'event_timestamp'"))?;
        let horizon = now_nanos().saturating_add(
            i64::try_from(self.config.push.max_future.0.as_nanos()).unwrap_or(i64::MAX),
        );
        let unit = request.timestamp_unit;
        let mut event = Vec::with_capacity(rows);
        for (row, v) in event_values.iter().enumerate() {
            let what = || format!("column '{event_name}', row {row}");
            let t = v.instant(unit, &what)?;
            if t > horizon {
                return Err(OpsError::invalid(format!(
                    "{}: {} is more than {} in the future (push.max_future in quiver.yaml)",
                    what(),
                    format_nanos(t),
                    self.config.push.max_future
                )));
            }
            event.push(t);
        }
        let created = match find(CREATED_COLUMNS) {
            None => vec![i64::MIN; rows],
            Some((name, values)) => values
                .iter()
                .enumerate()
                .map(|(row, v)| match v {
                    InputValue::Null => Ok(i64::MIN),
                    v => v.instant(unit, &|| format!("column '{name}', row {row}")),
                })
                .collect::<Result<_>>()?,
        };
        Ok(CheckedRows {
            request,
            rows,
            event,
            created,
        })
    }

    /// The encoded online rows of `view`: its keys and features only.
    fn encode_view_rows(
        &self,
        snapshot: &Snapshot,
        view: &FeatureView,
        checked: &CheckedRows<'_>,
    ) -> Result<KeyedRows> {
        let keys = snapshot.defs.join_keys(view)?;
        let key_columns = key_columns(view, &keys, checked)?;
        let feature_columns: Vec<Option<&[InputValue]>> = view
            .features
            .iter()
            .map(|f| checked.column(&f.name))
            .collect();
        let unit = checked.request.timestamp_unit;
        let mut out = Vec::with_capacity(checked.rows);
        for row in 0..checked.rows {
            let key_values = keys
                .iter()
                .zip(&key_columns)
                .map(|(k, col)| col[row].key(&k.name, row))
                .collect::<Result<Vec<_>>>()?;
            let key = encode_entity_key(
                &keys,
                keys.iter().map(|k| k.name.as_str()).zip(key_values.iter()),
            )?;
            let values = view
                .features
                .iter()
                .zip(&feature_columns)
                .map(|(f, col)| match col {
                    Some(col) => col[row].feature(f.value_type, unit, &|| {
                        format!("feature '{}:{}', row {row}", view.name, f.name)
                    }),
                    None => Ok(FeatureValue::Null),
                })
                .collect::<Result<Vec<_>>>()?;
            let sequence = self.push_sequence.fetch_add(1, Ordering::Relaxed);
            let version = (checked.event[row], checked.created[row], sequence);
            out.push((key, encode_row(&view.features, version, &values)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Merges the source's small pushed files on a background thread once there are enough
    /// of them (one compaction per source at a time).
    fn compact_in_background(&self, source: &Source) {
        let min_files = self.config.push.compact_after_files;
        let compacting = Arc::clone(&self.compacting);
        {
            let Ok(mut busy) = compacting.lock() else {
                return;
            };
            if !busy.insert(source.name.clone()) {
                return;
            }
        }
        let sources: Arc<Sources> = Arc::clone(&self.sources);
        let source = source.clone();
        std::thread::spawn(move || {
            let _ = sources.compact(&source, min_files, COMPACT_BELOW_BYTES);
            if let Ok(mut busy) = compacting.lock() {
                busy.remove(&source.name);
            }
        });
    }
}

/// The views that receive a push to `name`, and their (shared) source.
fn receivers<'a>(snapshot: &'a Snapshot, name: &str) -> Result<(Vec<&'a FeatureView>, &'a Source)> {
    let defs = &snapshot.defs;
    let views: Vec<&FeatureView> = match defs.feature_views.get(name) {
        Some(view) => vec![view],
        None => defs
            .feature_views
            .values()
            .filter(|v| v.source == name)
            .collect(),
    };
    let Some(first) = views.first() else {
        return Err(OpsError::NotFound(format!(
            "unknown push source '{name}' (expected a feature view or a source name)"
        )));
    };
    let source = defs.sources.get(&first.source).ok_or_else(|| {
        OpsError::FailedPrecondition(format!(
            "feature view '{}' names unknown source '{}'",
            first.name, first.source
        ))
    })?;
    Ok((views, source))
}

/// The pushed columns of `view`'s join keys.
fn key_columns<'a>(
    view: &FeatureView,
    keys: &[JoinKey],
    checked: &'a CheckedRows<'_>,
) -> Result<Vec<&'a [InputValue]>> {
    keys.iter()
        .map(|k| {
            checked.column(&k.name).ok_or_else(|| {
                OpsError::invalid(format!(
                    "missing join key '{}' of feature view '{}'",
                    k.name, view.name
                ))
            })
        })
        .collect()
}

/// The pushed rows as a batch of the source's file `schema` (source column names): times,
/// and every key or feature column a receiving view declares, checked against its declared
/// type and converted exactly (a value that does not fit the file's column is refused).
fn offline_batch(
    snapshot: &Snapshot,
    source: &Source,
    views: &[&FeatureView],
    schema: &Schema,
    checked: &CheckedRows<'_>,
) -> Result<RecordBatch> {
    let unit = checked.request.timestamp_unit;
    let invalid = |message: String| {
        OpsError::Source(quiver_source::SourceError::InvalidRows {
            source_name: source.name.clone(),
            message,
        })
    };
    let declared = |name: &str| -> Option<ValueType> {
        views.iter().find_map(|v| {
            v.feature(name).map(|f| f.value_type).or_else(|| {
                snapshot
                    .defs
                    .join_keys(v)
                    .ok()?
                    .into_iter()
                    .find(|k| k.name == name)
                    .map(|k| k.key_type.value_type())
            })
        })
    };
    let times = |values: &[i64]| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from_iter(
            values.iter().map(|&t| (t != i64::MIN).then_some(t)),
        ))
    };
    let exact = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let arrays = schema
        .fields()
        .iter()
        .map(|field: &Arc<Field>| {
            let name = source
                .field_mapping
                .get(field.name())
                .map_or(field.name().as_str(), String::as_str);
            let built: ArrayRef = if name == source.timestamp_field {
                times(&checked.event)
            } else if source.created_timestamp_column.as_deref() == Some(name) {
                times(&checked.created)
            } else {
                match (checked.column(name), declared(name)) {
                    (Some(values), Some(t)) => {
                        let values = values
                            .iter()
                            .enumerate()
                            .map(|(row, v)| {
                                v.feature(t, unit, &|| format!("column '{name}', row {row}"))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        arrow_array(t, &values)
                    }
                    _ => return Ok(new_null_array(field.data_type(), checked.rows)),
                }
            };
            cast_with_options(
                &with_timezone_of(built, field.data_type()),
                field.data_type(),
                &exact,
            )
            .map_err(|e| {
                invalid(format!(
                    "column '{}' of its files is {}: {e}",
                    field.name(),
                    field.data_type()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::new(schema.clone()), arrays)
        .map_err(|e| invalid(format!("pushed rows do not fit its files: {e}")))
}

/// `array` labelled with the time zone of `target` when both are timestamps: the stored
/// instants are UTC either way, so only the label changes (a cast would have to resolve
/// zone names).
fn with_timezone_of(array: ArrayRef, target: &DataType) -> ArrayRef {
    match (array.data_type(), target) {
        (DataType::Timestamp(unit, from), DataType::Timestamp(_, to)) if from != to => {
            let data = array
                .to_data()
                .into_builder()
                .data_type(DataType::Timestamp(*unit, to.clone()))
                .build();
            data.map_or(array, arrow::array::make_array)
        }
        _ => array,
    }
}

/// A mutex-guarded set shared with background threads.
pub(crate) type Busy = Arc<Mutex<std::collections::HashSet<String>>>;
