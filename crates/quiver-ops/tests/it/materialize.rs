//! Materialization runs: recorded beside the data, never overlapping for one view, marked
//! interrupted after a crash; and the schedule.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::now_nanos;
use quiver_online::{FieldStatus, RunOutcome, RunTrigger, Window};
use quiver_ops::{FeatureStore, MaterializeRequest, StoreOptions};

use crate::support::{HOUR, LABELS, RATES, Repo, hour_ago, write_stats};

fn incremental() -> MaterializeRequest {
    MaterializeRequest::manual(
        Vec::new(),
        Window::Incremental {
            end: now_nanos(),
            lookback: Duration::ZERO,
        },
    )
}

#[test]
fn every_run_is_recorded_with_its_window_rows_and_outcome() {
    let repo = Repo::new(&[RATES, LABELS], &[(1, hour_ago(), 0.5, 3, 1.0)]);
    let reports = repo
        .store
        .materialize(&quiver_ops::Caller::Trusted, &incremental(), &|_| {}, None)
        .unwrap();
    assert_eq!(reports.len(), 2);
    let runs = repo.store.runs(Some("rates"), 10).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert_eq!(run.trigger, RunTrigger::Manual);
    assert_eq!((run.rows_written, run.window_start), (1, i64::MIN));
    assert!(run.finished_at.is_some());

    // A failing run is recorded and leaves the watermark.
    std::fs::write(
        repo.path().join("data/stats/part-1.parquet"),
        b"not parquet",
    )
    .unwrap();
    let err = repo
        .store
        .materialize(&quiver_ops::Caller::Trusted, &incremental(), &|_| {}, None)
        .unwrap_err();
    assert!(err.to_string().contains("part-1.parquet"), "{err}");
    let failed = &repo.store.runs(Some("labels"), 10).unwrap()[0];
    assert_eq!(failed.outcome, RunOutcome::Failed, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("part-1.parquet")
    );
    let err = repo.store.runs(Some("nope"), 10).unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[test]
fn runs_of_one_view_never_overlap() {
    let rows: Vec<_> = (0..200_000).map(|d| (d, hour_ago(), 0.5, d, 1.0)).collect();
    let repo = Repo::new(&[RATES], &rows);
    let window = Window::Range {
        start: i64::MIN,
        end: i64::MAX,
    };
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                repo.store
                    .materialize(
                        &quiver_ops::Caller::Trusted,
                        &MaterializeRequest::manual(vec!["rates".into()], window),
                        &|_| {},
                        None,
                    )
                    .unwrap();
            });
        }
    });
    let mut runs = repo.store.runs(Some("rates"), 10).unwrap();
    assert_eq!(runs.len(), 3);
    runs.sort_by_key(|r| r.started_at);
    for pair in runs.windows(2) {
        assert!(
            pair[0].finished_at.unwrap() <= pair[1].started_at,
            "overlapping runs: {pair:?}"
        );
    }
}

#[test]
fn a_run_left_running_by_a_crash_is_marked_interrupted() {
    let repo = Repo::new(&[RATES], &[(1, hour_ago(), 0.5, 3, 1.0)]);
    let mut run = quiver_online::RunRecord {
        id: 7,
        project: "p".into(),
        view: "rates".into(),
        generation: 1,
        trigger: RunTrigger::Schedule,
        incremental: true,
        started_at: now_nanos(),
        finished_at: None,
        window_start: 0,
        window_end: 1,
        outcome: RunOutcome::Running,
        rows_scanned: 0,
        rows_written: 0,
        newest_event_ts: None,
        error: None,
        attempt: 1,
        holder: "gone:1:2".into(),
    };
    repo.store.store().record_run(&run).unwrap();
    let path = repo.path().to_path_buf();
    drop(repo.store);
    let reopened = FeatureStore::open(&path, StoreOptions::default()).unwrap();
    let runs = reopened.runs(Some("rates"), 10).unwrap();
    run.outcome = RunOutcome::Interrupted;
    assert_eq!(runs[0].outcome, RunOutcome::Interrupted);
    assert!(runs[0].error.as_deref().unwrap_or("").contains("stopped"));
}

#[test]
fn scheduled_views_refresh_on_their_own_and_failures_are_retried() {
    let scheduled = RATES.replace(
        "    source: stats\n",
        "    source: stats\n    materialization: {every: 1s, lookback: 1h}\n",
    );
    let repo = Repo::new(
        &[&scheduled, LABELS],
        &[(1, hour_ago() - HOUR, 0.5, 3, 1.0)],
    );
    let store = Arc::new(repo.store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let schedule = runtime.spawn(quiver_ops::schedule::run_schedule(
        Arc::clone(&store),
        async {
            let _ = stopped.await;
        },
    ));
    let read = |driver: i64| {
        let repo_read = |s: &FeatureStore| {
            let entities = vec![(
                "driver_id".to_owned(),
                vec![quiver_ops::InputValue::Int(driver)],
            )];
            futures::executor::block_on(s.read_online(
                &quiver_ops::Caller::Trusted,
                "test",
                quiver_ops::FeatureSpec::Refs(vec!["rates:rate".into()]),
                false,
                &entities,
                |_, r| Ok(r.cell(0, 0)?.status),
            ))
            .unwrap()
        };
        repo_read(&store)
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the first scheduled run", &|| {
        read(1) == FieldStatus::Present
    });

    // New data lands: the next run picks it up without being asked.
    write_stats(
        &repo.dir.path().join("data/stats/part-1.parquet"),
        &[(2, hour_ago(), 0.9, 1, 1.0)],
    );
    wait_for("new data", &|| read(2) == FieldStatus::Present);

    // A broken file: runs fail, are recorded with their attempt, and are retried.
    std::fs::write(repo.dir.path().join("data/stats/part-2.parquet"), b"broken").unwrap();
    wait_for("a failed attempt", &|| {
        store
            .runs(Some("rates"), 5)
            .unwrap()
            .iter()
            .any(|r| r.outcome == RunOutcome::Failed && r.attempt >= 2)
    });
    std::fs::remove_file(repo.dir.path().join("data/stats/part-2.parquet")).unwrap();
    write_stats(
        &repo.dir.path().join("data/stats/part-3.parquet"),
        &[(3, hour_ago(), 0.9, 1, 1.0)],
    );
    wait_for("recovery", &|| read(3) == FieldStatus::Present);

    let _ = stop.send(());
    runtime.block_on(schedule).unwrap();
    let runs = store.runs(None, 100).unwrap();
    assert!(
        runs.iter().all(|r| r.view == "rates"),
        "labels has no schedule"
    );
    assert!(runs.iter().all(|r| r.trigger == RunTrigger::Schedule));
    assert!(runs.iter().all(|r| r.outcome != RunOutcome::Running));
}
