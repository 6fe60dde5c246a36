//! What only the embedded RocksDB store does: ttl purge by compaction, backup and restore,
//! one process at a time, a full disk. The contract every backend keeps (newest wins,
//! generations, watermarks, run records, leases) is one suite run on each backend
//! (`contract`, `reads`, `materialize`).

use quiver_core::now_nanos;
use quiver_online::{
    LiveView, OnlineError, OnlineStore, RocksDbOptions, RocksDbStore, ViewId, ViewKeys, ViewRows,
};
use tempfile::TempDir;

use crate::support::{x_decode, x_row};

fn row(event: i64, created: i64, x: i64) -> Vec<u8> {
    x_row((event, created, 0), x)
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
    let keys = [key.to_vec()];
    let reads = [ViewKeys { view, keys: &keys }];
    let rows = futures::executor::block_on(store.read(&reads)).unwrap();
    rows[0][0].as_deref().map(|v| {
        let ((event, ..), x) = x_decode(v);
        (event, x)
    })
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
            1,
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
    put(&store, &v, &[(b"new".to_vec(), row(now - 1, 0, 4))], true);
    store.compact().unwrap();
    assert_eq!(
        get(&store, &v, b"new").map(|(_, x)| x),
        Some(3),
        "newest-wins holds across compactions (merge operands folded, then filtered)"
    );
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
    let Some(disk) = quiver_testkit::SmallDisk::mount(24) else {
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
