//! The RocksDB store: newest-wins merges, retaining view generations, watermarks, run
//! records, ttl purge, backup/restore, the lock.

use quiver_core::{Feature, now_nanos};
use quiver_online::{
    FeatureValue, LiveView, OnlineError, OnlineStore, RUNS_KEPT, RocksDbOptions, RocksDbStore, Row,
    RunOutcome, RunRecord, RunTrigger, ViewId, ViewRows, encode_row,
};
use tempfile::TempDir;

fn features() -> Vec<Feature> {
    vec![Feature {
        name: "x".into(),
        value_type: "int64".parse().unwrap(),
        description: String::new(),
    }]
}

fn row(event: i64, created: i64, x: i64) -> Vec<u8> {
    encode_row(&features(), (event, created, 0), &[FeatureValue::Int64(x)])
}

fn id(view: &str) -> ViewId {
    ViewId::new("p", view, 1)
}

fn open(dir: &std::path::Path) -> RocksDbStore {
    RocksDbStore::open(dir, &RocksDbOptions::default()).unwrap()
}

fn put(store: &RocksDbStore, view: &ViewId, rows: &[(Vec<u8>, Vec<u8>)], durable: bool) {
    store.write(&[ViewRows { view, rows }], durable).unwrap();
}

fn get(store: &RocksDbStore, view: &ViewId, key: &[u8]) -> Option<(i64, i64)> {
    let mut out = None;
    store
        .read(view, &[key], &mut |_, v| {
            out = v.map(|v| {
                let r = Row::parse(v).unwrap();
                let x = match quiver_online::row::decode_value(
                    features()[0].value_type,
                    r.feature_bytes(0).unwrap(),
                )
                .unwrap()
                {
                    FeatureValue::Int64(x) => x,
                    other => panic!("{other:?}"),
                };
                (r.event_ts(), x)
            });
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn writes_are_newest_wins_in_any_order() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (v, k) = (id("v"), b"k1".to_vec());
    put(&store, &v, &[(k.clone(), row(20, 0, 2))], true);
    put(&store, &v, &[(k.clone(), row(10, 0, 1))], true);
    assert_eq!(
        get(&store, &v, &k),
        Some((20, 2)),
        "an older row never replaces a newer one"
    );
    put(&store, &v, &[(k.clone(), row(20, 5, 3))], false);
    assert_eq!(
        get(&store, &v, &k),
        Some((20, 3)),
        "equal event time: the greater created time wins"
    );
    put(&store, &v, &[(k.clone(), row(20, 5, 4))], true);
    assert_eq!(
        get(&store, &v, &k),
        Some((20, 4)),
        "equal versions: the newer write wins"
    );
    store.flush().unwrap();
    store.compact().unwrap();
    put(&store, &v, &[(k.clone(), row(15, 9, 5))], true);
    assert_eq!(
        get(&store, &v, &k),
        Some((20, 4)),
        "still newest-wins after compaction"
    );
    assert_eq!(
        get(&store, &id("other"), &k),
        None,
        "views are separate key ranges"
    );
    assert_eq!(
        get(&store, &ViewId::new("p", "v", 2), &k),
        None,
        "generations are separate key ranges"
    );
}

#[test]
fn one_write_covers_several_views() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (a, b) = (id("a"), id("b"));
    let rows = [(b"k".to_vec(), row(1, 0, 7))];
    store
        .write(
            &[
                ViewRows {
                    view: &a,
                    rows: &rows,
                },
                ViewRows {
                    view: &b,
                    rows: &rows,
                },
            ],
            true,
        )
        .unwrap();
    assert_eq!(get(&store, &a, b"k"), Some((1, 7)));
    assert_eq!(get(&store, &b, b"k"), Some((1, 7)));
}

#[test]
fn retain_deletes_exactly_the_generations_a_version_no_longer_serves() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let rows: Vec<_> = (0..1000u32)
        .map(|i| (i.to_be_bytes().to_vec(), row(1, 0, i64::from(i))))
        .collect();
    let (a1, ab, a2, other) = (
        id("a"),
        id("ab"),
        ViewId::new("p", "a", 2),
        ViewId::new("q", "a", 1),
    );
    for v in [&a1, &ab, &a2, &other] {
        put(&store, v, &rows, true);
    }
    store.commit_watermark(&a1, 42).unwrap();
    store
        .commit_watermark(&ViewId::new("p", "gone", 3), 7)
        .unwrap();
    assert_eq!(store.watermark(&a1).unwrap(), Some(42));
    let live = [
        LiveView {
            id: ab.clone(),
            ttl_nanos: None,
        },
        LiveView {
            id: a2.clone(),
            ttl_nanos: None,
        },
    ];
    let mut deleted = store.retain("p", &live).unwrap();
    deleted.sort_by(|x, y| x.view().cmp(y.view()));
    assert_eq!(deleted, [a1.clone(), ViewId::new("p", "gone", 3)]);
    assert_eq!(get(&store, &a1, &0u32.to_be_bytes()), None);
    assert_eq!(store.watermark(&a1).unwrap(), None);
    assert_eq!(get(&store, &ab, &999u32.to_be_bytes()), Some((1, 999)));
    assert_eq!(get(&store, &a2, &999u32.to_be_bytes()), Some((1, 999)));
    assert_eq!(
        get(&store, &other, &5u32.to_be_bytes()),
        Some((1, 5)),
        "other projects are untouched"
    );
    assert!(store.retain("p", &live).unwrap().is_empty(), "idempotent");
}

