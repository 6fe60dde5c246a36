//! Online reads: features for many entity rows, each value with a status and event time.

use std::collections::BTreeMap;

use quiver_core::{Definitions, JoinKey, KeyValue, ResolvedFeature, encode_entity_key};

use crate::error::{OnlineError, Result};
use crate::row::{Corrupt, FeatureValue, Row, decode, layout_fingerprint};
use crate::store::{OnlineStore, ViewId, ViewKeys};

/// The status of one returned value (Feast's `FieldStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldStatus {
    /// A value was found and is within the ttl.
    Present = 0,
    /// The row exists but this feature is null in it.
    NullValue = 1,
    /// No row for this key in this view.
    NotFound = 2,
    /// The row is older than `now - ttl`; the value is still returned.
    OutsideMaxAge = 3,
}

impl FieldStatus {
    /// Every status, in the order of [`StatusCounts`].
    pub const ALL: [Self; 4] = [
        Self::Present,
        Self::NullValue,
        Self::NotFound,
        Self::OutsideMaxAge,
    ];

    /// The status's name in metrics, as Feast's (`present`, `not_found`, ...).
    pub fn metric_name(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::NullValue => "null_value",
            Self::NotFound => "not_found",
            Self::OutsideMaxAge => "outside_max_age",
        }
    }
}

/// Cells answered per status, indexed by `FieldStatus as usize`.
pub type StatusCounts = [u64; 4];

/// One answered cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell<'a> {
    /// The value (`Null` unless present or outside max age).
    pub value: FeatureValue<'a>,
    /// Its status.
    pub status: FieldStatus,
    /// The row's event time (ns), when a row was found.
    pub event_ts: Option<i64>,
}

/// One view of a [`ReadPlan`].
#[derive(Debug)]
struct PlannedView {
    name: String,
    /// Its stored rows.
    id: ViewId,
    keys: Vec<JoinKey>,
    /// Layout fingerprint of the view's rows; rows written under another layout are skipped.
    fingerprint: u32,
    /// The view's ttl in ns, if it has one.
    ttl_nanos: Option<i64>,
}

/// An online read worked out against one registry version: the features in output order and,
/// for each of their views, the stored rows (with the view's online generation), the join
/// keys, the row layout and the ttl. Building it does every registry lookup a read needs, so
/// a server keeps one per feature list and version.
#[derive(Debug)]
pub struct ReadPlan {
    features: Vec<ResolvedFeature>,
    /// For each feature, the index of its view in `views`.
    view_of: Vec<usize>,
    views: Vec<PlannedView>,
}

impl ReadPlan {
    /// Plans a read of `features` (resolved against `defs`, whose views have the online
    /// `generations` of their registry version); every view must be online.
    pub fn new(
        defs: &Definitions,
        generations: &BTreeMap<String, u64>,
        features: Vec<ResolvedFeature>,
    ) -> Result<Self> {
        let mut views: Vec<PlannedView> = Vec::new();
        let mut view_of = Vec::with_capacity(features.len());
        for f in &features {
            let view = defs.view(&f.view)?;
            if view.features.get(f.index).map(|x| &x.name) != Some(&f.feature.name) {
                return Err(quiver_core::CoreError::UnknownFeature {
                    view: view.name.clone(),
                    feature: f.feature.name.clone(),
                }
                .into());
            }
            if let Some(i) = views.iter().position(|v| v.name == view.name) {
                view_of.push(i);
                continue;
            }
            if !view.online {
                return Err(OnlineError::FailedPrecondition(format!(
                    "feature view '{}' is not online (online: false)",
                    view.name
                )));
            }
            let generation = generations.get(&view.name).copied().unwrap_or(0);
            views.push(PlannedView {
                name: view.name.clone(),
                id: ViewId::new(&defs.project, &view.name, generation),
                keys: defs.join_keys(view)?,
                fingerprint: layout_fingerprint(&view.features),
                ttl_nanos: view
                    .ttl
                    .limit()
                    .map(|ttl| ttl.as_nanos().try_into().unwrap_or(i64::MAX)),
            });
            view_of.push(views.len() - 1);
        }
        Ok(Self {
            features,
            view_of,
            views,
        })
    }

