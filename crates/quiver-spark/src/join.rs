//! Point-in-time joins as Spark plans, with the native engine's exact answers.
//!
//! The entity rows go to the cluster as a temporary view of their row number, join keys (in
//! their declared types) and event time in nanoseconds. Each view is then one SQL query, a
//! windowed as-of join in time proportional to sorting its inputs (never a range join):
//! source rows and entity rows of a key are put in one partition, ordered by the time from
//! which a row may be used (its event time, or the later of event and created time under
//! `as_of_created`), source rows before entity rows at equal times, and a running
//! `max_by(row, (event_ts, created_ts, file, row in file))` gives every entity row the winner
//! among all source rows usable at its time. The ttl is checked on that winner: it has the
//! greatest event time, so if it is too old every candidate is. Times are compared as
//! nanosecond integers (Parquet nanosecond columns read as their raw values, the others
//! scaled from Spark's microseconds), so nothing is rounded. The last tie-break is the
//! native engine's: files in the order `quiver-source` lists them (each file is read as its
//! own relation, numbered), then the row's position in its file (`_metadata.row_index`).
//!
//! Only entity rows with a winner come back, as `(row number, features)`; they are scattered
//! into input order and converted to the declared types, and the training set is assembled by
//! `quiver-offline` exactly as the native engine's is.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use quiver_core::{Feature, FeatureView, JoinKey};
use quiver_offline::{PointInTimeJoin, TrainingSet, event_timestamp_column};
use quiver_source::{SourceFile, SourceScan, nanos};

use crate::client::{Session, uuid};
use crate::error::{Result, SparkError};

/// The temporary view of a session's entity rows.
const ENTITIES: &str = "quiver_entities";

/// Joins `join`'s features onto `entities` on the cluster of `session`.
pub(crate) async fn training_set(
    session: &Session,
    join: &PointInTimeJoin<'_>,
    entities: RecordBatch,
) -> Result<TrainingSet> {
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
    columns.push(Arc::new(times.clone()));
    let schema = Arc::new(Schema::new(fields));
    let upload = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    session.create_view(ENTITIES, &schema, &[upload]).await?;

    let (lo, hi) = times
        .iter()
        .flatten()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let mut joined = Vec::new();
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
        let plan = ViewPlan {
            view,
            scan: &scan,
            features: &features,
            entity_keys,
            as_of_created: join.options().as_of_created,
            window: (lo, hi),
        };
        let query = plan.query()?;
        tracing::debug!(view = %view.name, %query, "training set on Spark");
        let batches = session.sql(query, &uuid(), Some(&view.name)).await?;
        joined.push(scatter(&plan, n, &batches)?);
    }
    Ok(join.assemble(entities, joined)?)
}

/// The query of one view.
pub(crate) struct ViewPlan<'a> {
    view: &'a FeatureView,
    scan: &'a SourceScan,
    features: &'a [&'a Feature],
    /// For each of the view's keys (canonical order), its column `k<i>` of the entity view.
    entity_keys: Vec<usize>,
    as_of_created: bool,
    /// Least and greatest entity event time (ns).
    window: (i64, i64),
}

