//! What only the Redis store does: key expiry at twice the ttl, TLS and ACL users, clear
//! errors when Redis cannot be reached or refuses, and failover of a cluster master while
//! reads and writes go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quiver_core::{ErrorKind, HasKind, now_nanos};
use quiver_online::{LiveView, OnlineStore, Row, RowVersion, ViewId, ViewKeys, ViewRows};
use quiver_redis::{Mode, RedisOptions, RedisStore, TlsOptions};
use quiver_testkit::redis::{RedisCluster, RedisNode, shared_cluster, shared_server};
use quiver_testkit::{Certificates, StopOnDrop, wait_until};
use tempfile::TempDir;

use crate::support::{redis_store, x_row};

const SECOND: i64 = 1_000_000_000;

fn row(version: RowVersion) -> Vec<u8> {
    x_row(version, version.0)
}

fn event_of(store: &dyn OnlineStore, view: &ViewId, keys: &[Vec<u8>]) -> Vec<Option<i64>> {
    let reads = [ViewKeys { view, keys }];
    futures::executor::block_on(store.read(&reads)).unwrap()[0]
        .iter()
        .map(|r| r.as_deref().map(|r| Row::parse(r).unwrap().event_ts()))
        .collect()
}

fn expiry_follows_the_ttl(store: &RedisStore, project: &str) {
    let (v, forever) = (
        ViewId::new(project, "v", 1),
        ViewId::new(project, "forever", 1),
    );
    store
        .retain(
            project,
            1,
            &[
                LiveView {
                    id: v.clone(),
                    ttl_nanos: Some(SECOND),
                },
                LiveView {
                    id: forever.clone(),
                    ttl_nanos: None,
                },
            ],
        )
        .unwrap();
    let now = now_nanos();
    let keys: Vec<Vec<u8>> = [b"soon", b"late", b"gone"].map(|k| k.to_vec()).into();
    let rows = vec![
        (keys[0].clone(), row((now - 3 * SECOND / 2, 0, 0))),
        (keys[1].clone(), row((now + 5 * SECOND, 0, 0))),
        (keys[2].clone(), row((now - 3 * SECOND, 0, 0))),
    ];
    store
        .write(
            &[
                ViewRows {
                    view: &v,
                    rows: &rows,
                },
                ViewRows {
                    view: &forever,
                    rows: &rows,
                },
            ],
            true,
        )
        .unwrap();
    let got = event_of(store, &v, &keys);
    assert!(got[0].is_some() && got[1].is_some(), "{got:?}");
    assert_eq!(
        got[2], None,
        "a row already past twice its ttl is not stored"
    );
    wait_until("the row to expire", Duration::from_secs(5), || {
        event_of(store, &v, &keys)[0].is_none()
    });
    assert!(
        event_of(store, &v, &keys)[1].is_some(),
        "a newer row lives on"
    );
    assert!(
        event_of(store, &forever, &keys).iter().all(Option::is_some),
        "no ttl: rows are kept forever"
    );
}

#[test]
fn rows_expire_at_twice_their_ttl() {
    expiry_follows_the_ttl(
        &redis_store(vec![shared_server().address()]),
        "expiry-standalone",
    );
    expiry_follows_the_ttl(&redis_store(shared_cluster().seeds()), "expiry-cluster");
}

