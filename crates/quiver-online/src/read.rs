//! Online reads: features for many entity rows, each value with a status and event time.

use std::collections::{HashMap, HashSet};

use quiver_core::{Definitions, KeyValue, ResolvedFeature, encode_entity_key};

use crate::error::{OnlineError, Result};
use crate::row::{FeatureValue, Row, decode_value, layout_fingerprint};
use crate::store::OnlineStore;

/// The status of one returned value (Feast's `FieldStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldStatus {
    /// A value was found and is within the ttl.
    Present,
    /// The row exists but this feature is null in it.
    NullValue,
    /// No row for this key in this view.
    NotFound,
    /// The row is older than `now - ttl`; the value is still returned.
    OutsideMaxAge,
}

/// One answered cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell<'a> {
    /// The value (`Null` unless present or outside max age).
    pub value: FeatureValue<'a>,
    /// Its status.
    pub status: FieldStatus,
    /// The row's event time (µs), when a row was found.
    pub event_ts: Option<i64>,
}

/// Rows read for one view, aligned with the request's entity rows.
#[derive(Debug)]
struct ViewRows {
    rows: Vec<Option<Vec<u8>>>,
    /// Rows older than this (µs) are outside max age (`i64::MIN` without ttl).
    fresh_after: i64,
}

/// The answer to an online read: the requested features for every entity row, in order.
#[derive(Debug)]
pub struct OnlineFeatures<'f> {
    features: &'f [ResolvedFeature],
    /// For each requested feature, the index of its view in `views`.
    view_of: Vec<usize>,
    views: Vec<ViewRows>,
    num_rows: usize,
}

impl<'f> OnlineFeatures<'f> {
    /// Number of entity rows.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// The requested features, in output order.
    pub fn features(&self) -> &'f [ResolvedFeature] {
        self.features
    }

    /// The cell of feature column `col` for entity row `row`.
    pub fn cell(&self, col: usize, row: usize) -> Result<Cell<'_>> {
        let feature = &self.features[col];
        let rows = &self.views[self.view_of[col]];
        let Some(bytes) = rows.rows[row].as_deref() else {
            return Ok(Cell {
                value: FeatureValue::Null,
                status: FieldStatus::NotFound,
                event_ts: None,
            });
        };
        let stored = Row::parse(bytes)?;
        let value = decode_value(
            feature.feature.value_type,
            stored.feature_bytes(feature.index)?,
        )?;
        let status = if value == FeatureValue::Null {
            FieldStatus::NullValue
        } else if stored.event_ts() < rows.fresh_after {
            FieldStatus::OutsideMaxAge
        } else {
            FieldStatus::Present
        };
        Ok(Cell {
            value,
            status,
            event_ts: Some(stored.event_ts()),
        })
    }
}

/// Reads `features` for entity rows given column-wise as `(join key, values)`.
///
/// Every join key of every requested view must be given, all columns must have the same
/// length, and a column that no requested view uses is an error. Values are converted to each
/// key's declared type (`1001` finds an int64 key whether sent as int32 or int64).
pub fn read_online_features<'f>(
    store: &dyn OnlineStore,
    defs: &Definitions,
    features: &'f [ResolvedFeature],
    entities: &[(String, Vec<KeyValue>)],
    now_micros: i64,
) -> Result<OnlineFeatures<'f>> {
    let num_rows = entities.first().map_or(0, |(_, v)| v.len());
    if let Some((name, col)) = entities.iter().find(|(_, v)| v.len() != num_rows) {
        return Err(OnlineError::InvalidRequest(format!(
            "join key '{name}' has {} values but '{}' has {num_rows}; every join key needs one value per entity row",
            col.len(),
            entities[0].0
        )));
    }
    let mut seen = HashSet::new();
    for (name, _) in entities {
        if !seen.insert(name.as_str()) {
            return Err(quiver_core::CoreError::DuplicateJoinKey(name.clone()).into());
        }
    }

    let mut view_index: HashMap<&str, usize> = HashMap::new();
    let mut views = Vec::new();
    let mut used_keys: HashSet<&str> = HashSet::new();
    let mut view_of = Vec::with_capacity(features.len());
    for f in features {
        let view = defs.view(&f.view)?;
        if !view.online {
            return Err(OnlineError::InvalidRequest(format!(
                "feature view '{}' is not online (online: false)",
                view.name
            )));
        }
        let vi = match view_index.get(view.name.as_str()) {
            Some(&vi) => vi,
            None => {
                let keys = defs.join_keys(view)?;
                let mut columns = Vec::with_capacity(keys.len());
                for k in &keys {
                    let (name, values) =
                        entities.iter().find(|(n, _)| *n == k.name).ok_or_else(|| {
                            OnlineError::InvalidRequest(format!(
                                "missing join key '{}' needed by feature view '{}'",
                                k.name, view.name
                            ))
                        })?;
                    used_keys.insert(name.as_str());
                    columns.push((name.as_str(), values));
                }
                let mut encoded = Vec::with_capacity(num_rows);
                for row in 0..num_rows {
                    let pairs = columns.iter().map(|(n, v)| (*n, &v[row]));
                    encoded.push(encode_entity_key(&keys, pairs)?);
                }
                let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
                let fingerprint = layout_fingerprint(&view.features);
                let mut rows = vec![None; num_rows];
                store.read(&defs.project, &view.name, &refs, &mut |i, value| {
                    // A row written under another feature layout is not this view's row.
                    if let Some(v) = value
                        && Row::parse(v)?.fingerprint() == fingerprint
                    {
                        rows[i] = Some(v.to_vec());
                    }
                    Ok(())
                })?;
                let fresh_after = view.ttl.limit().map_or(i64::MIN, |ttl| {
                    now_micros.saturating_sub(ttl.as_micros().try_into().unwrap_or(i64::MAX))
                });
                views.push(ViewRows { rows, fresh_after });
                view_index.insert(view.name.as_str(), views.len() - 1);
                views.len() - 1
            }
        };
        if view.features.get(f.index).map(|x| &x.name) != Some(&f.feature.name) {
            return Err(quiver_core::CoreError::UnknownFeature {
                view: view.name.clone(),
                feature: f.feature.name.clone(),
            }
            .into());
        }
        view_of.push(vi);
    }
    if let Some((name, _)) = entities
        .iter()
        .find(|(n, _)| !used_keys.contains(n.as_str()))
    {
        return Err(OnlineError::InvalidRequest(format!(
            "unknown join key '{name}': none of the requested feature views is keyed by it"
        )));
    }
    Ok(OnlineFeatures {
        features,
        view_of,
        views,
        num_rows,
    })
}
