//! Online/offline skew: what a feature service's logged reads were served, compared with what
//! a training set gives for the same keys at the same times (a point-in-time join at each
//! read's `__log_timestamp`). A model trained on the second and served the first sees
//! different features; this finds where.
//!
//! A served value counts only when its status was `PRESENT`: a `NULL_VALUE`, `NOT_FOUND` or
//! `OUTSIDE_MAX_AGE` value is what a model should treat as missing, which is what the join
//! gives (no row, or one older than the ttl). Two values agree when both are missing or both
//! are equal (exactly: they were copied, not computed).

use std::cmp::Ordering;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, make_comparator};
use arrow::compute::{SortOptions, cast, concat_batches};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema, TimeUnit};
use arrow::util::display::array_value_to_string;
use quiver_core::Definitions;
use quiver_offline::{JoinOptions, PointInTimeJoin, read_entity_file};
use quiver_source::Sources;

use crate::error::{OpsError, Result};

/// Feast's number of the `PRESENT` status, as the feature log writes it.
const PRESENT: i32 = 1;

/// Mismatching rows kept per feature as examples.
const EXAMPLES: usize = 5;

/// How one feature's served values compare with the training set's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeatureSkew {
    /// `view__feature`.
    pub feature: String,
    /// Logged rows compared.
    pub rows: u64,
    /// Rows where both agree.
    pub matches: u64,
    /// Served missing where the training set has a value.
    pub served_missing: u64,
    /// Served a value where the training set has none.
    pub offline_missing: u64,
    /// Both have a value and they differ.
    pub different: u64,
    /// For numeric features, quantiles of |served - offline| over the rows that differ:
    /// `[p50, p90, p99, max]`.
    pub difference_quantiles: Option<[f64; 4]>,
    /// Up to five differing rows: (entity keys, served, offline).
    pub examples: Vec<(String, String, String)>,
}

impl FeatureSkew {
    /// The share of rows that agree (1 for no rows).
    pub fn match_rate(&self) -> f64 {
        if self.rows == 0 {
            1.0
        } else {
            self.matches as f64 / self.rows as f64
        }
    }
}

/// The skew of one feature service's logged reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SkewReport {
    /// The service.
    pub service: String,
    /// Log files read.
    pub files: usize,
    /// Logged entity rows.
    pub rows: u64,
    /// Per feature, in the service's order.
    pub features: Vec<FeatureSkew>,
}