    /// The views the plan reads.
    pub fn view_names(&self) -> impl Iterator<Item = &str> {
        self.views.iter().map(|v| v.name.as_str())
    }

    /// The planned features, in output order.
    pub fn features(&self) -> &[ResolvedFeature] {
        &self.features
    }
}

/// Rows read for one view, aligned with the request's entity rows.
#[derive(Debug)]
struct ViewRows {
    rows: Vec<Option<Vec<u8>>>,
    /// Rows older than this (ns) are outside max age (`i64::MIN` without ttl).
    fresh_after: i64,
    /// Cells answered so far, per status.
    answered: [std::cell::Cell<u64>; 4],
}

/// The answer to an online read: the requested features for every entity row, in order.
#[derive(Debug)]
pub struct OnlineFeatures<'p> {
    plan: &'p ReadPlan,
    views: Vec<ViewRows>,
    num_rows: usize,
}

impl<'p> OnlineFeatures<'p> {
    /// Number of entity rows.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// The requested features, in output order.
    pub fn features(&self) -> &'p [ResolvedFeature] {
        &self.plan.features
    }

    /// For each planned view (by name), the cells [`OnlineFeatures::cell`] answered so far,
    /// per status: what a caller served, for metrics.
    pub fn answered(&self) -> impl Iterator<Item = (&'p str, StatusCounts)> + '_ {
        self.plan.views.iter().zip(&self.views).map(|(view, rows)| {
            (
                view.name.as_str(),
                std::array::from_fn(|i| rows.answered[i].get()),
            )
        })
    }

    /// The cell of feature column `col` for entity row `row`.
    pub fn cell(&self, col: usize, row: usize) -> Result<Cell<'_>> {
        Ok(self.decode_cell(col, row)?)
    }

    /// [`OnlineFeatures::cell`] with the small error, so a cell is decoded in registers.
    #[inline]
    fn decode_cell(&self, col: usize, row: usize) -> Result<Cell<'_>, Corrupt> {
        let feature = &self.plan.features[col];
        let rows = &self.views[self.plan.view_of[col]];
        let count = |status: FieldStatus| {
            let n = &rows.answered[status as usize];
            n.set(n.get() + 1);
        };
        let Some(bytes) = rows.rows[row].as_deref() else {
            count(FieldStatus::NotFound);
            return Ok(Cell {
                value: FeatureValue::Null,
                status: FieldStatus::NotFound,
                event_ts: None,
            });
        };
        let stored = Row::check(bytes)?;
        let value = decode(feature.feature.value_type, stored.field(feature.index)?)?;
        let status = if matches!(value, FeatureValue::Null) {
            FieldStatus::NullValue
        } else if stored.event_ts() < rows.fresh_after {
            FieldStatus::OutsideMaxAge
        } else {
            FieldStatus::Present
        };
        count(status);
        Ok(Cell {
            value,
            status,
            event_ts: Some(stored.event_ts()),
        })
    }
}

/// The rows an online read found, apart from its plan, so they can outlive the request (the
/// feature log decodes them later, on a thread of its own). Moving them costs no copy.
#[derive(Debug)]
pub struct FoundRows {
    views: Vec<ViewRows>,
    num_rows: usize,
}

impl OnlineFeatures<'_> {
    /// The rows this read found, for [`FoundRows::features`].
    pub fn into_found(self) -> FoundRows {
        FoundRows {
            views: self.views,
            num_rows: self.num_rows,
        }
    }
}

impl FoundRows {
    /// The answer again, with the plan that read the rows (another plan is a logic error and
    /// answers nonsense or `NotFound`).
    pub fn features(self, plan: &ReadPlan) -> OnlineFeatures<'_> {
        OnlineFeatures {
            plan,
            views: self.views,
            num_rows: self.num_rows,
        }
    }
}

