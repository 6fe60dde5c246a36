//! Point-in-time joins as Spark plans, with the native engine's exact answers.
//!
//! The entity rows go to the cluster as a temporary view of their row number, join keys (in
//! their declared types) and event time in nanoseconds. Each view is then one SQL query, a
//! windowed as-of join in time proportional to sorting its inputs (never a range join):
//! source rows and entity rows of a key are put in one partition, ordered by the time from
//! which a row may be used (its event time, or the later of event and created time under
//! `as_of_created`), source rows before entity rows at equal times, and a running window
//! gives every entity row the winner among all source rows usable at its time: the greatest
//! `(event_ts, created_ts, sequence)`, the sequence being the file and row in file. Ordered by
//! event time, that is the last source row before the entity row (a running `last_value`);
//! under `as_of_created`, a running `max`. Before the sort, the source rows are reduced to
//! those some entity row may use: their key has entity rows (a broadcast join with each key's
//! least and greatest entity time, computed here and sent as a table), and they are not newer
//! than all of them (nor, with a ttl, too old for all of them). Only keys and versions are
//! sorted: the winners' features are then read by sequence in a second scan of the source,
//! the winners broadcast to it. The ttl is checked on the winner: it has the greatest event
//! time, so if it is too old every candidate is. Times are compared as nanosecond integers
//! (Parquet nanosecond columns read as their raw values, the others scaled from Spark's
//! microseconds), so nothing is rounded. The last tie-break is the native engine's: files in
//! the order `quiver-source` lists them (each file is read as its own relation, numbered),
//! then the row's position in its file (`_metadata.row_index`).
//!
//! Only entity rows with a winner come back, as `(row number, features)`; they are scattered
//! into input order and converted to the declared types, and the training set is assembled by
//! `quiver-offline` exactly as the native engine's is.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::row::{Row, RowConverter, SortField};
use quiver_core::Feature;
use quiver_offline::{PointInTimeJoin, TrainingSet, event_timestamp_column};
use quiver_source::nanos;

use crate::client::{INLINE_BYTES, Session, uuid};
use crate::error::{Result, SparkError};
use crate::source::{SourceRows, ident, literal, not_null, sequence};

/// Up to this many entity rows, a training set's views are queried at once.
const CONCURRENT_ENTITY_ROWS: usize = 250_000;

/// The entity rows as the cluster gets them: `row` (the input position), the join keys
/// `k0, k1, …` in their declared types, and `t`, the event time in ns.
pub(crate) fn entity_rows(
    join: &PointInTimeJoin<'_>,
    entities: &RecordBatch,
) -> Result<RecordBatch> {
    join.output_schema(entities.schema_ref())?;
    let keys = join.join_keys()?;
    let times = nanos(entities.column(event_timestamp_column(entities.schema_ref())?)).ok_or_else(
        || {
            quiver_offline::OfflineError::InvalidRequest(
                "event timestamp is not a timestamp".into(),
            )
        },
    )?;
    let n = entities.num_rows();
    let mut fields = vec![Field::new("row", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        0..i64::try_from(n).unwrap_or(i64::MAX),
    ))];
    for (i, k) in keys.iter().enumerate() {
        let declared = k.key_type.value_type().to_arrow();
        let column = entities.column_by_name(&k.name).ok_or_else(|| {
            quiver_offline::OfflineError::InvalidRequest(format!(
                "entity table has no column '{}'",
                k.name
            ))
        })?;
        fields.push(Field::new(format!("k{i}"), declared.clone(), true));
        columns.push(cast(column, &declared)?);
    }
    fields.push(Field::new("t", DataType::Int64, true));
    columns.push(Arc::new(times));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Joins `join`'s features onto `entities` (whose [`entity_rows`] are `upload`) on the cluster
