//! The RocksDB store: newest-wins merges, view deletion, watermarks, ttl purge, backup/restore.

use quiver_core::Feature;
use quiver_online::{
    FeatureValue, OnlineStore, RocksDbOptions, RocksDbStore, Row, encode_row, now_micros,
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

fn get(store: &RocksDbStore, view: &str, key: &[u8]) -> Option<(i64, i64)> {
    let mut out = None;
    store
        .read("p", view, &[key], &mut |_, v| {
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
    let store = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap();
    let k = b"k1".to_vec();
    store
        .write("p", "v", &[(k.clone(), row(20, 0, 2))], true)
        .unwrap();
    store
        .write("p", "v", &[(k.clone(), row(10, 0, 1))], true)
        .unwrap();
    assert_eq!(
        get(&store, "v", &k),
        Some((20, 2)),
        "an older row never replaces a newer one"
    );
    store
        .write("p", "v", &[(k.clone(), row(20, 5, 3))], false)
        .unwrap();
    assert_eq!(
        get(&store, "v", &k),
        Some((20, 3)),
        "equal event time: the greater created time wins"
    );
    store
        .write("p", "v", &[(k.clone(), row(20, 5, 4))], true)
        .unwrap();
    assert_eq!(
        get(&store, "v", &k),
        Some((20, 4)),
        "equal versions: the newer write wins"
    );
    store.flush().unwrap();
    store.compact().unwrap();
    store
        .write("p", "v", &[(k.clone(), row(15, 9, 5))], true)
        .unwrap();
    assert_eq!(
        get(&store, "v", &k),
        Some((20, 4)),
        "still newest-wins after compaction"
    );
    assert_eq!(
        get(&store, "other", &k),
        None,
        "views are separate key ranges"
    );
}

#[test]
fn delete_view_frees_only_that_view_and_its_watermark() {
    let dir = TempDir::new().unwrap();
    let store = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap();
    let rows: Vec<_> = (0..1000u32)
        .map(|i| (i.to_be_bytes().to_vec(), row(1, 0, i64::from(i))))
        .collect();
    store.write("p", "a", &rows, true).unwrap();
    store.write("p", "ab", &rows, true).unwrap();
    store.commit_watermark("p", "a", 42).unwrap();
    assert_eq!(store.watermark("p", "a").unwrap(), Some(42));
    store.delete_view("p", "a").unwrap();
    assert_eq!(get(&store, "a", &0u32.to_be_bytes()), None);
    assert_eq!(store.watermark("p", "a").unwrap(), None);
    assert_eq!(get(&store, "ab", &999u32.to_be_bytes()), Some((1, 999)));
    assert!(store.stats().unwrap().estimated_rows <= 1000);
}

#[test]
fn compaction_purges_rows_older_than_twice_the_ttl() {
    let dir = TempDir::new().unwrap();
    let store = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap();
    let hour = 3_600_000_000;
    let now = now_micros();
    store.set_ttls("p", [("v", hour)]);
    store
        .write(
            "p",
            "v",
            &[
                (b"old".to_vec(), row(now - 3 * hour, 0, 1)),
                (b"stale".to_vec(), row(now - hour - 1, 0, 2)),
                (b"new".to_vec(), row(now, 0, 3)),
            ],
            true,
        )
        .unwrap();
    store
        .write(
            "p",
            "no_ttl",
            &[(b"old".to_vec(), row(now - 300 * hour, 0, 1))],
            true,
        )
        .unwrap();
    store.flush().unwrap();
    store.compact().unwrap();
    assert_eq!(get(&store, "v", b"old"), None, "purged");
    assert!(
        get(&store, "v", b"stale").is_some(),
        "outside max age but not yet purged"
    );
    assert!(get(&store, "v", b"new").is_some());
    assert!(
        get(&store, "no_ttl", b"old").is_some(),
        "ttl 0 keeps rows forever"
    );
}

#[test]
fn backup_and_restore_round_trip() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store");
    let backup = dir.path().join("backup");
    {
        let store = RocksDbStore::open(&path, &RocksDbOptions::default()).unwrap();
        store
            .write("p", "v", &[(b"k".to_vec(), row(1, 0, 1))], true)
            .unwrap();
        store.commit_watermark("p", "v", 7).unwrap();
        store.backup(&backup).unwrap();
        store
            .write(
                "p",
                "v",
                &[
                    (b"k".to_vec(), row(2, 0, 2)),
                    (b"k2".to_vec(), row(2, 0, 2)),
                ],
                true,
            )
            .unwrap();
        assert!(
            store.backup(&backup).is_err(),
            "an existing folder is not overwritten"
        );
    }
    RocksDbStore::restore(&backup, &path).unwrap();
    let store = RocksDbStore::open(&path, &RocksDbOptions::default()).unwrap();
    assert_eq!(get(&store, "v", b"k"), Some((1, 1)));
    assert_eq!(get(&store, "v", b"k2"), None);
    assert_eq!(store.watermark("p", "v").unwrap(), Some(7));
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
    let _first = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap();
    let err = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
}