#[test]
fn compaction_purges_rows_older_than_twice_the_ttl() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let hour = 3_600_000_000_000;
    let now = now_nanos();
    let (v, no_ttl) = (id("v"), id("no_ttl"));
    store
        .retain(
            "p",
            &[
                LiveView {
                    id: v.clone(),
                    ttl_nanos: Some(hour),
                },
                LiveView {
                    id: no_ttl.clone(),
                    ttl_nanos: None,
                },
            ],
        )
        .unwrap();
    put(
        &store,
        &v,
        &[
            (b"old".to_vec(), row(now - 3 * hour, 0, 1)),
            (b"stale".to_vec(), row(now - hour - 1, 0, 2)),
            (b"new".to_vec(), row(now, 0, 3)),
        ],
        true,
    );
    put(
        &store,
        &no_ttl,
        &[(b"old".to_vec(), row(now - 300 * hour, 0, 1))],
        true,
    );
    store.flush().unwrap();
    store.compact().unwrap();
    assert_eq!(get(&store, &v, b"old"), None, "purged");
    assert!(
        get(&store, &v, b"stale").is_some(),
        "outside max age but not yet purged"
    );
    assert!(get(&store, &v, b"new").is_some());
    assert!(
        get(&store, &no_ttl, b"old").is_some(),
        "ttl 0 keeps rows forever"
    );
}

fn run(id: u64, view: &str, outcome: RunOutcome) -> RunRecord {
    RunRecord {
        id,
        project: "p".into(),
        view: view.into(),
        generation: 1,
        trigger: RunTrigger::Manual,
        incremental: true,
        started_at: 10,
        finished_at: None,
        window_start: 0,
        window_end: 5,
        outcome,
        rows_scanned: 0,
        rows_written: 0,
        error: None,
        attempt: 1,
    }
}