/// Compares the logged reads of `service` in `logs` (a file, folder or glob under the data
/// root; default: the service's `logging.destination`) with a training set of the same keys
/// at the same times.
pub fn skew(
    defs: &Definitions,
    sources: &Sources,
    service: &str,
    logs: Option<&str>,
) -> Result<SkewReport> {
    let declared = defs.feature_services.get(service).ok_or_else(|| {
        OpsError::NotFound(format!(
            "no feature service '{service}' in project '{}'",
            defs.project
        ))
    })?;
    let folder = match (logs, &declared.logging) {
        (Some(l), _) => l.to_owned(),
        (None, Some(logging)) => logging.destination.clone(),
        (None, None) => {
            return Err(OpsError::invalid(format!(
                "feature service '{service}' declares no logging: name the logged files (--logs)"
            )));
        }
    };
    let files = quiver_source::source_files(sources.data_root(), &folder)?;
    let mut batches = Vec::with_capacity(files.len());
    for f in &files {
        batches.push(read_entity_file(f)?);
    }
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(OpsError::invalid(format!("no logged reads in '{folder}'")));
    };
    if let Some((i, _)) = batches
        .iter()
        .enumerate()
        .find(|(_, b)| b.schema() != schema)
    {
        return Err(OpsError::invalid(format!(
            "{} has other columns than {} (the service changed between them): compare them apart with --logs",
            files[i].display(),
            files[0].display()
        )));
    }
    let logged = concat_batches(&schema, &batches).map_err(|e| OpsError::invalid(e.to_string()))?;
    let features = defs.resolve_service(service, true)?;
    let join = PointInTimeJoin::new(defs, sources, features.clone(), JoinOptions::default())?;
    let keys = join.join_keys()?;
    let column = |name: &str| {
        logged.column_by_name(name).cloned().ok_or_else(|| {
            OpsError::invalid(format!(
                "the logged reads in '{folder}' have no column '{name}' (not the logs of '{service}' as it is now)"
            ))
        })
    };
    // The entity table: the keys, and each read's time as its event time.
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for k in &keys {
        let c = column(&k.name)?;
        fields.push(Field::new(&k.name, c.data_type().clone(), true));
        columns.push(c);
    }
    let at = column("__log_timestamp")?;
    fields.push(Field::new(
        "event_timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    columns.push(at);
    let entities = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .map_err(|e| OpsError::invalid(e.to_string()))?;
    let key_columns: Vec<ArrayRef> = entities.columns()[..keys.len()].to_vec();
    let set = join.run(entities, &|_| {})?;
    let set_schema = set.schema();
    let offline: Vec<RecordBatch> = set.collect::<std::result::Result<_, _>>()?;
    let offline =
        concat_batches(&set_schema, &offline).map_err(|e| OpsError::invalid(e.to_string()))?;

    let mut report = Vec::with_capacity(features.len());
    for f in &features {
        let name = &f.output_name;
        let served = column(name)?;
        let status = column(&format!("{name}__status"))?;
        let expected = offline.column_by_name(name).cloned().ok_or_else(|| {
            OpsError::Internal(format!("the training set has no column '{name}'"))
        })?;
        report.push(compare(
            name,
            &served,
            status.as_primitive::<Int32Type>(),
            &expected,
            &key_columns,
        )?);
    }
    Ok(SkewReport {
        service: service.to_owned(),
        files: files.len(),
        rows: logged.num_rows() as u64,
        features: report,
    })
}

/// Compares one feature's served values (usable where `status` is `PRESENT`) with the
/// training set's.
fn compare(
    name: &str,
    served: &ArrayRef,
    status: &arrow::array::Int32Array,
    expected: &ArrayRef,
    keys: &[ArrayRef],
) -> Result<FeatureSkew> {
    let invalid = |e: arrow::error::ArrowError| {
        OpsError::invalid(format!(
            "feature '{name}': the logged and offline values differ in type: {e}"
        ))
    };
    let same = make_comparator(served.as_ref(), expected.as_ref(), SortOptions::default())
        .map_err(invalid)?;
    let numeric = |a: &ArrayRef| {
        (a.data_type().is_numeric())
            .then(|| cast(a, &DataType::Float64).ok())
            .flatten()
    };
    let (served_f, expected_f) = (numeric(served), numeric(expected));
    let mut skew = FeatureSkew {
        feature: name.to_owned(),
        rows: served.len() as u64,
        matches: 0,
        served_missing: 0,
        offline_missing: 0,
        different: 0,
        difference_quantiles: None,
        examples: Vec::new(),
    };
    let mut differences = Vec::new();
    let text = |a: &ArrayRef, row: usize| {
        if a.is_null(row) {
            "null".to_owned()
        } else {
            array_value_to_string(a, row).unwrap_or_default()
        }
    };
    for row in 0..served.len() {
        let usable = status.is_valid(row) && status.value(row) == PRESENT && served.is_valid(row);
        let agree = match (usable, expected.is_valid(row)) {
            (false, false) => true,
            (false, true) => {
                skew.served_missing += 1;
                false
            }
            (true, false) => {
                skew.offline_missing += 1;
                false
            }
            (true, true) if same(row, row) == Ordering::Equal => true,
            (true, true) => {
                skew.different += 1;
                if let (Some(s), Some(e)) = (&served_f, &expected_f) {
                    let (s, e) = (
                        s.as_primitive::<Float64Type>(),
                        e.as_primitive::<Float64Type>(),
                    );
                    differences.push((s.value(row) - e.value(row)).abs());
                }
                false
            }
        };
        if agree {
            skew.matches += 1;
        } else if skew.examples.len() < EXAMPLES {
            let key: Vec<String> = keys.iter().map(|k| text(k, row)).collect();
            let served_text = if usable {
                text(served, row)
            } else {
                "missing".into()
            };
            skew.examples
                .push((key.join(","), served_text, text(expected, row)));
        }
    }
    if !differences.is_empty() {
        differences.sort_by(f64::total_cmp);
        let at = |q: f64| differences[((differences.len() - 1) as f64 * q).round() as usize];
        skew.difference_quantiles = Some([at(0.5), at(0.9), at(0.99), at(1.0)]);
    }
    Ok(skew)
}
