//! Feature statistics of a view's data, and drift between two of them.
//!
//! A profile covers a [`DataSelection`]: a window of the view's source (rows with an event
//! time in it, every row, not only the newest per key) or Parquet files whose columns are the
//! view's features (a training set, a feature service's log: `feature` or `view__feature`).
//! It is computed in one pass over the row groups on every core, each worker with its own
//! sketches, merged at the end ([`quiver_stats::Profile`]). Profiles are kept beside the data,
//! under `<data root>/_profiles/<view>/` (the `_` keeps them out of every source), keyed by
//! what they cover and by the size and modification time of every file read: asking again
//! for the same window of unchanged files reads the stored profile instead of the data.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use quiver_core::{DataSelection, Definitions, Feature, FeatureView, format_nanos};
use quiver_source::{BATCH_ROWS, SourceFile, Sources, in_parallel};
use quiver_stats::{DriftReport, Profile};
use serde::{Deserialize, Serialize};

use crate::error::{OpsError, Result};

/// Bumped when what a stored profile holds changes: older ones are computed again.
const FORMAT: u32 = 1;

/// The folder of stored profiles, under the data root.
pub const PROFILES_FOLDER: &str = "_profiles";

/// A view's profile of one data selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewProfile {
    /// The view.
    pub view: String,
    /// The data selection, as written.
    pub data: String,
    /// For a window, its start and end (RFC 3339) as resolved.
    pub window: Option<[String; 2]>,
    /// Files read.
    pub files: usize,
    /// When it was computed (RFC 3339).
    pub computed_at: String,
    /// What it covers, exactly: checked when a stored profile is read back.
    pub key: String,
    /// The statistics.
    pub profile: Profile,
    /// Whether this was read from a stored profile rather than computed now.
    #[serde(skip)]
    pub stored: bool,
}

/// The profile of `data` for `view`, from the stored profiles when one covers exactly the
/// same data, else computed on `threads` workers and stored.
pub fn profile(
    defs: &Definitions,
    sources: &Sources,
    view: &str,
    data: &DataSelection,
    now: i64,
    threads: usize,
) -> Result<ViewProfile> {
    let v = defs.view(view)?;
    let plan = Plan::new(defs, sources, v, data, now)?;
    let folder = sources.data_root().join(PROFILES_FOLDER).join(&v.name);
    let path = folder.join(format!(
        "{:016x}.json",
        quiver_stats::hash::bytes(plan.key.as_bytes())
    ));
    if let Some(stored) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ViewProfile>(&b).ok())
        .filter(|p| p.key == plan.key)
    {
        return Ok(ViewProfile {
            stored: true,
            ..stored
        });
    }
    let profile = plan.run(threads)?;
    let result = ViewProfile {
        view: v.name.clone(),
        data: data.to_string(),
        window: plan.window.map(|(s, e)| [format_nanos(s), format_nanos(e)]),
        files: plan.files.len(),
        computed_at: format_nanos(now),
        key: plan.key,
        profile,
        stored: false,
    };
    // Keeping it saves the next comparison a scan; failing to is no reason to fail this one.
    if let Err(e) = store(&folder, &path, &result) {
        tracing::warn!(feature_view = %v.name, "could not keep the profile: {e}");
    }
    Ok(result)
}

/// Stored profiles kept per view; the least recently written go first.
pub const PROFILES_KEPT: usize = 200;