/// of `session`; a large entity table is written to `staging` for the cluster to read, when
/// there is one.
pub(crate) async fn training_set(
    session: &Session,
    join: &PointInTimeJoin<'_>,
    entities: RecordBatch,
    upload: &RecordBatch,
    staging: Option<&Path>,
) -> Result<TrainingSet> {
    let keys = join.join_keys()?;
    let n = entities.num_rows();
    let entity_view = session.view_name("quiver_entities");
    // Staged files are removed when `staged` drops, after the queries.
    let mut staged = vec![upload_view(session, &entity_view, upload, staging).await?];
    // Every view's source opened first, then the queries run at once (up to
    // CONCURRENT_ENTITY_ROWS entity rows): the cluster overlaps their stages and fixed costs.
    let mut opened = Vec::new();
    for (view, features) in join.views() {
        let features: Vec<&Feature> = features.iter().map(|(_, f)| *f).collect();
        let source = join
            .definitions()
            .sources
            .get(&view.source)
            .ok_or_else(|| {
                quiver_offline::OfflineError::InvalidRequest(format!(
                    "feature view '{}' names unknown source '{}'",
                    view.name, view.source
                ))
            })?;
        let view_keys = join
            .definitions()
            .join_keys(view)
            .map_err(quiver_offline::OfflineError::from)?;
        let scan = join.sources().scan(source, view_keys, &features)?;
        let entity_keys: Vec<usize> = scan
            .keys()
            .map(|k| keys.iter().position(|x| x.name == k.name).unwrap_or(0))
            .collect();
        // Each key's entity-time bounds are computed here, where the entity rows are, and
        // sent as a table: the cluster broadcasts it without a job of its own.
        let bounds_view = session.view_name(&format!("quiver_bounds_{}", opened.len()));
        let bounds = key_bounds(&view.name, upload, &entity_keys).await?;
        staged.push(upload_view(session, &bounds_view, &bounds, staging).await?);
        opened.push((view, features, scan, entity_keys, bounds_view));
    }
    let plans: Vec<ViewPlan<'_>> = opened
        .iter()
        .map(|(view, features, scan, entity_keys, bounds)| ViewPlan {
            rows: SourceRows {
                view,
                scan,
                features,
            },
            entities: entity_view.clone(),
            entity_keys: entity_keys.clone(),
            bounds: bounds.clone(),
            as_of_created: join.options().as_of_created,
        })
        .collect();
    // A large entity table is planned into every query (the driver holds it and broadcasts
    // its keys), so its views run one at a time to bound the driver's memory.
    let at_once = if n <= CONCURRENT_ENTITY_ROWS {
        plans.len().max(1)
    } else {
        1
    };
    let answers: Vec<Vec<RecordBatch>> =
        futures::stream::iter(plans.iter().map(|plan| async move {
            let query = plan.query()?;
            let view = &plan.rows.view.name;
            tracing::debug!(%view, %query, "training set on Spark");
            session.sql(query, &uuid(), Some(view)).await
        }))
        .buffered(at_once)
        .try_collect()
        .await?;
    let joined = plans
        .iter()
        .zip(&answers)
        .map(|(plan, batches)| scatter(plan, n, batches))
        .collect::<Result<_>>()?;
    Ok(join.assemble(entities, joined)?)
}

/// A table staged as Parquet, removed when dropped (after the queries that read it).
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes `table` the session's temporary view `name`: sent with the plan (as uploaded chunks
/// when large), or, when large and there is a `staging` folder, written there as Parquet for
/// the cluster to read.
async fn upload_view(
    session: &Session,
    name: &str,
    table: &RecordBatch,
    staging: Option<&Path>,
) -> Result<Option<Staged>> {
    match staging {
        Some(dir) if table.get_array_memory_size() > INLINE_BYTES => {
            stage(session, dir, name, table).await.map(Some)
        }
        _ => {
            session
                .create_view(name, table.schema_ref(), std::slice::from_ref(table))
                .await?;
            Ok(None)
        }
    }
}