impl ViewPlan<'_> {
    fn ttl(&self) -> Option<i64> {
        self.view
            .ttl
            .limit()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// The SQL of the view's as-of join: `row, f0, f1, …` for entity rows with a winner.
    pub(crate) fn query(&self) -> Result<String> {
        let keys: Vec<String> = (0..self.entity_keys.len())
            .map(|i| format!("k{i}"))
            .collect();
        let key_list = keys.join(", ");
        let (lo, hi) = self.window;
        let lo = self.ttl().map_or(i64::MIN, |l| lo.saturating_sub(l));
        let available = if self.as_of_created {
            "GREATEST(ev, cr)"
        } else {
            "ev"
        };
        let values: Vec<String> = (0..self.features.len())
            .map(|i| format!("'f{i}', f{i}"))
            .collect();
        let value = if values.is_empty() {
            "named_struct('ev', ev)".to_owned()
        } else {
            format!("named_struct('ev', ev, {})", values.join(", "))
        };
        let source = self.source_rows()?;
        let entity_keys: Vec<String> = self
            .entity_keys
            .iter()
            .enumerate()
            .map(|(i, e)| format!("k{e} AS k{i}"))
            .collect();
        let ttl = self.ttl().map_or(String::new(), |l| {
            format!(" AND w.ev >= t - {}", literal(l))
        });
        let out: Vec<String> = (0..self.features.len())
            .map(|i| format!("w.f{i} AS f{i}"))
            .collect();
        let out = if out.is_empty() {
            String::new()
        } else {
            format!(", {}", out.join(", "))
        };
        Ok(format!(
            "SELECT row{out} FROM (\
               SELECT row, side, t, max_by(val, ord) OVER (PARTITION BY {key_list} ORDER BY a, side \
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS w FROM (\
                 SELECT {key_list}, {available} AS a, 0 AS side, {value} AS val, \
                   named_struct('ev', ev, 'cr', cr, 'f', f, 'r', r) AS ord, \
                   CAST(NULL AS BIGINT) AS row, CAST(NULL AS BIGINT) AS t \
                 FROM ({source}) WHERE ev IS NOT NULL AND {src_keys} AND ev >= {lo} AND {available} <= {hi} \
                 UNION ALL \
                 SELECT {entity_keys}, t AS a, 1 AS side, NULL, NULL, row, t FROM {ENTITIES} \
                 WHERE t IS NOT NULL AND {ent_keys}\
               )\
             ) WHERE side = 1 AND w IS NOT NULL{ttl}",
            src_keys = not_null(keys.iter().cloned()),
            ent_keys = not_null(self.entity_keys.iter().map(|e| format!("k{e}"))),
            entity_keys = entity_keys.join(", "),
            lo = literal(lo),
            hi = literal(hi),
        ))
    }

    /// Every file of the source as its own relation, numbered in listing order: keys as
    /// `k<i>` in their declared types, `ev` and `cr` in ns, `f` and `r` (file and row), the
    /// features as `f<i>`.
    fn source_rows(&self) -> Result<String> {
        let (ts, created) = self.scan.time_columns();
        let mut parts = Vec::with_capacity(self.scan.file_count());
        for file in 0..self.scan.file_count() {
            let mut select: Vec<String> = self
                .scan
                .keys()
                .zip(self.scan.key_columns())
                .enumerate()
                .map(|(i, (k, c))| format!("TRY_CAST({} AS {}) AS k{i}", ident(c), key_sql_type(k)))
                .collect();
            select.push(format!("{} AS ev", self.time(file, ts)?));
            select.push(match created {
                Some(c) => format!(
                    "COALESCE({}, {}) AS cr",
                    self.time(file, c)?,
                    literal(i64::MIN)
                ),
                None => format!("{} AS cr", literal(i64::MIN)),
            });
            select.push(format!("{file} AS f"));
            select.push("_metadata.row_index AS r".to_owned());
            for (i, f) in self.features.iter().enumerate() {
                select.push(format!("{} AS f{i}", ident(self.scan.feature_column(f))));
            }
            parts.push(format!(
                "SELECT {} FROM parquet.{}",
                select.join(", "),
                ident(&self.location(file)?)
            ));
        }
        Ok(parts.join(" UNION ALL "))
    }

    /// A time column of one file as nanoseconds.
    fn time(&self, file: usize, column: &str) -> Result<String> {
        match self.scan.column_type(file, column) {
            // Read as its raw values (`nanosAsLong`).
            Some(DataType::Timestamp(TimeUnit::Nanosecond, _)) => Ok(ident(column)),
            Some(DataType::Timestamp(_, _)) => Ok(format!(
                "unix_micros(CAST({} AS TIMESTAMP)) * 1000",
                ident(column)
            )),
            other => Err(SparkError::Unsupported {
                view: self.view.name.clone(),
                message: format!("time column '{column}' has type {other:?}"),
            }),
        }
    }

    /// Where the cluster reads file `file`, as a Hadoop path with glob characters escaped.
    fn location(&self, file: usize) -> Result<String> {
        let url = match self.scan.file(file) {
            SourceFile::Local(path) => format!("file://{}", path.display()),
            SourceFile::Object(o) => {
                let url = o.url.to_string();
                match url.strip_prefix("s3://") {
                    Some(rest) => format!("s3a://{rest}"),
                    None if url.starts_with("gs://") => url,
                    None => {
                        return Err(SparkError::Unsupported {
                            view: self.view.name.clone(),
                            message: format!("Spark cannot read {url} (only s3:// and gs://)"),
                        });
                    }
                }
            }
        };
        Ok(url
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '\\' | '*' | '?' | '[' | ']' | '{' | '}' | '^');
                escape.then_some('\\').into_iter().chain([c])
            })
            .collect())
    }

    /// The feature whose Parquet column is nanosecond times (read by Spark as integers).
    fn nanosecond_feature(&self, i: usize) -> bool {
        let column = self.scan.feature_column(self.features[i]);
        (0..self.scan.file_count()).any(|f| {
            matches!(
                self.scan.column_type(f, column),
                Some(DataType::Timestamp(TimeUnit::Nanosecond, _))
            )
        })
    }
}

/// `c IS NOT NULL AND …` over `columns`.
fn not_null(columns: impl Iterator<Item = String>) -> String {
    columns
        .map(|c| format!("{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A Spark SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A BIGINT literal (the least one is not writable as a literal).
fn literal(v: i64) -> String {
    if v == i64::MIN {
        format!("({} - 1)", i64::MIN + 1)
    } else {
        format!("CAST({v} AS BIGINT)")
    }
}

/// The Spark type of a declared key type.
fn key_sql_type(k: &JoinKey) -> &'static str {
    match k.key_type {
        quiver_core::KeyType::Int32 => "INT",
        quiver_core::KeyType::Int64 => "BIGINT",
        quiver_core::KeyType::String => "STRING",
        quiver_core::KeyType::Bytes => "BINARY",
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
    plan.features
        .iter()
        .enumerate()
        .map(|(i, feature)| {
            let declared = feature.value_type.to_arrow();
            let parts: Vec<ArrayRef> = batches
                .iter()
                .map(|b| {
                    let column = b.column(i + 1);
                    if plan.nanosecond_feature(i) && column.data_type() == &DataType::Int64 {
                        let ns = column
                            .as_primitive::<Int64Type>()
                            .reinterpret_cast::<arrow::datatypes::TimestampNanosecondType>()
                            .with_timezone("UTC");
                        cast(&ns, &declared)
                    } else {
                        cast(column, &declared)
                    }
                })
                .collect::<arrow::error::Result<_>>()?;
            let all = if parts.is_empty() {
                arrow::array::new_empty_array(&declared)
            } else {
                let refs: Vec<&dyn Array> = parts.iter().map(AsRef::as_ref).collect();
                concat(&refs)?
            };
            Ok(take(&all, &indices, None)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal(i64::MIN), "(-9223372036854775807 - 1)");
        assert_eq!(literal(5), "CAST(5 AS BIGINT)");
        assert_eq!(
            not_null(["k0".to_owned(), "k2".to_owned()].into_iter()),
            "k0 IS NOT NULL AND k2 IS NOT NULL"
        );
    }
}
