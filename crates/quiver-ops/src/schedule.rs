//! The materialization schedule of `quiver serve`: every online view with a schedule (its
//! own `materialization:`, else the repository's default) is materialized incrementally up
//! to now every `every`, one run per view at a time, with failures retried after a backoff.
//! Serving never waits for it: runs and store calls execute on blocking threads.
//!
//! Of several servers sharing a store, one runs the schedule: the holder of the schedule
//! lease, which it renews while it lives; when it dies the lease expires and another server
//! takes it over. Runs due are worked out from the run records in the store, so the new
//! holder picks up where the old one left off.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver_core::{DataSelection, FeatureView, Schedule, TimeBound, format_nanos, now_nanos};
use quiver_online::{RunOutcome, RunTrigger, ViewReport, Window};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{OpsError, Result};
use crate::{Caller, FeatureStore, MaterializeRequest, lease};

/// How often the scheduler looks at its views.
const TICK: Duration = Duration::from_millis(200);
/// The longest wait before retrying a failed run.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl FeatureStore {
    /// The schedule `view` runs on: its own, else the repository's default; `None` when the
    /// view is not scheduled.
    pub fn schedule_of(&self, view: &FeatureView) -> Option<Schedule> {
        view.materialization
            .or(self.config.materialization)
            .filter(|s| s.is_on() && view.online)
    }
}

impl FeatureStore {
    /// Scores a scheduled run's window against its view's `monitoring.reference`, when it
    /// declares one, into the drift metrics; a failure is logged (the run itself succeeded).
    fn score_drift(&self, run: &ViewReport) {
        let snapshot = self.snapshot();
        let Ok(view) = snapshot.defs.view(&run.view) else {
            return;
        };
        if view
            .monitoring
            .as_ref()
            .is_none_or(|m| m.reference.is_none())
            || run.end <= run.start
        {
            return;
        }
        let window = DataSelection::Window {
            start: TimeBound::At(run.start),
            end: TimeBound::At(run.end),
            text: format!("{}..{}", format_nanos(run.start), format_nanos(run.end)),
        };
        let threads = self.options.materialize_threads;
        match crate::profile::drift(
            &snapshot.defs,
            &self.sources,
            &run.view,
            None,
            &window,
            now_nanos(),
            threads,
        ) {
            Ok((report, _)) => {
                if report.drifted() {
                    tracing::warn!(feature_view = %run.view, window = %window, "features drifted: {}",
                        report.features.iter().filter(|f| f.verdict == quiver_stats::Verdict::Drifted)
                            .map(|f| f.feature.as_str()).collect::<Vec<_>>().join(", "));
                }
                self.metrics.drift(&report);
            }
            Err(e) => tracing::warn!(feature_view = %run.view, "drift scoring failed: {e}"),
        }
    }
}

/// A run in progress.
struct Running {
    handle: JoinHandle<Result<Vec<ViewReport>>>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

/// One scheduled view.
struct Scheduled {
    schedule: Schedule,
    generation: u64,
    next: Instant,
    /// Failed attempts in a row.
    failures: u32,
    running: Option<Running>,
}

/// The wait before the next try after `failures` failures in a row.
fn backoff(failures: u32, every: Duration) -> Duration {
    let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
    exp.min(MAX_BACKOFF).min(every)
}

/// Whether this process holds the schedule lease, and since when it was last renewed.
#[derive(Debug, Default)]
struct Leadership {
    renewed: Option<std::time::Instant>,
}

impl Leadership {
    /// Takes or renews the lease when due; whether this process holds it now. A holder that
    /// cannot renew stops scheduling before its lease can have expired.
    fn refresh(&mut self, store: &FeatureStore) -> bool {
        let due = self
            .renewed
            .is_none_or(|at| at.elapsed() >= lease::SCHEDULE_LEASE / 4);
        if due {
            let name = lease::schedule_lease(&store.config().project);
            match store
                .store()
                .acquire_lease(&name, store.holder(), lease::SCHEDULE_LEASE)
            {
                Ok(true) => self.renewed = Some(std::time::Instant::now()),
                Ok(false) => self.renewed = None,
                Err(_) => {}
            }
        }
        self.renewed
            .is_some_and(|at| at.elapsed() < lease::SCHEDULE_LEASE / 2)
    }
}

/// Runs the schedule of `store`'s views until `stop` completes, then cancels the runs in
/// progress and waits for them (a cancelled run leaves its watermark where it was).
pub async fn run_schedule(store: Arc<FeatureStore>, stop: impl Future<Output = ()>) {
    let mut views: HashMap<String, Scheduled> = HashMap::new();
    let mut leadership = Leadership::default();
    let mut leading = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(TICK) => {}
        }
        for (name, view) in &mut views {
            if let Some(running) = view.running.take_if(|r| r.handle.is_finished()) {
                finish(name, view, running).await;
            }
        }
        // Store calls block: they run on a blocking thread, with the schedule's state.
        let s = Arc::clone(&store);
        let planned = tokio::task::spawn_blocking(move || {
            let now_leading = leadership.refresh(&s);
            if now_leading {
                if !leading {
                    // Due times come from the run records another holder may have added.
                    views.retain(|_, v| v.running.is_some());
                }
                follow_snapshot(&s, &mut views);
            }
            (views, leadership, now_leading)
        })
        .await;
        // Only a panic in the planning gets here; runs in progress go on by themselves.
        let Ok(planned) = planned else { return };
        (views, leadership, leading) = planned;
        if !leading {
            continue;
        }
        let now = Instant::now();
        for (name, view) in &mut views {
            if view.running.is_none() && now >= view.next {
                view.running = Some(start(&store, name, view));
            }
        }
    }
    for view in views.values() {
        if let Some(running) = &view.running {
            running.cancel.store(true, Ordering::Relaxed);
        }
    }
    for (name, view) in &mut views {
        if let Some(running) = view.running.take() {
            finish(name, view, running).await;
        }
    }
    if leading {
        let name = lease::schedule_lease(&store.config().project);
        let _ =
            tokio::task::spawn_blocking(move || store.store().release_lease(&name, store.holder()))
                .await;
    }
}