/// Writes `table` as a Parquet file in `dir` and makes it the session's view `name`.
async fn stage(session: &Session, dir: &Path, name: &str, table: &RecordBatch) -> Result<Staged> {
    let path = dir.join(format!("{name}-{}.parquet", uuid()));
    let failed = |message: String| SparkError::Staging {
        path: path.clone(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let file = std::fs::File::create(&path).map_err(|e| failed(e.to_string()))?;
    let staged = Staged(path.clone());
    // Writing is CPU and disk work: on the blocking pool, so a cancel is seen meanwhile.
    let table = table.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, table.schema(), None)?;
        writer.write(&table)?;
        writer.close().map(drop)
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(|e| failed(e.to_string()))?;
    let location = format!("file://{}", path.display());
    session
        .sql(
            format!(
                "CREATE OR REPLACE TEMPORARY VIEW {name} AS SELECT * FROM parquet.{}",
                ident(&location)
            ),
            &uuid(),
            None,
        )
        .await?;
    session.created_view(name);
    Ok(staged)
}

/// The least and greatest entity time of each key of a view: `k0, k1, …` (the view's keys,
/// from the entity columns `entity_keys` of `entities`), `since`, `until`, over the entity
/// rows whose keys and time are all set. Hashing is CPU work: on the blocking pool.
async fn key_bounds(
    view: &str,
    entities: &RecordBatch,
    entity_keys: &[usize],
) -> Result<RecordBatch> {
    let keys: Vec<ArrayRef> = entity_keys
        .iter()
        .map(|&e| Arc::clone(entities.column(1 + e)))
        .collect();
    let times = Arc::clone(entities.column(entities.num_columns() - 1));
    tokio::task::spawn_blocking(move || {
        let times = times.as_primitive::<Int64Type>();
        let converter = RowConverter::new(
            keys.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(&keys)?;
        let mut groups: HashMap<Row<'_>, usize> = HashMap::new();
        let (mut first, mut since, mut until) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..times.len() {
            if times.is_null(i) || keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let t = times.value(i);
            match groups.entry(rows.row(i)) {
                Entry::Occupied(g) => {
                    let g = *g.get();
                    since[g] = t.min(since[g]);
                    until[g] = t.max(until[g]);
                }
                Entry::Vacant(g) => {
                    g.insert(first.len());
                    first.push(u32::try_from(i).unwrap_or(u32::MAX));
                    since.push(t);
                    until.push(t);
                }
            }
        }
        let first = UInt32Array::from(first);
        let mut fields = Vec::with_capacity(keys.len() + 2);
        let mut columns = Vec::with_capacity(keys.len() + 2);
        for (i, k) in keys.iter().enumerate() {
            fields.push(Field::new(format!("k{i}"), k.data_type().clone(), true));
            columns.push(take(k, &first, None)?);
        }
        for (name, times) in [("since", since), ("until", until)] {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from(times)) as ArrayRef);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    })
    .await
    .map_err(|e| SparkError::Unsupported {
        view: view.to_owned(),
        message: format!("computing its keys' entity times failed: {e}"),
    })?
}

/// The query of one view.
pub(crate) struct ViewPlan<'a> {
    rows: SourceRows<'a>,
    /// The temporary view of the entity rows ([`entity_rows`]).
    entities: String,
    /// For each of the view's keys (canonical order), its column `k<i>` of the entity view.
    entity_keys: Vec<usize>,
    /// The temporary view of each key's least and greatest entity time ([`key_bounds`]).
    bounds: String,
    as_of_created: bool,
}

