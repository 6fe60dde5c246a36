//! The online store contract ([`quiver_online::OnlineStore`]), checked on every backend:
//! newest wins inside the store whatever the order and concurrency of writes, one key range
//! per view generation, reads of many views in one call, retention by registry version,
//! watermarks, run records and leases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quiver_online::{
    LiveView, OnlineStore, RUNS_KEPT, RowVersion, RunOutcome, RunRecord, RunTrigger, ViewId,
    ViewKeys, ViewRows,
};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use crate::support::{On, x_decode, x_row};

/// A store of the test's backend and a project of its own.
struct Fixture {
    store: Arc<dyn OnlineStore>,
    project: String,
    _dir: TempDir,
}

impl Fixture {
    fn new(on: &On) -> Self {
        let dir = TempDir::new().unwrap();
        Self {
            store: on.store(dir.path()),
            project: on.project(),
            _dir: dir,
        }
    }

    fn id(&self, view: &str, generation: u64) -> ViewId {
        ViewId::new(&self.project, view, generation)
    }

    fn put(&self, view: &ViewId, rows: &[(Vec<u8>, Vec<u8>)]) {
        self.store.write(&[ViewRows { view, rows }], true).unwrap();
    }

    /// `(version, x)` of the row of each key.
    fn get_many(&self, view: &ViewId, keys: &[Vec<u8>]) -> Vec<Option<(RowVersion, i64)>> {
        let reads = [ViewKeys { view, keys }];
        let rows = futures::executor::block_on(self.store.read(&reads)).unwrap();
        assert_eq!(rows.len(), 1);
        rows[0].iter().map(|r| r.as_deref().map(x_decode)).collect()
    }

    fn get(&self, view: &ViewId, key: &[u8]) -> Option<(RowVersion, i64)> {
        self.get_many(view, &[key.to_vec()])[0]
    }
}

pub fn writes_are_newest_wins_in_any_order(on: &On) {
    let f = Fixture::new(on);
    let (v, k) = (f.id("v", 1), b"k1".to_vec());
    f.put(&v, &[(k.clone(), x_row((20, 0, 0), 2))]);
    f.put(&v, &[(k.clone(), x_row((10, 0, 0), 1))]);
    assert_eq!(
        f.get(&v, &k).map(|r| r.1),
        Some(2),
        "an older row never replaces a newer one"
    );
    f.put(&v, &[(k.clone(), x_row((20, 5, 0), 3))]);
    assert_eq!(
        f.get(&v, &k).map(|r| r.1),
        Some(3),
        "equal event time: the greater created time wins"
    );
    f.put(&v, &[(k.clone(), x_row((20, 5, 0), 4))]);
    assert_eq!(
        f.get(&v, &k).map(|r| r.1),
        Some(4),
        "equal versions: the later write wins"
    );
    f.put(&v, &[(k.clone(), x_row((20, 5, 1), 5))]);
    f.put(&v, &[(k.clone(), x_row((20, 5, 0), 6))]);
    assert_eq!(
        f.get(&v, &k).map(|r| r.1),
        Some(5),
        "then the greater sequence"
    );
    assert_eq!(
        f.get(&f.id("other", 1), &k),
        None,
        "views are separate key ranges"
    );
    assert_eq!(
        f.get(&f.id("v", 2), &k),
        None,
        "generations are separate key ranges"
    );
    assert_eq!(
        f.get(&ViewId::new(&format!("{}-x", f.project), "v", 1), &k),
        None,
        "projects are separate key ranges"
    );
}

/// Versions in increasing order, across signs, bytes and the extremes of each field.
fn ordered_versions() -> Vec<RowVersion> {
    vec![
        (i64::MIN + 1, i64::MIN, 0),
        (-(1 << 40), 0, 0),
        (-256, 5, 0),
        (-255, i64::MIN, 0),
        (-1, i64::MIN, u64::MAX),
        (0, i64::MIN, 0),
        (0, -1, 0),
        (0, 0, 0),
        (0, 0, 1),
        (0, 0, 255),
        (0, 0, 256),
        (0, 0, 1 << 63),
        (0, 0, u64::MAX),
        (0, 1, 0),
        (0, 256, 0),
        (255, 0, 0),
        (256, 0, 0),
        (1_704_067_200_000_000_000, 0, 0),
        (1_704_067_200_000_000_001, i64::MIN, 0),
        (i64::MAX, i64::MAX, u64::MAX),
    ]
}