/// Adds the views the current snapshot schedules (due now, or one interval after their last
/// successful run of the same generation) and drops the others.
fn follow_snapshot(store: &FeatureStore, views: &mut HashMap<String, Scheduled>) {
    let snapshot = store.snapshot();
    let mut wanted = HashMap::new();
    for view in snapshot.online_views() {
        if let Some(schedule) = store.schedule_of(view) {
            wanted.insert(
                view.name.clone(),
                (schedule, snapshot.view_id(&view.name).generation()),
            );
        }
    }
    views.retain(|name, v| {
        wanted
            .get(name)
            .is_some_and(|(_, generation)| *generation == v.generation)
            || v.running.is_some()
    });
    for (name, (schedule, generation)) in wanted {
        if let Some(v) = views.get_mut(&name)
            && v.generation == generation
        {
            v.schedule = schedule;
            continue;
        }
        let next = Instant::now() + until_due(store, &name, generation, schedule.every.0);
        views.insert(
            name,
            Scheduled {
                schedule,
                generation,
                next,
                failures: 0,
                running: None,
            },
        );
    }
}

/// How long until `view` is due: `every` after its last successful run, or now.
fn until_due(store: &FeatureStore, view: &str, generation: u64, every: Duration) -> Duration {
    let last = store
        .store()
        .runs(&store.config().project, Some(view), 50)
        .ok()
        .and_then(|runs| {
            runs.into_iter().find(|r| {
                r.outcome == RunOutcome::Succeeded && r.generation == generation && r.incremental
            })
        })
        .and_then(|r| r.finished_at);
    let Some(finished) = last else {
        return Duration::ZERO;
    };
    let age =
        Duration::from_nanos(u64::try_from(now_nanos().saturating_sub(finished)).unwrap_or(0));
    every.saturating_sub(age)
}

fn start(store: &Arc<FeatureStore>, name: &str, view: &Scheduled) -> Running {
    let cancel = Arc::new(AtomicBool::new(false));
    let request = MaterializeRequest {
        views: vec![name.to_owned()],
        window: Window::Incremental {
            end: now_nanos(),
            lookback: view.schedule.lookback.0,
        },
        trigger: RunTrigger::Schedule,
        attempt: view.failures + 1,
        engine: None,
    };
    let (store, flag) = (Arc::clone(store), Arc::clone(&cancel));
    let handle = tokio::task::spawn_blocking(move || {
        let reports = store.materialize(&Caller::Trusted, &request, &|_| {}, Some(&flag))?;
        for report in &reports {
            store.score_drift(report);
        }
        Ok(reports)
    });
    Running {
        handle,
        cancel,
        started: Instant::now(),
    }
}

/// Takes the outcome of a finished run: the next run is due one interval after this one
/// started, or after a backoff when it failed.
async fn finish(name: &str, view: &mut Scheduled, running: Running) {
    let result = running
        .handle
        .await
        .map_err(|e| OpsError::Internal(e.to_string()))
        .and_then(|r| r);
    let every = view.schedule.every.0;
    match result {
        Ok(_) => {
            view.failures = 0;
            view.next = (running.started + every).max(Instant::now());
        }
        Err(e) => {
            view.failures += 1;
            let wait = backoff(view.failures, every);
            view.next = Instant::now() + wait;
            if !running.cancel.load(Ordering::Relaxed) {
                tracing::warn!(
                    feature_view = %name,
                    attempt = view.failures,
                    "scheduled materialization failed; retrying in {}: {e}",
                    quiver_core::format_duration(wait)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval_and_a_cap() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, hour), Duration::from_secs(1));
        assert_eq!(backoff(3, hour), Duration::from_secs(4));
        assert_eq!(backoff(30, hour), MAX_BACKOFF);
        assert_eq!(
            backoff(30, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