#[test]
fn run_records_are_kept_newest_first_and_bounded() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store.record_run(&run(1, "a", RunOutcome::Running)).unwrap();
    store
        .record_run(&run(1, "a", RunOutcome::Succeeded))
        .unwrap();
    store.record_run(&run(2, "b", RunOutcome::Failed)).unwrap();
    let all = store.runs("p", None, 10).unwrap();
    assert_eq!(
        all.iter().map(|r| (r.id, r.outcome)).collect::<Vec<_>>(),
        [(2, RunOutcome::Failed), (1, RunOutcome::Succeeded)],
        "an update replaces the record with the same id"
    );
    assert_eq!(store.runs("p", Some("a"), 10).unwrap().len(), 1);
    assert!(store.runs("q", None, 10).unwrap().is_empty());
    for i in 0..(RUNS_KEPT as u64 + 20) {
        store
            .record_run(&run(100 + i, "c", RunOutcome::Succeeded))
            .unwrap();
    }
    let kept = store.runs("p", Some("c"), usize::MAX).unwrap();
    assert!(kept.len() <= RUNS_KEPT + 1, "{}", kept.len());
    assert_eq!(kept[0].id, 100 + RUNS_KEPT as u64 + 19);
}

#[test]
fn backup_and_restore_round_trip() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store");
    let backup = dir.path().join("backup");
    let v = id("v");
    {
        let store = open(&path);
        put(&store, &v, &[(b"k".to_vec(), row(1, 0, 1))], true);
        store.commit_watermark(&v, 7).unwrap();
        store.backup(&backup).unwrap();
        put(
            &store,
            &v,
            &[
                (b"k".to_vec(), row(2, 0, 2)),
                (b"k2".to_vec(), row(2, 0, 2)),
            ],
            true,
        );
        assert!(
            store.backup(&backup).is_err(),
            "an existing folder is not overwritten"
        );
        let err = RocksDbStore::restore(&backup, &path).unwrap_err();
        assert!(
            matches!(err, OnlineError::Locked { .. }),
            "a held store is never replaced: {err}"
        );
    }
    RocksDbStore::restore(&backup, &path).unwrap();
    let store = open(&path);
    assert_eq!(get(&store, &v, b"k"), Some((1, 1)));
    assert_eq!(get(&store, &v, b"k2"), None);
    assert_eq!(store.watermark(&v).unwrap(), Some(7));
    drop(store);
    let err = RocksDbStore::restore(&dir.path().join("nothing"), &path).unwrap_err();
    assert!(err.to_string().contains("nothing"), "{err}");
    assert!(
        RocksDbStore::open(&path, &RocksDbOptions::default()).is_ok(),
        "a failed restore keeps the store"
    );
}

#[test]
fn a_second_writer_process_is_refused_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let _first = open(dir.path());
    let err = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap_err();
    assert!(matches!(err, OnlineError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("held by another process"), "{err}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_writes_resume_when_space_is_back() {
    let Some(disk) = crate::support::SmallDisk::mount(24) else {
        return;
    };
    let store = open(&disk.path().join("store"));
    let v = id("v");
    put(&store, &v, &[(b"before".to_vec(), row(1, 0, 1))], true);
    let filler = disk.fill();
    let big = |i: u32| (i.to_be_bytes().to_vec(), row(2, 0, i64::from(i)));
    let err = (0..10_000u32)
        .find_map(|i| {
            store
                .write(
                    &[ViewRows {
                        view: &v,
                        rows: &[big(i)],
                    }],
                    true,
                )
                .err()
        })
        .expect("a write fails once the disk is full");
    assert!(
        matches!(err, OnlineError::StorageFull { .. }) && err.to_string().contains("no space left"),
        "{err}"
    );
    assert_eq!(
        get(&store, &v, b"before"),
        Some((1, 1)),
        "reads go on while the disk is full"
    );
    std::fs::remove_file(filler).unwrap();
    let started = std::time::Instant::now();
    loop {
        match store.write(
            &[ViewRows {
                view: &v,
                rows: &[(b"after".to_vec(), row(3, 0, 3))],
            }],
            true,
        ) {
            Ok(()) => break,
            Err(e) => assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "writes did not resume: {e}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get(&store, &v, b"after"), Some((3, 3)));
    assert_eq!(get(&store, &v, b"before"), Some((1, 1)), "nothing was lost");
}