pub fn the_order_is_exact_across_signs_and_bytes(on: &On) {
    let f = Fixture::new(on);
    let v = f.id("v", 1);
    let versions = ordered_versions();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for trial in 0..20u8 {
        let key = vec![trial];
        let mut order: Vec<usize> = (0..versions.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut newest = 0;
        for i in order {
            f.put(&v, &[(key.clone(), x_row(versions[i], i as i64))]);
            newest = newest.max(i);
            assert_eq!(
                f.get(&v, &key),
                Some((versions[newest], newest as i64)),
                "after writing {:?}",
                versions[i]
            );
        }
    }
}

pub fn concurrent_writers_never_put_an_older_row_back(on: &On) {
    let f = Fixture::new(on);
    let v = f.id("v", 1);
    let keys: Vec<Vec<u8>> = (0..64u32).map(|k| k.to_be_bytes().to_vec()).collect();
    let writers: Vec<BTreeMap<Vec<u8>, RowVersion>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|w| {
                let (f, v, keys) = (&f, &v, &keys);
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                    let mut newest: BTreeMap<Vec<u8>, RowVersion> = BTreeMap::new();
                    for _ in 0..50 {
                        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..32)
                            .map(|_| {
                                let key = keys[rng.random_range(0..keys.len())].clone();
                                // The payload follows from the version, so equal versions are
                                // equal rows whichever writer lands last.
                                let version =
                                    (rng.random_range(-50..50), rng.random_range(0..3), 0);
                                let e = newest.entry(key.clone()).or_insert(version);
                                *e = (*e).max(version);
                                (key, x_row(version, version.0 * 10 + version.1))
                            })
                            .collect();
                        f.put(v, &batch);
                    }
                    newest
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got = f.get_many(&v, &keys);
    for (key, got) in keys.iter().zip(got) {
        let expected = writers.iter().filter_map(|w| w.get(key)).max().copied();
        assert_eq!(
            got,
            expected.map(|e| (e, e.0 * 10 + e.1)),
            "key {key:?}: the newest of every writer's rows"
        );
    }
}

pub fn one_read_answers_many_views_in_key_order(on: &On) {
    let f = Fixture::new(on);
    let (a, b, empty) = (f.id("a", 1), f.id("b", 1), f.id("empty", 1));
    let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..500u32)
        .filter(|i| i % 3 != 0)
        .map(|i| {
            (
                i.to_be_bytes().to_vec(),
                x_row((i64::from(i), 0, 0), i64::from(i)),
            )
        })
        .collect();
    f.store
        .write(
            &[
                ViewRows {
                    view: &a,
                    rows: &rows,
                },
                ViewRows {
                    view: &b,
                    rows: &rows[..10],
                },
            ],
            true,
        )
        .unwrap();
    let keys: Vec<Vec<u8>> = (0..500u32)
        .rev()
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    let reads = [
        ViewKeys {
            view: &a,
            keys: &keys,
        },
        ViewKeys {
            view: &empty,
            keys: &keys[..3],
        },
        ViewKeys {
            view: &b,
            keys: &keys,
        },
        ViewKeys {
            view: &a,
            keys: &[],
        },
    ];
    let got = futures::executor::block_on(f.store.read(&reads)).unwrap();
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [500, 3, 500, 0]
    );
    for (i, r) in (0..500u32).rev().zip(&got[0]) {
        let want = (i % 3 != 0).then_some(i64::from(i));
        assert_eq!(r.as_deref().map(|r| x_decode(r).1), want, "view a, key {i}");
    }
    assert!(got[1].iter().all(Option::is_none));
    let in_b = got[2].iter().filter(|r| r.is_some()).count();
    assert_eq!(in_b, 10);
    assert!(
        futures::executor::block_on(f.store.read(&[]))
            .unwrap()
            .is_empty()
    );
}

