//! Online reads and pushes shared by every protocol (Quiver gRPC, Feast gRPC, Feast HTTP):
//! requests arrive as protocol-neutral values, are checked against the registry snapshot and
//! answered from the online store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quiver_core::{FeatureView, KeyValue, ScalarType, ValueType, encode_entity_key};
use quiver_online::{
    FeatureValue, OnlineFeatures, OnlineStore, RocksDbStore, encode_row, now_micros,
    read_online_features,
};
use tonic::Status;

use crate::catalog::{Catalog, FeatureSpec, Snapshot};
use crate::error::{core_status, online_status};
use crate::offline_append::append_to_source;

/// A value as a client sent it, before it is checked against a declared type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Loose {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
    /// µs since the epoch.
    Timestamp(i64),
    List(Vec<Loose>),
}

impl Loose {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a bool",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::String(_) => "a string",
            Self::Bytes(_) => "bytes",
            Self::Timestamp(_) => "a timestamp",
            Self::List(_) => "a list",
        }
    }

    /// The join-key value of this value.
    pub(crate) fn key(&self, name: &str, row: usize) -> Result<KeyValue, Status> {
        match self {
            Self::Int(v) => Ok(KeyValue::Int(*v)),
            Self::String(s) => Ok(KeyValue::String(s.clone())),
            Self::Bytes(b) => Ok(KeyValue::Bytes(b.clone())),
            other => Err(Status::invalid_argument(format!(
                "join key '{name}', row {row}: expected an integer, string or bytes, got {}",
                other.kind()
            ))),
        }
    }

    /// This value as a feature of type `t`; `what` names it in errors.
    fn feature<'a>(
        &'a self,
        t: ValueType,
        what: &dyn Fn() -> String,
    ) -> Result<FeatureValue<'a>, Status> {
        let bad =
            || Status::invalid_argument(format!("{}: expected {t}, got {}", what(), self.kind()));
        match (t, self) {
            (_, Self::Null) => Ok(FeatureValue::Null),
            (ValueType::Scalar(s), v) => scalar(s, v).ok_or_else(bad),
            (ValueType::List(s), Self::List(items)) => items
                .iter()
                .map(|i| scalar(s, i).ok_or_else(bad))
                .collect::<Result<_, _>>()
                .map(FeatureValue::List),
            (ValueType::List(_), _) => Err(bad()),
        }
    }
}

fn scalar(t: ScalarType, v: &Loose) -> Option<FeatureValue<'_>> {
    Some(match (t, v) {
        (ScalarType::Bool, Loose::Bool(b)) => FeatureValue::Bool(*b),
        (ScalarType::Int32, Loose::Int(i)) => FeatureValue::Int32(i32::try_from(*i).ok()?),
        (ScalarType::Int64, Loose::Int(i)) => FeatureValue::Int64(*i),
        (ScalarType::Float32, Loose::Float(f)) => FeatureValue::Float32(*f as f32),
        (ScalarType::Float32, Loose::Int(i)) => FeatureValue::Float32(*i as f32),
        (ScalarType::Float64, Loose::Float(f)) => FeatureValue::Float64(*f),
        (ScalarType::Float64, Loose::Int(i)) => FeatureValue::Float64(*i as f64),
        (ScalarType::String, Loose::String(s)) => FeatureValue::String(s),
        (ScalarType::Bytes, Loose::Bytes(b)) => FeatureValue::Bytes(b),
        (ScalarType::Timestamp, Loose::Timestamp(t) | Loose::Int(t)) => FeatureValue::Timestamp(*t),
        (ScalarType::Timestamp, Loose::String(s)) => {
            FeatureValue::Timestamp(quiver_core::parse_time(s).ok()?.timestamp_micros())
        }
        _ => return None,
    })
}

/// Limits on requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entity rows per online read or push.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rows: 10_000 }
    }
}

/// The online side of the server: the store, the registry snapshot and request limits.
pub struct Online {
    catalog: Arc<Catalog>,
    store: Arc<RocksDbStore>,
    limits: Limits,
    data_root: std::path::PathBuf,
    /// Tie-break sequence of pushed rows: later pushes win over equal times.
    pushes: AtomicU64,
}

/// Where pushed rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushTarget {
    Online,
    Offline,
    OnlineAndOffline,
}

/// Result of a push.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    pub rows: usize,
    pub offline_file: Option<String>,
}

