//! Materialization runs: which views, one run per view at a time, and a record of every run
//! beside the data.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use quiver_core::{Action, EngineKind, Feature, FeatureView, ObjectKind, now_nanos};
use quiver_online::{
    ComputedRun, MaterializeOptions, OnlineError, Progress, RunOutcome, RunRecord, RunTrigger,
    ScanFacts, ViewReport, ViewTarget, Window, materialize_view, resolve_window,
};
use quiver_spark::{SparkEngine, SparkError};

use crate::FeatureStore;
use crate::auth::Caller;
use crate::catalog::Snapshot;
use crate::error::{OpsError, Result};
use crate::lease;

/// What to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeRequest {
    /// These feature views (every online view when empty).
    pub views: Vec<String>,
    /// Which rows.
    pub window: Window,
    /// What asked for the run.
    pub trigger: RunTrigger,
    /// 1 for a first try; more for retries of a failed scheduled run.
    pub attempt: u32,
    /// Where the newest rows are computed (`offline_engine` when `None`).
    pub engine: Option<EngineKind>,
}

impl MaterializeRequest {
    /// A run asked for by a user.
    pub fn manual(views: Vec<String>, window: Window) -> Self {
        Self {
            views,
            window,
            trigger: RunTrigger::Manual,
            attempt: 1,
            engine: None,
        }
    }
}

/// One lock per view, so runs of a view never overlap (whoever starts them).
#[derive(Debug, Default)]
pub(crate) struct RunLocks(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl RunLocks {
    fn of(&self, view: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(view.to_owned()).or_default())
    }
}