pub fn retain_deletes_exactly_what_a_version_no_longer_serves(on: &On) {
    let f = Fixture::new(on);
    let rows: Vec<_> = (0..3000u32)
        .map(|i| (i.to_be_bytes().to_vec(), x_row((1, 0, 0), i64::from(i))))
        .collect();
    let other_project = ViewId::new(&format!("{}-other", f.project), "a", 1);
    let (a1, ab, a2, newer) = (f.id("a", 1), f.id("ab", 1), f.id("a", 2), f.id("c", 9));
    for v in [&a1, &ab, &a2, &newer, &other_project] {
        f.put(v, &rows);
    }
    f.store.commit_watermark(&a1, 42).unwrap();
    let gone = f.id("gone", 3);
    f.store.commit_watermark(&gone, 7).unwrap();
    assert_eq!(f.store.watermark(&a1).unwrap(), Some(42));
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
    let mut deleted = f.store.retain(&f.project, 5, &live).unwrap();
    deleted.sort_by(|x, y| x.view().cmp(y.view()));
    assert_eq!(deleted, [a1.clone(), gone.clone()]);
    assert!(
        f.get_many(&a1, &rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
            .iter()
            .all(Option::is_none),
        "every row of a deleted generation goes"
    );
    assert_eq!(f.store.watermark(&a1).unwrap(), None);
    assert_eq!(f.store.watermark(&gone).unwrap(), None);
    assert_eq!(f.get(&ab, &2999u32.to_be_bytes()).map(|r| r.1), Some(2999));
    assert_eq!(f.get(&a2, &2999u32.to_be_bytes()).map(|r| r.1), Some(2999));
    assert_eq!(
        f.get(&newer, &5u32.to_be_bytes()).map(|r| r.1),
        Some(5),
        "a generation newer than the version belongs to a version the caller has not seen"
    );
    assert_eq!(
        f.get(&other_project, &5u32.to_be_bytes()).map(|r| r.1),
        Some(5),
        "other projects are untouched"
    );
    assert!(
        f.store.retain(&f.project, 5, &live).unwrap().is_empty(),
        "idempotent"
    );
    assert_eq!(f.store.retain(&f.project, 9, &live).unwrap(), [newer]);
}

pub fn watermarks_belong_to_one_generation(on: &On) {
    let f = Fixture::new(on);
    let (g1, g2) = (f.id("v", 1), f.id("v", 2));
    assert_eq!(f.store.watermark(&g1).unwrap(), None);
    f.store.commit_watermark(&g1, -5).unwrap();
    f.store.commit_watermark(&g2, i64::MAX).unwrap();
    f.store
        .commit_watermark(&g1, 1_704_067_200_000_000_123)
        .unwrap();
    assert_eq!(
        f.store.watermark(&g1).unwrap(),
        Some(1_704_067_200_000_000_123)
    );
    assert_eq!(f.store.watermark(&g2).unwrap(), Some(i64::MAX));
    f.store.flush().unwrap();
}

fn run(project: &str, id: u64, view: &str, outcome: RunOutcome) -> RunRecord {
    RunRecord {
        id,
        project: project.into(),
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
        newest_event_ts: None,
        error: None,
        attempt: 1,
        holder: "host:1:2".into(),
    }
}

pub fn run_records_are_kept_newest_first_and_bounded(on: &On) {
    let f = Fixture::new(on);
    let p = f.project.as_str();
    f.store
        .record_run(&run(p, 1, "a", RunOutcome::Running))
        .unwrap();
    f.store
        .record_run(&run(p, 1, "a", RunOutcome::Succeeded))
        .unwrap();
    f.store
        .record_run(&run(p, 2, "b", RunOutcome::Failed))
        .unwrap();
    let all = f.store.runs(p, None, 10).unwrap();
    assert_eq!(
        all.iter().map(|r| (r.id, r.outcome)).collect::<Vec<_>>(),
        [(2, RunOutcome::Failed), (1, RunOutcome::Succeeded)],
        "an update replaces the record with the same id"
    );
    assert_eq!(f.store.runs(p, Some("a"), 10).unwrap().len(), 1);
    assert_eq!(f.store.runs(p, None, 1).unwrap().len(), 1);
    assert!(
        f.store
            .runs(&format!("{p}-none"), None, 10)
            .unwrap()
            .is_empty()
    );
    let base = 1_700_000_000_000_000_000;
    for i in 0..(RUNS_KEPT as u64 + 20) {
        f.store
            .record_run(&run(p, base + i, "c", RunOutcome::Succeeded))
            .unwrap();
    }
    let kept = f.store.runs(p, Some("c"), usize::MAX).unwrap();
    assert!(kept.len() <= RUNS_KEPT + 1, "{}", kept.len());
    assert_eq!(kept[0].id, base + RUNS_KEPT as u64 + 19, "the newest first");
    assert!(kept.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(
        kept.last().map(|r| r.id),
        Some(base + RUNS_KEPT as u64 + 20 - kept.len() as u64),
        "the oldest go"
    );
}

pub fn a_lease_is_exclusive_until_released_or_expired(on: &On) {
    let f = Fixture::new(on);
    let name = format!("{}/schedule", f.project);
    let long = Duration::from_secs(60);
    assert_eq!(f.store.lease_holder(&name).unwrap(), None);
    assert!(f.store.acquire_lease(&name, "a", long).unwrap());
    assert!(!f.store.acquire_lease(&name, "b", long).unwrap());
    assert!(
        f.store.acquire_lease(&name, "a", long).unwrap(),
        "the holder extends it"
    );
    assert_eq!(f.store.lease_holder(&name).unwrap().as_deref(), Some("a"));
    f.store.release_lease(&name, "b").unwrap();
    assert_eq!(
        f.store.lease_holder(&name).unwrap().as_deref(),
        Some("a"),
        "only the holder releases"
    );
    f.store.release_lease(&name, "a").unwrap();
    assert!(
        f.store
            .acquire_lease(&name, "b", Duration::from_millis(200))
            .unwrap()
    );
    assert!(!f.store.acquire_lease(&name, "a", long).unwrap());
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(f.store.lease_holder(&name).unwrap(), None, "expired");
    assert!(
        f.store.acquire_lease(&name, "a", long).unwrap(),
        "taken over"
    );
}

on_every_backend!(
    writes_are_newest_wins_in_any_order,
    the_order_is_exact_across_signs_and_bytes,
    concurrent_writers_never_put_an_older_row_back,
    one_read_answers_many_views_in_key_order,
    retain_deletes_exactly_what_a_version_no_longer_serves,
    watermarks_belong_to_one_generation,
    run_records_are_kept_newest_first_and_bounded,
    a_lease_is_exclusive_until_released_or_expired,
);