/// Writes a profile: a temporary file, then a rename, so readers see all of it or none; then
/// drops the oldest beyond [`PROFILES_KEPT`].
fn store(folder: &Path, path: &Path, profile: &ViewProfile) -> Result<()> {
    let io = |e: std::io::Error| OpsError::Io {
        path: path.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(folder).map_err(io)?;
    let text = serde_json::to_vec(profile).map_err(|e| OpsError::Internal(e.to_string()))?;
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = folder.join(format!(".{}-{n}.tmp", std::process::id()));
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    let mut stored: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(folder)
        .map_err(io)?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let name = name.to_str()?;
            (name.ends_with(".json") && !name.starts_with('.'))
                .then(|| Some((e.metadata().ok()?.modified().ok()?, e.path())))?
        })
        .collect();
    if stored.len() > PROFILES_KEPT {
        stored.sort();
        for (_, old) in &stored[..stored.len() - PROFILES_KEPT] {
            // Another process may have removed it already.
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

/// Compares `current` with `reference` (default: the view's `monitoring.reference`) feature
/// by feature, under the view's thresholds.
pub fn drift(
    defs: &Definitions,
    sources: &Sources,
    view: &str,
    reference: Option<&DataSelection>,
    current: &DataSelection,
    now: i64,
    threads: usize,
) -> Result<(DriftReport, [ViewProfile; 2])> {
    let v = defs.view(view)?;
    let monitoring = v.monitoring.clone().unwrap_or_default();
    let reference = reference.or(monitoring.reference.as_ref()).ok_or_else(|| {
        OpsError::invalid(format!(
            "feature view '{view}' declares no monitoring.reference: name one (--reference)"
        ))
    })?;
    let r = profile(defs, sources, view, reference, now, threads)?;
    let c = profile(defs, sources, view, current, now, threads)?;
    let mut features: Vec<_> = v
        .features
        .iter()
        .filter_map(|f| {
            let (a, b) = (r.profile.feature(&f.name)?, c.profile.feature(&f.name)?);
            Some(quiver_stats::compare(
                a,
                b,
                &monitoring.thresholds_for(&f.name),
            ))
        })
        .collect();
    if features.is_empty() {
        return Err(OpsError::invalid(format!(
            "'{reference}' and '{current}' have no feature of view '{view}' in common"
        )));
    }
    features.sort_by_key(|f| f.verdict);
    let report = DriftReport {
        view: v.name.clone(),
        reference: reference.to_string(),
        current: current.to_string(),
        features,
    };
    Ok((report, [r, c]))
}

/// One feature read from files: its profile name and the column it comes from.
struct Column {
    feature: Feature,
    column: String,
}

/// What a profile reads.
struct Plan<'a> {
    defs: &'a Definitions,
    sources: &'a Sources,
    view: &'a FeatureView,
    /// The view's source.
    source: &'a quiver_core::Source,
    files: Vec<SourceFile>,
    /// Window `[start, end)` of a source window.
    window: Option<(i64, i64)>,
    /// The features profiled, with their columns in the files.
    columns: Vec<Column>,
    key: String,
}

impl<'a> Plan<'a> {
    fn new(
        defs: &'a Definitions,
        sources: &'a Sources,
        view: &'a FeatureView,
        data: &DataSelection,
        now: i64,
    ) -> Result<Self> {
        let window = data.window(now);
        let source = defs
            .sources
            .get(&view.source)
            .ok_or_else(|| OpsError::NotFound(format!("no source '{}'", view.source)))?;
        let (files, columns, described) = match (&data, window) {
            (DataSelection::Window { .. }, Some((start, end))) => {
                if start >= end {
                    return Err(OpsError::invalid(format!(
                        "window '{data}' is empty: {} is not before {}",
                        format_nanos(start),
                        format_nanos(end)
                    )));
                }
                let columns = view
                    .features
                    .iter()
                    .map(|f| Column {
                        feature: f.clone(),
                        column: source.column_for(&f.name).to_owned(),
                    })
                    .collect();
                let described = serde_json::json!({
                    "source": source, "start": start, "end": end,
                });
                (sources.files(source)?, columns, described)
            }
            _ => {
                let DataSelection::Files(path) = data else {
                    return Err(OpsError::invalid(format!("'{data}' is not a window")));
                };
                let files = quiver_source::source_files(sources.data_root(), path)?;
                let columns = file_columns(view, &files[0])?;
                let files = files.into_iter().map(SourceFile::Local).collect();
                (files, columns, serde_json::json!({ "files": path }))
            }
        };
        let mut stamps = Vec::with_capacity(files.len());
        for f in &files {
            let fingerprint = f.fingerprint().map_err(|e| OpsError::Io {
                path: PathBuf::from(f.to_string()),
                source: e,
            })?;
            stamps.push(serde_json::json!([f.to_string(), fingerprint]));
        }
        let features: Vec<_> = columns
            .iter()
            .map(|c: &Column| serde_json::json!([c.feature.name, c.feature.value_type, c.column]))
            .collect();
        let key = serde_json::json!({
            "format": FORMAT, "view": view.name, "data": described,
            "features": features, "files": stamps,
        })
        .to_string();
        Ok(Self {
            defs,
            sources,
            view,
            source,
            files,
            window,
            columns,
            key,
        })
    }

    fn empty(&self) -> Profile {
        Profile::new(
            self.columns
                .iter()
                .map(|c| (c.feature.name.as_str(), c.feature.value_type)),
        )
    }

    fn run(&self, threads: usize) -> Result<Profile> {
        let parts = match self.window {
            Some(window) => self.run_window(window, threads)?,
            None => self.run_files(threads)?,
        };
        let mut whole = self.empty();
        for p in &parts {
            whole.merge(p);
        }
        Ok(whole)
    }

    /// A source window: the row groups whose event times may fall in it, rows filtered.
    fn run_window(&self, (start, end): (i64, i64), threads: usize) -> Result<Vec<Profile>> {
        let features: Vec<&Feature> = self.columns.iter().map(|c| &c.feature).collect();
        let scan = self
            .sources
            .scan(self.source, self.defs.join_keys(self.view)?, &features)?;
        let tasks = scan.tasks(start, end - 1);
        let mut read: Vec<&str> = scan.key_and_time_columns();
        read.extend(self.columns.iter().map(|c| c.column.as_str()));
        in_parallel(
            tasks.len(),
            threads,
            || self.empty(),
            |t, profile| {
                let task = &tasks[t];
                for batch in scan.reader(task, &read, None)? {
                    let batch = batch.map_err(|e| scan.error(task.file, e.to_string()))?;
                    let times = scan.key_and_times(&batch, task.file)?.event;
                    let keep: BooleanArray = times
                        .iter()
                        .map(|t| Some(t.is_some_and(|t| t >= start && t < end)))
                        .collect();
                    let all = keep.true_count() == batch.num_rows();
                    let mut columns = Vec::with_capacity(features.len());
                    for f in &features {
                        let a = scan.feature_array(&batch, task.file, f)?;
                        columns.push(if all {
                            a
                        } else {
                            filter(&a, &keep).map_err(|e| scan.error(task.file, e.to_string()))?
                        });
                    }
                    profile.update(&columns);
                }
                Ok::<_, OpsError>(())
            },
        )
    }

    /// Files named directly: every row of every row group.
    fn run_files(&self, threads: usize) -> Result<Vec<Profile>> {
        let mut opened = Vec::with_capacity(self.files.len());
        let mut tasks = Vec::new();
        let paths: Vec<&Path> = self
            .files
            .iter()
            .map(|f| {
                f.local_path()
                    .ok_or_else(|| OpsError::invalid(format!("{f}: files to profile are local")))
            })
            .collect::<Result<_>>()?;
        for (i, path) in paths.iter().copied().enumerate() {
            let file = File::open(path).map_err(|e| OpsError::Io {
                path: path.to_owned(),
                source: e,
            })?;
            let footer = ArrowReaderMetadata::load(&file, Default::default())
                .map_err(|e| file_error(path, &e))?;
            for rg in 0..footer.metadata().num_row_groups() {
                tasks.push((i, rg));
            }
            opened.push((file, footer));
        }
        in_parallel(
            tasks.len(),
            threads,
            || self.empty(),
            |t, profile| {
                let (i, rg) = tasks[t];
                let (path, (file, footer)) = (paths[i], &opened[i]);
                let err = |e: &dyn std::fmt::Display| file_error(path, e);
                let file = file.try_clone().map_err(|e| OpsError::Io {
                    path: path.to_owned(),
                    source: e,
                })?;
                let builder =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(file, footer.clone());
                let indices = self
                    .columns
                    .iter()
                    .map(|c| {
                        builder
                            .schema()
                            .index_of(&c.column)
                            .map_err(|_| err(&format!("has no column '{}'", c.column)))
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                let reader = builder
                    .with_projection(mask)
                    .with_row_groups(vec![rg])
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| err(&e))?;
                for batch in reader {
                    let batch: RecordBatch = batch.map_err(|e| err(&e))?;
                    let columns = self
                        .columns
                        .iter()
                        .map(|c| {
                            let a = batch
                                .column_by_name(&c.column)
                                .ok_or_else(|| err(&format!("has no column '{}'", c.column)))?;
                            cast(a, &c.feature.value_type.to_arrow()).map_err(|e| {
                                err(&format!(
                                    "column '{}' is not {}: {e}",
                                    c.column, c.feature.value_type
                                ))
                            })
                        })
                        .collect::<Result<Vec<ArrayRef>>>()?;
                    profile.update(&columns);
                }
                Ok(())
            },
        )
    }
}

/// The view's features among the columns of a training set or feature log (`view__feature`
/// first, then `feature`), with their columns.
fn file_columns(view: &FeatureView, first: &Path) -> Result<Vec<Column>> {
    let file = File::open(first).map_err(|e| OpsError::Io {
        path: first.to_owned(),
        source: e,
    })?;
    let footer =
        ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| file_error(first, &e))?;
    let schema = footer.schema();
    let columns: Vec<Column> = view
        .features
        .iter()
        .filter_map(|f| {
            let full = format!("{}__{}", view.name, f.name);
            [full, f.name.clone()]
                .into_iter()
                .find(|c| schema.index_of(c).is_ok())
                .map(|column| Column {
                    feature: f.clone(),
                    column,
                })
        })
        .collect();
    if columns.is_empty() {
        return Err(OpsError::invalid(format!(
            "{} has no column of a feature of view '{}' (looked for '{}__<feature>' and '<feature>')",
            first.display(),
            view.name,
            view.name
        )));
    }
    Ok(columns)
}

fn file_error(path: &Path, e: &dyn std::fmt::Display) -> OpsError {
    OpsError::invalid(format!("{}: {e}", path.display()))
}