impl FeatureStore {
    /// Materializes the requested views one after the other, each as one recorded run; stops
    /// at the first view that fails (earlier views keep what they wrote). A run waits for a
    /// run of the same view that is in progress, in this process or in another one sharing
    /// the store (the view's run lease).
    pub fn materialize(
        &self,
        caller: &Caller,
        request: &MaterializeRequest,
        progress: &(dyn Fn(Progress<'_>) + Sync),
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<ViewReport>> {
        let snapshot = self.snapshot();
        let views = select_views(&snapshot, &request.views)?;
        let objects: Vec<(ObjectKind, &str)> = views
            .iter()
            .map(|v| (ObjectKind::FeatureView, v.name.as_str()))
            .collect();
        self.authorize(&snapshot, caller, Action::WriteOnline, &objects)?;
        let mut reports = Vec::with_capacity(views.len());
        let result = views.iter().try_for_each(|view| {
            reports.push(self.materialize_one(&snapshot, view, request, progress, cancel)?);
            Ok::<_, OpsError>(())
        });
        // A version that became current during the run may have removed or re-keyed a view
        // this run was writing: clean up whatever it wrote there.
        if self.snapshot().version != snapshot.version {
            self.reactivate()?;
        }
        for r in &reports {
            self.audit.record(
                caller.name(),
                "materialize",
                &format!("feature_view:{}", r.view),
                "ok",
                &format!("{} rows", r.rows_written),
            );
        }
        result.map(|()| reports)
    }

    fn materialize_one(
        &self,
        snapshot: &Snapshot,
        view: &FeatureView,
        request: &MaterializeRequest,
        progress: &(dyn Fn(Progress<'_>) + Sync),
        cancel: Option<&AtomicBool>,
    ) -> Result<ViewReport> {
        let spark = self.spark(request.engine)?;
        let lock = self.runs.of(&view.name);
        let _one_run_per_view = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = self.store.as_ref();
        let lease = lease::run_lease(&snapshot.defs.project, &view.name);
        lease::wait_for_lease(store, &lease, &self.holder, lease::RUN_LEASE, cancel)?;
        // Holding the lease, no other process runs this view: runs of it still recorded as
        // running were left by one that stopped.
        let started = self
            .mark_interrupted(Some(&view.name))
            .and_then(|()| self.start_run(snapshot, view, request));
        let (target, mut run) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = store.release_lease(&lease, &self.holder);
                return Err(e);
            }
        };
        let (result, lost) = lease::while_holding(
            store,
            &lease,
            &self.holder,
            lease::RUN_LEASE,
            cancel,
            |stop| match &spark {
                Some(spark) => {
                    self.materialize_on_spark(spark, &target, request.window, stop, progress)
                }
                None => {
                    let options = MaterializeOptions {
                        threads: self.options.materialize_threads,
                        cancel: Some(stop),
                        background: self.options.materialize_in_background,
                    };
                    Ok(materialize_view(
                        store,
                        &self.sources,
                        &target,
                        request.window,
                        options,
                        progress,
                    )?)
                }
            },
        );
        let result = match result {
            Err(e) if lost && cancelled(&e) => Err(OnlineError::Unavailable {
                store: store.location(),
                message: format!(
                    "the run of feature view '{}' lost its lease to another process; its watermark did not move",
                    view.name
                ),
            }
            .into()),
            other => other,
        };
        run.finished_at = Some(now_nanos());
        match &result {
            Ok(report) => {
                run.outcome = RunOutcome::Succeeded;
                run.rows_scanned = report.rows_scanned;
                run.rows_written = report.rows_written;
                run.newest_event_ts = report.newest_event_ts;
            }
            Err(e) if cancelled(e) => run.outcome = RunOutcome::Cancelled,
            Err(e) => {
                run.outcome = RunOutcome::Failed;
                run.error = Some(e.to_string());
            }
        }
        self.metrics.materialized(
            &view.name,
            run.outcome,
            run.rows_written,
            std::time::Duration::from_millis(run.duration_ms(now_nanos())),
        );
        let recorded = store.record_run(&run);
        let report = result?;
        recorded?;
        Ok(report)
    }

    /// One run of `target` whose newest rows per key are computed on the Spark cluster and
    /// written here, with the native run's newest-wins and watermark rules.
    fn materialize_on_spark(
        &self,
        spark: &SparkEngine,
        target: &ViewTarget<'_>,
        window: Window,
        stop: &AtomicBool,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<ViewReport> {
        let store = self.store.as_ref();
        let run = ComputedRun::start(store, target, window)?;
        let (start, end) = run.window();
        let features: Vec<&Feature> = target.view.features.iter().collect();
        let scan = self
            .sources
            .scan(target.source, target.keys.clone(), &features)?;
        let tasks = scan.tasks(start, end);
        let rows_scanned = tasks.iter().map(|t| t.rows).sum();
        progress(Progress::ViewStarted {
            view: &target.view.name,
            rows: rows_scanned,
        });
        let mut newest =
            spark.newest_rows(&scan, target.view, &features, (start, end), Some(stop))?;
        for rows in &mut newest {
            run.write(store, &rows?)?;
        }
        let counts = newest.counts();
        drop(newest);
        progress(Progress::Rows(rows_scanned));
        Ok(run.finish(
            store,
            ScanFacts {
                files: scan.file_count(),
                row_groups_read: tasks.len(),
                rows_scanned,
                rows_in_window: counts.rows_in_window,
                skipped_null_key: counts.skipped_null_key,
                skipped_null_timestamp: counts.skipped_null_timestamp,
            },
        )?)
    }

    /// Resolves the run's target and window and records it as running.
    fn start_run<'a>(
        &self,
        snapshot: &'a Snapshot,
        view: &'a FeatureView,
        request: &MaterializeRequest,
    ) -> Result<(ViewTarget<'a>, RunRecord)> {
        let source = snapshot.defs.sources.get(&view.source).ok_or_else(|| {
            OpsError::FailedPrecondition(format!(
                "feature view '{}' names unknown source '{}'",
                view.name, view.source
            ))
        })?;
        let target = ViewTarget {
            view,
            source,
            keys: snapshot.defs.join_keys(view)?,
            id: snapshot.view_id(&view.name),
        };
        let store = self.store.as_ref();
        let (start, end) = resolve_window(store, &target, request.window)?;
        let run = RunRecord {
            id: self.next_run_id(),
            project: snapshot.defs.project.clone(),
            view: view.name.clone(),
            generation: target.id.generation(),
            trigger: request.trigger,
            incremental: matches!(request.window, Window::Incremental { .. }),
            started_at: now_nanos(),
            finished_at: None,
            window_start: start,
            window_end: end,
            outcome: RunOutcome::Running,
            rows_scanned: 0,
            rows_written: 0,
            newest_event_ts: None,
            error: None,
            attempt: request.attempt,
            holder: self.holder.clone(),
        };
        store.record_run(&run)?;
        Ok((target, run))
    }

    /// Recorded runs, newest first: of one view, or of every view.
    pub fn runs(&self, view: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        if let Some(view) = view {
            self.snapshot().defs.view(view)?;
        }
        Ok(self.store.runs(&self.config.project, view, limit)?)
    }
}

/// Whether a run ended because it was cancelled (or lost its lease).
fn cancelled(e: &OpsError) -> bool {
    matches!(
        e,
        OpsError::Online(OnlineError::Cancelled) | OpsError::Spark(SparkError::Cancelled)
    )
}

/// The views a request names (every online view when none), each known and online.
fn select_views<'a>(snapshot: &'a Snapshot, names: &[String]) -> Result<Vec<&'a FeatureView>> {
    if names.is_empty() {
        return Ok(snapshot.online_views().collect());
    }
    names
        .iter()
        .map(|name| {
            let view = snapshot.defs.view(name)?;
            if view.online {
                Ok(view)
            } else {
                Err(OpsError::FailedPrecondition(format!(
                    "feature view '{name}' is not online (online: false)"
                )))
            }
        })
        .collect()
}