impl ViewPlan<'_> {
    /// The SQL of the view's as-of join: `row, f0, f1, …` for entity rows with a winner.
    pub(crate) fn query(&self) -> Result<String> {
        let keys = self.rows.key_names();
        let key_list = keys.join(", ");
        let available = if self.as_of_created {
            "GREATEST(ev, cr)"
        } else {
            "ev"
        };
        let entity_keys: Vec<String> = self
            .entity_keys
            .iter()
            .enumerate()
            .map(|(i, e)| format!("k{e} AS k{i}"))
            .collect();
        // A source row is usable from its time `a` on: one newer than every entity row of
        // its key (`until`), or older than all of them by more than the ttl (`since`), is
        // never a winner, and is left out before the sort.
        let (since, ttl) = self.rows.ttl().map_or((String::new(), String::new()), |l| {
            (
                format!(" AND ev >= e.since - {}", literal(l)),
                format!(" AND won.ev >= t - {}", literal(l)),
            )
        });
        // The winner of an entity row at `t` is the greatest `(ev, cr, s)` among its key's
        // source rows with `a <= t`, `s` the file and row in file (the last tie-break). When
        // `a` is the event time that is the last source row before the entity row in the
        // order `(a, side, cr, s)`: a running `last_value`, not a maximum of versions. Under
        // `as_of_created` a later `a` may have an earlier event time, so a running `max` of
        // the versions is kept instead.
        let (order, winner) = if self.as_of_created {
            (
                "a, side",
                "max(CASE WHEN side = 0 THEN named_struct('ev', ev, 'cr', cr, 's', s) END) \
                 OVER running AS won",
            )
        } else {
            (
                "a, side, cr, s",
                "named_struct('ev', last_value(ev, true) OVER running, \
                 's', last_value(s, true) OVER running) AS won",
            )
        };
        // Phase 1 sorts only keys and versions, of the source rows some entity row may use (a
        // join with the keys' bounds, broadcast); phase 2 reads the winners' features by `s`,
        // the winners broadcast to the source's scan (no shuffle of features).
        let features = self.rows.features.len();
        let answer = if features == 0 {
            "SELECT row FROM win".to_owned()
        } else {
            let out: String = (0..features)
                .map(|i| format!(", src.f{i} AS f{i}"))
                .collect();
            format!(
                "SELECT /*+ BROADCAST(win) */ win.row{out} FROM win \
                 JOIN src ON {sequence} = win.s",
                sequence = sequence("src.f", "src.r"),
            )
        };
        Ok(format!(
            "WITH src AS ({source}), win AS (\
               SELECT row, won.s AS s FROM (\
                 SELECT row, side, t, {winner} FROM (\
                   SELECT /*+ BROADCAST(e) */ {src_key_list}, {available} AS a, 0 AS side, \
                     ev, cr, {src_sequence} AS s, CAST(NULL AS BIGINT) AS row, \
                     CAST(NULL AS BIGINT) AS t \
                   FROM src JOIN {bounds} e ON {same_keys} \
                   WHERE ev IS NOT NULL AND {src_keys} AND {available} <= e.until{since} \
                   UNION ALL \
                   SELECT {entity_keys}, t AS a, 1 AS side, NULL, NULL, NULL, row, t \
                   FROM {entities} WHERE t IS NOT NULL AND {ent_keys}\
                 ) WINDOW running AS (PARTITION BY {key_list} ORDER BY {order} \
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)\
               ) WHERE side = 1 AND won.s IS NOT NULL{ttl}\
             ) {answer}",
            source = self.rows.sql()?,
            src_key_list = keys
                .iter()
                .map(|k| format!("src.{k}"))
                .collect::<Vec<_>>()
                .join(", "),
            src_sequence = sequence("f", "r"),
            src_keys = not_null(keys.iter().map(|k| format!("src.{k}"))),
            ent_keys = not_null(self.entity_keys.iter().map(|e| format!("k{e}"))),
            entity_keys = entity_keys.join(", "),
            bounds = self.bounds,
            entities = self.entities,
            same_keys = keys
                .iter()
                .map(|k| format!("src.{k} = e.{k}"))
                .collect::<Vec<_>>()
                .join(" AND "),
        ))
    }
}

/// One view's answer in input order: for each feature, a column of `n` values (null where
/// an entity row has no winner) of the feature's declared type.
fn scatter(plan: &ViewPlan<'_>, n: usize, batches: &[RecordBatch]) -> Result<Vec<ArrayRef>> {
    let mut at: Vec<Option<u32>> = vec![None; n];
    let mut offset = 0u32;
    for batch in batches {
        let rows = batch.column(0).as_primitive::<Int64Type>();
        for (i, row) in rows.iter().enumerate() {
            if let Some(slot) = row
                .and_then(|r| usize::try_from(r).ok())
                .and_then(|r| at.get_mut(r))
            {
                *slot = Some(offset + u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        offset += u32::try_from(batch.num_rows()).unwrap_or(u32::MAX);
    }
    let indices = UInt32Array::from(at);
    plan.rows
        .features
        .iter()
        .enumerate()
        .map(|(i, feature)| {
            let parts: Vec<ArrayRef> = batches
                .iter()
                .map(|b| plan.rows.declared(i, b.column(i + 1)))
                .collect::<Result<_>>()?;
            let all = if parts.is_empty() {
                arrow::array::new_empty_array(&feature.value_type.to_arrow())
            } else {
                let refs: Vec<&dyn Array> = parts.iter().map(AsRef::as_ref).collect();
                concat(&refs)?
            };
            Ok(take(&all, &indices, None)?)
        })
        .collect()
}
