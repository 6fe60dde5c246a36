//! Point reads straight from the RocksDB online store (no network): single-key and 100-key
//! batches, warm and cold block cache, p50/p99 latency and reads/s.
//!
//! `cargo build --workspace --all-targets && $CARGO_TARGET_DIR/debug/online-read-bench --keys 1000000 --features 50`

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use quiver_core::{
    Definitions, Entity, Feature, FeatureRef, FeatureView, JoinKey, KeyType, KeyValue, Ttl,
};
use quiver_online::{
    FeatureValue, OnlineStore, ReadPlan, RocksDbOptions, RocksDbStore, ViewId, ViewKeys, ViewRows,
    encode_row, read_online_features,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Online read benchmark.
#[derive(Parser)]
struct Args {
    /// Distinct entity keys in the store.
    #[arg(long, default_value_t = 1_000_000)]
    keys: i64,
    /// Features per row (float64).
    #[arg(long, default_value_t = 50)]
    features: usize,
    /// Measured single-key reads per case.
    #[arg(long, default_value_t = 200_000)]
    reads: usize,
    /// Measured 100-key batches per case.
    #[arg(long, default_value_t = 5_000)]
    batches: usize,
    /// Skip the cold-cache cases (e.g. to profile the warm path alone).
    #[arg(long)]
    warm_only: bool,
}

fn definitions(n: usize) -> Definitions {
    let features: Vec<Feature> = (0..n)
        .map(|i| Feature {
            name: format!("f{i}"),
            value_type: "float64".parse().expect("type"),
            description: String::new(),
        })
        .collect();
    let mut defs = Definitions {
        project: "bench".into(),
        ..Default::default()
    };
    defs.entities.insert(
        "driver".into(),
        Entity {
            name: "driver".into(),
            join_keys: vec![JoinKey {
                name: "driver_id".into(),
                key_type: KeyType::Int64,
            }],
            description: String::new(),
            owner: String::new(),
            tags: Default::default(),
        },
    );
    defs.feature_views.insert(
        "stats".into(),
        FeatureView {
            name: "stats".into(),
            entities: vec!["driver".into()],
            source: "s".into(),
            features,
            ttl: Ttl::UNLIMITED,
            online: true,
            offline: true,
            description: String::new(),
            owner: String::new(),
            tags: Default::default(),
            materialization: None,
            freshness: None,
            monitoring: None,
        },
    );
    defs
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Case {
    name: String,
    p50_us: f64,
    p99_us: f64,
    keys_per_sec: f64,
}

/// Times `reads` calls of `batch` random keys through the full online-read path (key
/// encoding, MultiGet, decoding every feature of every row).
fn measure(
    name: &str,
    store: &RocksDbStore,
    plan: &ReadPlan,
    keys: i64,
    batch: usize,
    reads: usize,
) -> Result<Case> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut latencies = Vec::with_capacity(reads);
    let mut checksum = 0.0;
    let started = Instant::now();
    for _ in 0..reads {
        let ids: Vec<KeyValue> = (0..batch)
            .map(|_| KeyValue::Int(rng.random_range(0..keys)))
            .collect();
        let entities = vec![("driver_id".to_owned(), ids)];
        let t = Instant::now();
        // The embedded store answers in place: the future is ready when first polled.
        let result = futures::executor::block_on(read_online_features(store, plan, &entities, 0))?;
        for col in 0..plan.features().len() {
            for row in 0..batch {
                if let FeatureValue::Float64(v) = result.cell(col, row)?.value {
                    checksum += v;
                }
            }
        }
        latencies.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let total = started.elapsed().as_secs_f64();
    assert!(checksum != 0.0);
    latencies.sort_unstable();
    Ok(Case {
        name: name.to_owned(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        keys_per_sec: (reads * batch) as f64 / total,
    })
}

/// Times single-key `OnlineStore::read` calls alone (pre-encoded keys, no decoding).
fn measure_raw(name: &str, store: &RocksDbStore, keys: i64, reads: usize) -> Result<Case> {
    let join_keys = [JoinKey {
        name: "driver_id".into(),
        key_type: KeyType::Int64,
    }];
    let mut rng = StdRng::seed_from_u64(9);
    let encoded: Vec<Vec<u8>> = (0..reads)
        .map(|_| {
            quiver_core::encode_entity_key(
                &join_keys,
                [("driver_id", &KeyValue::Int(rng.random_range(0..keys)))],
            )
            .expect("key")
        })
        .collect();
    let mut latencies = Vec::with_capacity(reads);
    let mut bytes = 0;
    let started = Instant::now();
    for key in &encoded {
        let t = Instant::now();
        let id = view_id();
        let reads = [ViewKeys {
            view: &id,
            keys: std::slice::from_ref(key),
        }];
        let rows = futures::executor::block_on(store.read(&reads))?;
        bytes += rows[0][0].as_ref().map_or(0, Vec::len);
        latencies.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let total = started.elapsed().as_secs_f64();
    assert!(bytes > 0);
    latencies.sort_unstable();
    Ok(Case {
        name: name.to_owned(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        keys_per_sec: reads as f64 / total,
    })
}

/// The benchmark view's rows.
fn view_id() -> ViewId {
    ViewId::new("bench", "stats", 1)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let defs = definitions(args.features);
    let view = defs.view("stats")?.clone();
    let generations = std::collections::BTreeMap::from([("stats".to_owned(), 1)]);
    let id = view_id();
    let plan = ReadPlan::new(
        &defs,
        &generations,
        defs.resolve(&[FeatureRef::parse("stats:*")?], false)?,
    )?;
    let keys = [JoinKey {
        name: "driver_id".into(),
        key_type: KeyType::Int64,
    }];

    eprintln!(
        "loading {} keys x {} features ...",
        args.keys, args.features
    );
    {
        let store = RocksDbStore::open(dir.path(), &RocksDbOptions::default())?;
        let mut rng = StdRng::seed_from_u64(1);
        for chunk in (0..args.keys).collect::<Vec<_>>().chunks(10_000) {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = chunk
                .iter()
                .map(|&id| {
                    let values: Vec<FeatureValue<'_>> = (0..args.features)
                        .map(|_| FeatureValue::Float64(rng.random()))
                        .collect();
                    let key =
                        quiver_core::encode_entity_key(&keys, [("driver_id", &KeyValue::Int(id))])
                            .expect("key");
                    (key, encode_row(&view.features, (1, 1, 0), &values))
                })
                .collect();
            store.write(
                &[ViewRows {
                    view: &id,
                    rows: &rows,
                }],
                false,
            )?;
        }
        store.flush()?;
        store.compact()?;
    }

    let mut cases = Vec::new();
    let caches: &[(&str, usize)] = if args.warm_only {
        &[("warm", 4 << 30)]
    } else {
        &[("warm", 4 << 30), ("cold", 8 << 20)]
    };
    for &(label, cache) in caches {
        let store = RocksDbStore::open(
            dir.path(),
            &RocksDbOptions {
                block_cache_bytes: cache,
            },
        )?;
        if label == "warm" {
            // Touch every key once, so every block and row is cached.
            for driver in 0..args.keys {
                let key =
                    quiver_core::encode_entity_key(&keys, [("driver_id", &KeyValue::Int(driver))])?;
                let reads = [ViewKeys {
                    view: &id,
                    keys: std::slice::from_ref(&key),
                }];
                futures::executor::block_on(store.read(&reads))?;
            }
        }
        cases.push(measure_raw(
            &format!("1 key, {label} cache, store read only"),
            &store,
            args.keys,
            args.reads,
        )?);
        cases.push(measure(
            &format!("1 key, {label} cache"),
            &store,
            &plan,
            args.keys,
            1,
            args.reads,
        )?);
        cases.push(measure(
            &format!("100 keys, {label} cache"),
            &store,
            &plan,
            args.keys,
            100,
            args.batches,
        )?);
        let stats = store.stats()?;
        eprintln!(
            "{label}: {} rows, {:.0} MB of SST",
            stats.estimated_rows,
            stats.disk_bytes as f64 / 1e6
        );
    }

    println!(
        "\nOnline reads, {} keys x {} float64 features (full read path, every value decoded)",
        args.keys, args.features
    );
    println!("| case | p50 µs | p99 µs | keys/s |");
    println!("|---|---:|---:|---:|");
    for c in &cases {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} |",
            c.name, c.p50_us, c.p99_us, c.keys_per_sec
        );
    }
    Ok(())
}