impl Online {
    /// Serves reads and pushes from `store` with definitions from `catalog`.
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<RocksDbStore>,
        limits: Limits,
        data_root: std::path::PathBuf,
    ) -> Self {
        Self {
            catalog,
            store,
            limits,
            data_root,
            pushes: AtomicU64::new(u64::try_from(now_micros()).unwrap_or(0) << 8),
        }
    }

    /// The current registry snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.catalog.current()
    }

    /// Reads the features for entity rows given column by column, then lets `answer` build
    /// the protocol's response from the snapshot, the features and the cells.
    pub(crate) fn read<T>(
        &self,
        spec: FeatureSpec,
        entities: &[(String, Vec<Loose>)],
        full_feature_names: bool,
        answer: impl FnOnce(&Snapshot, &OnlineFeatures<'_>) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let rows = entities.first().map_or(0, |(_, v)| v.len());
        if rows > self.limits.max_rows {
            return Err(Status::invalid_argument(format!(
                "too many entity rows: {rows} (the limit is {} per request)",
                self.limits.max_rows
            )));
        }
        let snapshot = self.snapshot();
        let plan = snapshot.plan(spec, full_feature_names)?;
        let keys = entities
            .iter()
            .map(|(name, values)| {
                let values = values
                    .iter()
                    .enumerate()
                    .map(|(row, v)| v.key(name, row))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((name.clone(), values))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let read = read_online_features(self.store.as_ref(), &plan, &keys, now_micros())
            .map_err(|e| online_status(&e))?;
        answer(&snapshot, &read)
    }

    /// [`Online::push`] on the blocking pool: it writes the store and, for offline targets,
    /// a Parquet file.
    pub(crate) async fn push_blocking(
        self: &Arc<Self>,
        view: String,
        columns: Vec<(String, Vec<Loose>)>,
        to: PushTarget,
    ) -> Result<Pushed, Status> {
        let online = Arc::clone(self);
        tokio::task::spawn_blocking(move || online.push(&view, &columns, to))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }

    /// Writes rows of `view` given column by column: join keys, `event_timestamp`, optionally
    /// `created` / `created_timestamp`, and features (absent features are null). Newest wins.
    pub(crate) fn push(
        &self,
        view_name: &str,
        columns: &[(String, Vec<Loose>)],
        to: PushTarget,
    ) -> Result<Pushed, Status> {
        let snapshot = self.snapshot();
        let defs = &snapshot.defs;
        let view = defs.view(view_name).map_err(|e| core_status(&e))?;
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        if rows > self.limits.max_rows {
            return Err(Status::invalid_argument(format!(
                "too many rows: {rows} (the limit is {} per request)",
                self.limits.max_rows
            )));
        }
        if let Some((name, v)) = columns.iter().find(|(_, v)| v.len() != rows) {
            return Err(Status::invalid_argument(format!(
                "column '{name}' has {} values but '{}' has {rows}",
                v.len(),
                columns[0].0
            )));
        }
        let keys = defs.join_keys(view).map_err(|e| core_status(&e))?;
        let column = |name: &str| columns.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        for (name, _) in columns {
            let known = keys.iter().any(|k| k.name == *name)
                || view.feature(name).is_some()
                || TIME_COLUMNS.contains(&name.as_str())
                || CREATED_COLUMNS.contains(&name.as_str());
            if !known {
                return Err(Status::invalid_argument(format!(
                    "column '{name}' is neither a join key nor a feature of feature view '{}'",
                    view.name
                )));
            }
        }
        let times = TIME_COLUMNS
            .iter()
            .find_map(|c| column(c))
            .ok_or_else(|| Status::invalid_argument("missing column 'event_timestamp'"))?;
        let created = CREATED_COLUMNS.iter().find_map(|c| column(c));
        let key_columns = keys
            .iter()
            .map(|k| {
                column(&k.name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "missing join key '{}' of feature view '{}'",
                        k.name, view.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let time_of = |v: &Loose, name: &str, row: usize| -> Result<i64, Status> {
            match scalar(ScalarType::Timestamp, v) {
                Some(FeatureValue::Timestamp(t)) => Ok(t),
                _ => Err(Status::invalid_argument(format!(
                    "column '{name}', row {row}: expected a timestamp, got {}",
                    v.kind()
                ))),
            }
        };

        let mut encoded = Vec::with_capacity(rows);
        let mut versions = Vec::with_capacity(rows);
        for row in 0..rows {
            let key_values = keys
                .iter()
                .zip(&key_columns)
                .map(|(k, col)| col[row].key(&k.name, row))
                .collect::<Result<Vec<_>, _>>()?;
            let key = encode_entity_key(
                &keys,
                keys.iter().map(|k| k.name.as_str()).zip(key_values.iter()),
            )
            .map_err(|e| core_status(&e))?;
            let event = time_of(&times[row], "event_timestamp", row)?;
            let created_ts = match created.map(|c| &c[row]) {
                None | Some(Loose::Null) => i64::MIN,
                Some(v) => time_of(v, "created", row)?,
            };
            let values = view
                .features
                .iter()
                .map(|f| match column(&f.name) {
                    Some(col) => col[row].feature(f.value_type, &|| {
                        format!("feature '{}:{}', row {row}", view.name, f.name)
                    }),
                    None => Ok(FeatureValue::Null),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let sequence = self.pushes.fetch_add(1, Ordering::Relaxed);
            encoded.push((
                key,
                encode_row(&view.features, (event, created_ts, sequence), &values),
            ));
            versions.push(event);
        }
        let online = matches!(to, PushTarget::Online | PushTarget::OnlineAndOffline);
        if online {
            // Checked before anything is written, so a refused push writes nothing.
            check_online(view)?;
        }
        let mut pushed = Pushed {
            rows,
            offline_file: None,
        };
        if matches!(to, PushTarget::Offline | PushTarget::OnlineAndOffline) {
            let file = append_to_source(defs, &self.data_root, view, &keys, columns)?;
            pushed.offline_file = Some(file.display().to_string());
        }
        if online {
            encoded.sort_by(|a, b| a.0.cmp(&b.0));
            self.store
                .write(&defs.project, &view.name, &encoded, true)
                .map_err(|e| online_status(&e))?;
        }
        Ok(pushed)
    }
}

/// Accepted names of the event-time column of pushed rows.
pub(crate) const TIME_COLUMNS: &[&str] = &["event_timestamp"];
/// Accepted names of the created-time column of pushed rows (Feast sends `created`).
pub(crate) const CREATED_COLUMNS: &[&str] = &["created", "created_timestamp"];

fn check_online(view: &FeatureView) -> Result<(), Status> {
    if view.online {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "feature view '{}' is not online (online: false)",
            view.name
        )))
    }
}