#[test]
fn standalone_and_cluster_are_told_apart_and_report_sizes() {
    let single = redis_store(vec![shared_server().address()]);
    let cluster = redis_store(shared_cluster().seeds());
    assert_eq!(single.mode(), Mode::Standalone);
    assert_eq!(cluster.mode(), Mode::Cluster);
    assert!(
        cluster.location().contains("(cluster)"),
        "{}",
        cluster.location()
    );
    let v = ViewId::new("sizes", "v", 1);
    cluster
        .write(
            &[ViewRows {
                view: &v,
                rows: &[(b"k".to_vec(), row((1, 0, 0)))],
            }],
            true,
        )
        .unwrap();
    let stats = cluster.stats().unwrap();
    assert!(
        stats.estimated_rows >= 1 && stats.memory_bytes > 0,
        "{stats:?}"
    );
    let err = cluster
        .backup(&TempDir::new().unwrap().path().join("b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains("backed up by Redis itself"),
        "{err}"
    );
}

#[test]
fn a_store_nobody_answers_for_is_unavailable_quickly() {
    let port = quiver_testkit::free_port();
    let started = Instant::now();
    let err = RedisStore::open(&RedisOptions {
        nodes: vec![format!("127.0.0.1:{port}")],
        timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    })
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = quiver_online::OnlineError::from(err);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn tls_and_an_acl_user() {
    let dir = TempDir::new().unwrap();
    let certs = Certificates::generate(dir.path());
    let (cert, key, ca) = (
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
        certs.ca.display().to_string(),
    );
    let node = RedisNode::start_tls(
        dir.path(),
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "quiver",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let options = RedisOptions {
        nodes: vec![node.address()],
        username: Some("quiver".into()),
        password: Some("s3cret".into()),
        tls: Some(TlsOptions {
            ca_file: Some(certs.ca.clone()),
            client: None,
        }),
        ..RedisOptions::default()
    };
    let store = RedisStore::open(&options).unwrap();
    assert!(
        store.location().starts_with("rediss://"),
        "{}",
        store.location()
    );
    let v = ViewId::new("tls", "v", 1);
    store
        .write(
            &[ViewRows {
                view: &v,
                rows: &[(b"k".to_vec(), row((7, 0, 0)))],
            }],
            true,
        )
        .unwrap();
    assert_eq!(event_of(&store, &v, &[b"k".to_vec()]), [Some(7)]);

    let wrong = RedisStore::open(&RedisOptions {
        password: Some("wrong".into()),
        ..options.clone()
    })
    .unwrap_err();
    let text = wrong.to_string();
    assert!(
        !text.contains("wrong") && !text.contains("s3cret"),
        "no secret in messages: {text}"
    );
    assert!(
        text.to_lowercase().contains("auth") || text.contains("WRONGPASS"),
        "{text}"
    );
    let plain = RedisStore::open(&RedisOptions {
        tls: None,
        timeout: Duration::from_millis(500),
        ..options.clone()
    });
    assert!(
        plain.is_err(),
        "a TLS-only server refuses plain connections"
    );
    let untrusted = RedisStore::open(&RedisOptions {
        tls: Some(TlsOptions::default()),
        ..options
    });
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown authority is refused"
    );
}

/// Reads and writes go on while a master is killed: reads fail fast with UNAVAILABLE while
/// its slots have no master and recover by themselves once the replica is promoted; no
/// older row ever replaces a newer one.
#[test]
fn a_master_failover_during_reads_and_writes() {
    let cluster = RedisCluster::start(3, 1);
    let store = Arc::new(
        RedisStore::open(&RedisOptions {
            nodes: cluster.seeds(),
            timeout: Duration::from_secs(1),
            ..RedisOptions::default()
        })
        .unwrap(),
    );
    let v = ViewId::new("failover", "v", 1);
    let keys: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let write_all = |version: RowVersion| {
        let rows: Vec<_> = keys.iter().map(|k| (k.clone(), row(version))).collect();
        store.write(
            &[ViewRows {
                view: &v,
                rows: &rows,
            }],
            true,
        )
    };
    write_all((2, 0, 0)).unwrap();
    // Replication is asynchronous: what the replicas have not got dies with their master.
    // A committed watermark means they have it.
    store.commit_watermark(&v, 2).unwrap();

    let stop = AtomicBool::new(false);
    let (reads, failures, slowest) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let reads_of = [ViewKeys {
                    view: &v,
                    keys: &keys,
                }];
                match futures::executor::block_on(store.read(&reads_of)) {
                    Ok(rows) => {
                        assert!(rows[0].iter().all(Option::is_some), "rows lost");
                        reads += 1;
                    }
                    Err(e) => failures.push(e),
                }
                slowest = slowest.max(started.elapsed());
            }
            (reads, failures, slowest)
        });
        let writer = s.spawn(|| {
            // Older rows, written over and over while the master goes: never applied.
            while !stop.load(Ordering::Relaxed) {
                let _ = write_all((1, 0, 0));
            }
        });
        // A failed wait below must still stop the threads.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(300));
        let master = cluster.masters()[0];
        let replica = cluster
            .replica_of(master)
            .expect("each master has a replica");
        master.kill();
        cluster.wait_promoted(replica);
        wait_until("reads to recover", Duration::from_secs(30), || {
            let reads_of = [ViewKeys {
                view: &v,
                keys: &keys,
            }];
            futures::executor::block_on(store.read(&reads_of)).is_ok()
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let got = reader.join().unwrap();
        master.restart();
        got
    });
    assert!(reads > 0, "reads went on");
    assert!(
        slowest < Duration::from_secs(5),
        "every read answered or failed fast: the slowest took {slowest:?}"
    );
    for e in &failures {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    assert!(
        event_of(store.as_ref(), &v, &keys)
            .iter()
            .all(|e| *e == Some(2)),
        "the newer rows stayed"
    );
    write_all((3, 0, 0)).unwrap();
    assert!(
        event_of(store.as_ref(), &v, &keys)
            .iter()
            .all(|e| *e == Some(3))
    );
    cluster.wait_healthy();
}