/// Reads the features of `plan` for entity rows given column-wise as `(join key, values)`:
/// the keys of every planned view in one store read.
///
/// Every join key of every planned view must be given, all columns must have the same
/// length, and a column that no planned view uses is an error. Values are converted to each
/// key's declared type (`1001` finds an int64 key whether sent as int32 or int64).
pub async fn read_online_features<'p>(
    store: &dyn OnlineStore,
    plan: &'p ReadPlan,
    entities: &[(String, Vec<KeyValue>)],
    now_nanos: i64,
) -> Result<OnlineFeatures<'p>> {
    let num_rows = entities.first().map_or(0, |(_, v)| v.len());
    let encoded = encode_keys(plan, entities, num_rows)?;
    let reads: Vec<ViewKeys<'_>> = plan
        .views
        .iter()
        .zip(&encoded)
        .map(|(view, keys)| ViewKeys {
            view: &view.id,
            keys,
        })
        .collect();
    let stored = store.read(&reads).await?;
    let mut views = Vec::with_capacity(plan.views.len());
    for (view, rows) in plan.views.iter().zip(stored) {
        if rows.len() != num_rows {
            return Err(OnlineError::Corrupt(format!(
                "the store answered {} rows for {num_rows} keys",
                rows.len()
            )));
        }
        let mut kept = Vec::with_capacity(num_rows);
        for row in rows {
            // A row written under another feature layout is not this view's row.
            kept.push(match row {
                Some(v) if Row::parse(&v)?.fingerprint() == view.fingerprint => Some(v),
                _ => None,
            });
        }
        let fresh_after = view
            .ttl_nanos
            .map_or(i64::MIN, |ttl| now_nanos.saturating_sub(ttl));
        views.push(ViewRows {
            rows: kept,
            fresh_after,
            answered: Default::default(),
        });
    }
    Ok(OnlineFeatures {
        plan,
        views,
        num_rows,
    })
}

/// The canonical entity keys of each planned view, after checking the request's columns.
fn encode_keys(
    plan: &ReadPlan,
    entities: &[(String, Vec<KeyValue>)],
    num_rows: usize,
) -> Result<Vec<Vec<Vec<u8>>>> {
    if let Some((name, col)) = entities.iter().find(|(_, v)| v.len() != num_rows) {
        return Err(OnlineError::InvalidRequest(format!(
            "join key '{name}' has {} values but '{}' has {num_rows}; every join key needs one value per entity row",
            col.len(),
            entities[0].0
        )));
    }
    for (i, (name, _)) in entities.iter().enumerate() {
        if entities[..i].iter().any(|(n, _)| n == name) {
            return Err(quiver_core::CoreError::DuplicateJoinKey(name.clone()).into());
        }
    }
    let mut used_keys = vec![false; entities.len()];
    let mut out = Vec::with_capacity(plan.views.len());
    for view in &plan.views {
        let mut columns = Vec::with_capacity(view.keys.len());
        for k in &view.keys {
            let i = entities
                .iter()
                .position(|(n, _)| *n == k.name)
                .ok_or_else(|| {
                    OnlineError::InvalidRequest(format!(
                        "missing join key '{}' needed by feature view '{}'",
                        k.name, view.name
                    ))
                })?;
            used_keys[i] = true;
            columns.push((entities[i].0.as_str(), &entities[i].1));
        }
        let mut encoded = Vec::with_capacity(num_rows);
        for row in 0..num_rows {
            let pairs = columns.iter().map(|(n, v)| (*n, &v[row]));
            encoded.push(encode_entity_key(&view.keys, pairs)?);
        }
        out.push(encoded);
    }
    if let Some((name, _)) = entities
        .iter()
        .zip(&used_keys)
        .find_map(|(e, used)| (!used).then_some(e))
    {
        return Err(OnlineError::InvalidRequest(format!(
            "unknown join key '{name}': none of the requested feature views is keyed by it"
        )));
    }
    Ok(out)
}
