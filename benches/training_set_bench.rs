//! Training-set (point-in-time join) benchmark: Quiver vs DuckDB's `ASOF LEFT JOIN` on the same
//! Parquet files, in one run, checking that both produce the same rows.
//!
//! `cargo build --workspace --all-targets && $CARGO_TARGET_DIR/debug/training-set-bench --entity-rows 1000000 --view-rows 10000000`
//!
//! Three views: `driver_stats` (int64 key, 10 features), `customer_profile` (string key, 5
//! features) and `driver_customer` (composite int64 + string key, 5 features), each with
//! `--view-rows` rows over 30 days; an entity table of `--entity-rows` rows. Every engine runs
//! in its own process, so peak memory (VmHWM / ru_maxrss) is its own. DuckDB comes from PyPI
//! into a venv (benches/python/venv.sh). Data is cached in `--data` per scale.
//!
//! With `--s3`, the same sources are also uploaded to a SeaweedFS S3 server started on
//! loopback, and Quiver reads them by URL (the entity table stays local) next to DuckDB
//! reading the same objects through its httpfs extension (`venv.sh httpfs`):
//! `$CARGO_TARGET_DIR/debug/training-set-bench --entity-rows 1000000 --s3`.
//!
//! With `--spark`, a Spark cluster is started on loopback (a standalone master, two workers of
//! one core each and a Spark Connect server, from the examples' venv, as the tests start it),
//! and Quiver native, Quiver on that cluster and Feast 0.67's Spark offline store on the same
//! cluster (`python/feast_spark_training_set.py`, a Spark Connect session) build the same
//! training sets (after one untimed warm-up run on the fresh cluster):
//! `$CARGO_TARGET_DIR/debug/training-set-bench --spark`.
//!
//! With `--flight`, `quiver serve` (the binary beside this one: build both in release to
//! measure the deployed server) serves each training set over Arrow Flight to a pyarrow
//! client, next to a pyarrow Flight server streaming the same table from memory to the same
//! client, the physical reference (`python/flight_throughput.py`):
//! `$CARGO_TARGET_DIR/debug/training-set-bench --flight --entity-rows 1000000 --view-rows
//! 2000000` (the dev build, as measured in benches/README).

use quiver_benches::{feature_column, feature_definitions, feature_fields};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchReader, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver_offline::{JoinOptions, PointInTimeJoin};
use quiver_registry::{RepoConfig, load_definitions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Training-set benchmark.
#[derive(Parser)]
struct Args {
    /// Entity-table sizes to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    entity_rows: Vec<usize>,
    /// Rows per view.
    #[arg(long, default_value_t = 10_000_000)]
    view_rows: usize,
    /// Distinct drivers (customers: 5×, pairs drawn from both).
    #[arg(long, default_value_t = 100_000)]
    drivers: i64,
    /// Where generated data is cached.
    #[arg(long, default_value = "/var/tmp/quiver-training-bench")]
    data: PathBuf,
    /// Skip DuckDB.
    #[arg(long)]
    no_duckdb: bool,
    /// Also run with the sources on a loopback S3 server (SeaweedFS), Quiver and DuckDB.
    #[arg(long)]
    s3: bool,
    /// Run Quiver native, Quiver on a loopback Spark cluster and Feast's Spark offline store.
    #[arg(long)]
    spark: bool,
    /// With --spark: skip Feast.
    #[arg(long)]
    no_feast: bool,
    /// Measure the Arrow Flight stream of each training set from `quiver serve` to a pyarrow
    /// client, next to a pyarrow Flight server streaming the same table from memory.
    #[arg(long)]
    flight: bool,
    /// With --flight: streams per server (the medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Internal: run Quiver's join on DATA, writing OUT (used in a child process).
    #[arg(long, hide = true, num_args = 2, value_names = ["DATA", "OUT"])]
    run_quiver: Vec<PathBuf>,
}

/// 2024-01-01T00:00:00Z in µs.
const T0: i64 = 1_704_067_200_000_000;
const DAY: i64 = 86_400_000_000;
const SPAN: i64 = 30 * DAY;

const DEFINITIONS: &str = r"
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
  - name: customer
    join_keys: [{name: customer_id, type: string}]
sources:
  - {name: driver_stats, path: driver_stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: customer_profile, path: customer_profile.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: driver_customer, path: driver_customer.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
";

fn definitions() -> String {
    let mut d = DEFINITIONS.to_owned();
    for (view, entities, prefix, n) in VIEWS {
        d.push_str(&format!(
            "  - name: {view}\n    entities: [{}]\n    source: {view}\n    features:\n",
            entities.join(", ")
        ));
        d.push_str(&feature_definitions(&format!("{prefix}_f"), *n));
    }
    d
}

const VIEWS: &[(&str, &[&str], &str, usize)] = &[
    ("driver_stats", &["driver"], "ds", 10),
    ("customer_profile", &["customer"], "cp", 5),
    ("driver_customer", &["driver", "customer"], "dc", 5),
];

fn customer(rng: &mut StdRng, drivers: i64) -> String {
    format!("C{:07}", rng.random_range(0..drivers * 5))
}

/// Writes one view's source: keys, event and created times (unique per key and time with high
/// probability, so the tie rule is exercised but never ambiguous), features.
fn write_view(
    path: &Path,
    keys: &[&str],
    prefix: &str,
    features: usize,
    rows: usize,
    drivers: i64,
    seed: u64,
) -> Result<()> {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = Vec::new();
    if keys.contains(&"driver") {
        fields.push(Field::new("driver_id", DataType::Int64, false));
    }
    if keys.contains(&"customer") {
        fields.push(Field::new("customer_id", DataType::Utf8, false));
    }
    fields.push(Field::new("event_timestamp", utc.clone(), false));
    fields.push(Field::new("created", utc, false));
    fields.extend(feature_fields(&format!("{prefix}_f"), features));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema.clone(), Some(props))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut left = rows;
    // Rows arrive roughly in time order, as logs do (row groups then cover time slices).
    let mut written = 0usize;
    while left > 0 {
        let n = left.min(128 * 1024);
        left -= n;
        let mut columns: Vec<ArrayRef> = Vec::new();
        if keys.contains(&"driver") {
            columns.push(Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(0..drivers)),
            )));
        }
        if keys.contains(&"customer") {
            columns.push(Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| customer(&mut rng, drivers)),
            )));
        }
        let events: Vec<i64> = (0..n)
            .map(|i| {
                let base = SPAN / rows as i64 * (written + i) as i64;
                // Whole seconds, so equal event times happen and ties are resolved.
                (T0 + base + rng.random_range(0..DAY / 4)) / 1_000_000 * 1_000_000
            })
            .collect();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(events.clone()).with_timezone("UTC"),
        ));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                events
                    .iter()
                    .map(|e| e + rng.random_range(0..3_600_000_000)),
            )
            .with_timezone("UTC"),
        ));
        columns.extend((0..features).map(|i| feature_column(i, n, 0.98, &mut rng)));
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        written += n;
    }
    writer.close()?;
    Ok(())
}

fn write_entities(path: &Path, rows: usize, drivers: i64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(rows as u64);
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|_| rng.random_range(0..drivers)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|_| customer(&mut rng, drivers)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..rows).map(|_| T0 + rng.random_range(0..SPAN + DAY)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        ],
    )?;
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// The data folder of one scale, generated on first use.
fn dataset(args: &Args, entity_rows: usize) -> Result<PathBuf> {
    let views = args
        .data
        .join(format!("views-{}-{}", args.view_rows, args.drivers));
    std::fs::create_dir_all(&views)?;
    for (i, (view, entities, prefix, n)) in VIEWS.iter().enumerate() {
        let path = views.join(format!("{view}.parquet"));
        if !path.exists() {
            eprintln!("generating {} rows of {view}...", args.view_rows);
            let tmp = path.with_extension("tmp");
            write_view(
                &tmp,
                entities,
                prefix,
                *n,
                args.view_rows,
                args.drivers,
                i as u64,
            )?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    let dir = args.data.join(format!(
        "set-{}-{}-{}",
        args.view_rows, args.drivers, entity_rows
    ));
    std::fs::create_dir_all(&dir)?;
    // Hard links: a source may not leave the data root, through a symlink either.
    for (view, ..) in VIEWS {
        let link = dir.join(format!("{view}.parquet"));
        if !link.exists() {
            std::fs::hard_link(views.join(format!("{view}.parquet")), &link)?;
        }
    }
    let entities = dir.join("entities.parquet");
    if !entities.exists() {
        write_entities(&entities, entity_rows, args.drivers)?;
    }
    std::fs::write(dir.join("quiver.yaml"), "project: bench\n")?;
    std::fs::write(dir.join("definitions.yaml"), definitions())?;
    Ok(dir)
}

fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The Spark Connect endpoint the child process joins on (the native engine when unset).
const SPARK_ENV: &str = "QUIVER_BENCH_SPARK";

/// The child process: Parquet entity table in, the whole training set as Arrow out (on the
/// Spark cluster of `$QUIVER_BENCH_SPARK` when set).
fn run_quiver(data: &Path, out: &Path) -> Result<()> {
    let config = RepoConfig::load(data)?;
    let sources = config.sources(data);
    let defs = load_definitions(data, &config, &sources).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let refs: Vec<String> = VIEWS.iter().map(|(v, ..)| format!("{v}:*")).collect();
    let refs = refs
        .iter()
        .map(|r| r.parse())
        .collect::<Result<Vec<_>, _>>()?;
    let features = defs.resolve(&refs, false)?;
    let start = Instant::now();
    let entities = read_parquet(&data.join("entities.parquet"))?;
    let join = PointInTimeJoin::new(&defs, &sources, features, JoinOptions::default())?;
    let collect = |set: quiver_offline::TrainingSet| {
        let schema = set.schema();
        set.collect::<quiver_offline::Result<Vec<_>>>()
            .map(|batches| (schema, batches))
    };
    let (seconds, second, (schema, batches)) = match std::env::var(SPARK_ENV) {
        Ok(connect) => {
            let engine = quiver_spark::SparkEngine::new(quiver_core::SparkSettings {
                connect,
                conf: Default::default(),
                // The cluster runs on this machine: it reads the staged entity table in place.
                staging: Some(data.join("spark-staging")),
            })?;
            collect(engine.training_set(&join, entities.clone(), None)?)?;
            let seconds = start.elapsed().as_secs_f64();
            // A second request on the same engine, as a server's later requests run: on the
            // engine's session, whose query code the cluster has compiled. Its rows are the
            // ones written and compared.
            let again = Instant::now();
            let set = collect(engine.training_set(&join, entities, None)?)?;
            (seconds, Some(again.elapsed().as_secs_f64()), set)
        }
        Err(_) => {
            let set = collect(join.run(entities, &|_| {})?)?;
            (start.elapsed().as_secs_f64(), None, set)
        }
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let peak = peak_rss_mb();
    let mut writer = ArrowWriter::try_new(File::create(out)?, schema, None)?;
    for b in &batches {
        writer.write(b)?;
    }
    writer.close()?;
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "second_seconds": second, "rows": rows, "peak_rss_mb": peak})
    );
    Ok(())
}

#[derive(Debug)]
struct Measured {
    seconds: f64,
    /// A second request in the same process (Spark runs), when measured.
    second_seconds: Option<f64>,
    rows: u64,
    peak_rss_mb: f64,
}

fn measured(out: &std::process::Output, what: &str) -> Result<Measured> {
    if !out.status.success() {
        bail!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("no output")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(Measured {
        seconds: v["seconds"].as_f64().context("seconds")?,
        second_seconds: v["second_seconds"].as_f64(),
        rows: v["rows"].as_u64().context("rows")?,
        peak_rss_mb: v["peak_rss_mb"].as_f64().context("peak")?,
    })
}

/// Both results sorted by label, compared column by column (features by name).
fn compare(quiver: &Path, duckdb: &Path) -> Result<()> {
    let sorted = |b: RecordBatch| -> Result<RecordBatch> {
        let label = b.column_by_name("label").context("label column")?;
        let idx = sort_to_indices(label, Some(SortOptions::default()), None)?;
        Ok(take_record_batch(&b, &idx)?)
    };
    let q = sorted(read_parquet(quiver)?)?;
    let d = sorted(read_parquet(duckdb)?)?;
    if q.num_rows() != d.num_rows() {
        bail!(
            "row counts differ: quiver {} duckdb {}",
            q.num_rows(),
            d.num_rows()
        );
    }
    for (view, _, prefix, n) in VIEWS {
        for i in 0..*n {
            let name = format!("{prefix}_f{i}");
            let a = q.column_by_name(&name).context("quiver column")?;
            let b = d.column_by_name(&name).context("duckdb column")?;
            let b = arrow::compute::cast(b, a.data_type())?;
            if a.to_data() != b.to_data() {
                let diff = (0..a.len())
                    .find(|&r| {
                        arrow::array::make_comparator(
                            a.as_ref(),
                            b.as_ref(),
                            SortOptions::default(),
                        )
                        .map(|cmp| cmp(r, r).is_ne())
                        .unwrap_or(true)
                    })
                    .unwrap_or(0);
                bail!("{view}:{name} differs, first at label {diff}");
            }
        }
    }
    Ok(())
}

/// The benchmark's Python venv (`venv.sh [NAME]`).
fn venv(name: Option<&str>) -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/venv.sh");
    let out = Command::new(&script).args(name).output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Quiver on local disk, Quiver over S3 and DuckDB (httpfs) over the same S3 objects.
fn run_s3(args: &Args) -> Result<()> {
    let server = quiver_testkit::s3::S3Server::start();
    let httpfs = venv(Some("httpfs"))?;
    let me = std::env::current_exe()?;
    let quiver = |data: &Path, out: &Path| -> Result<Measured> {
        measured(
            &Command::new(&me)
                .arg("--run-quiver")
                .arg(data)
                .arg(out)
                .envs(server.env())
                .output()?,
            "quiver",
        )
    };
    println!(
        "| entity rows | view rows | Quiver local s | Quiver S3 s | S3/local | DuckDB S3 s | DuckDB S3/Quiver S3 | Quiver S3 peak MB | same rows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut uploaded = None;
    for &rows in &args.entity_rows {
        let data = dataset(args, rows)?;
        let (remote, prefix) = s3_dataset(&server, &data, &mut uploaded)?;
        let local_out = data.join("quiver-result.parquet");
        let s3_out = remote.join("quiver-result.parquet");
        let local = quiver(&data, &local_out)?;
        let s3 = quiver(&remote, &s3_out)?;
        let d_out = remote.join("duckdb-result.parquet");
        let d = measured(
            &Command::new(httpfs.join("bin/python"))
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/duckdb_training_set.py"))
                .arg(&data)
                .arg(&d_out)
                .arg(server.endpoint().trim_start_matches("http://"))
                .arg(&prefix)
                .envs(server.env())
                .output()?,
            "duckdb (httpfs)",
        )?;
        let same = match compare(&s3_out, &local_out).and_then(|()| compare(&s3_out, &d_out)) {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO: {e}"),
        };
        println!(
            "| {rows} | {} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2}× | {:.0} | {same} |",
            args.view_rows,
            local.seconds,
            s3.seconds,
            s3.seconds / local.seconds,
            d.seconds,
            d.seconds / s3.seconds,
            s3.peak_rss_mb,
        );
    }
    Ok(())
}

/// The sources of `data` uploaded to `server` and a repository reading them by URL (the same
/// definitions, the entity table still local); returns the repository and the prefix.
fn s3_dataset(
    server: &quiver_testkit::s3::S3Server,
    data: &Path,
    uploaded: &mut Option<String>,
) -> Result<(PathBuf, String)> {
    let storage = server.storage();
    let prefix = match uploaded {
        Some(prefix) => prefix.clone(),
        None => {
            let views = tempfile::tempdir()?;
            for (view, ..) in VIEWS {
                let name = format!("{view}.parquet");
                std::os::unix::fs::symlink(
                    data.join(&name).canonicalize()?,
                    views.path().join(&name),
                )?;
            }
            eprintln!("uploading the sources to {}...", server.endpoint());
            let prefix = server.upload(&storage, views.path(), "training-bench");
            uploaded.replace(prefix.clone());
            prefix
        }
    };
    let dir = data.with_file_name(format!(
        "{}-s3",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("set")
    ));
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("entities.parquet");
    if !link.exists() {
        std::fs::hard_link(data.join("entities.parquet"), &link)?;
    }
    std::fs::write(
        dir.join("quiver.yaml"),
        format!(
            "project: bench\nobject_storage:\n  s3: {{endpoint: {}, region: us-east-1}}\n",
            server.endpoint()
        ),
    )?;
    let mut definitions = definitions();
    for (view, ..) in VIEWS {
        definitions = definitions.replace(
            &format!("path: {view}.parquet"),
            &format!("path: {prefix}/{view}.parquet"),
        );
    }
    std::fs::write(dir.join("definitions.yaml"), definitions)?;
    Ok((dir, prefix))
}

/// Quiver native, Quiver on a loopback Spark cluster and Feast's Spark offline store on it.
fn run_spark(args: &Args) -> Result<()> {
    eprintln!("starting a Spark cluster...");
    let cluster = quiver_testkit::spark::SparkCluster::start();
    let python = quiver_testkit::s3::venv().join("bin/python");
    let me = std::env::current_exe()?;
    let quiver = |data: &Path, out: &Path, spark: bool| -> Result<Measured> {
        let mut command = Command::new(&me);
        command.arg("--run-quiver").arg(data).arg(out);
        if spark {
            command.env(SPARK_ENV, cluster.url());
        }
        measured(&command.output()?, "quiver")
    };
    println!(
        "| entity rows | view rows | Quiver native s | Quiver on Spark s | Feast on Spark s | Feast / Quiver on Spark | second request: Quiver on Spark s | second request: Feast s | second requests: Feast / Quiver | Quiver on Spark / native | Quiver on Spark rows/s | Feast rows/s | Spark = native | Feast = native |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, &rows) in args.entity_rows.iter().enumerate() {
        let data = dataset(args, rows)?;
        let native_out = data.join("quiver-result.parquet");
        let spark_out = data.join("quiver-spark-result.parquet");
        if i == 0 {
            // A fresh cluster's first queries pay for its warm-up (JIT, class loading); Feast's
            // run after Quiver's would not.
            quiver(&data, &spark_out, true)?;
        }
        let native = quiver(&data, &native_out, false)?;
        let on_spark = quiver(&data, &spark_out, true)?;
        let same = |a: &Path| match compare(a, &native_out) {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO: {e}"),
        };
        let feast = if args.no_feast {
            None
        } else {
            let feast_out = data.join("feast-spark-result.parquet");
            let f = measured(
                &Command::new(&python)
                    .arg(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("python/feast_spark_training_set.py"),
                    )
                    .arg(&data)
                    .arg(&feast_out)
                    .arg(cluster.url())
                    .output()?,
                "feast (spark)",
            )?;
            Some((f, same(&feast_out)))
        };
        let feast_cell =
            |f: &dyn Fn(&Measured) -> String| feast.as_ref().map_or("-".to_owned(), |(m, _)| f(m));
        let second = |m: &Measured| {
            m.second_seconds
                .map_or("-".to_owned(), |s| format!("{s:.2}"))
        };
        println!(
            "| {rows} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.2}× | {:.0} | {} | {} | {} |",
            args.view_rows,
            native.seconds,
            on_spark.seconds,
            feast_cell(&|m| format!("{:.2}", m.seconds)),
            feast_cell(&|m| format!("{:.2}×", m.seconds / on_spark.seconds)),
            second(&on_spark),
            feast_cell(&second),
            feast_cell(&|m| match (m.second_seconds, on_spark.second_seconds) {
                (Some(f), Some(q)) => format!("{:.2}×", f / q),
                _ => "-".to_owned(),
            }),
            on_spark.seconds / native.seconds,
            on_spark.rows as f64 / on_spark.seconds,
            feast_cell(&|m| format!("{:.0}", m.rows as f64 / m.seconds)),
            same(&spark_out),
            feast.as_ref().map_or("-", |(_, s)| s.as_str()),
        );
    }
    Ok(())
}

/// The Flight stream rate of each training set: `quiver serve` and the pyarrow reference
/// (`python/flight_throughput.py`), medians of `--runs` streams each.
fn run_flight(args: &Args) -> Result<()> {
    println!(
        "| entity rows | columns | MB | Quiver GB/s (median) | pyarrow reference GB/s (median) | reference / Quiver | Quiver runs | reference runs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &rows in &args.entity_rows {
        let data = dataset(args, rows)?;
        let applied = Command::new(quiver_benches::quiver_bin()?)
            .arg("--repo")
            .arg(&data)
            .arg("apply")
            .output()?;
        anyhow::ensure!(
            applied.status.success(),
            "quiver apply failed: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let served = quiver_benches::Served::start(&data)?;
        let runs = args.runs.to_string();
        let out = quiver_benches::python_json(
            "flight_throughput.py",
            &[served.flight.as_ref(), data.as_os_str(), runs.as_ref()],
        )?;
        drop(served);
        let number = |k: &str| out[k].as_f64().unwrap_or(f64::NAN);
        let list = |k: &str| {
            out[k]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(serde_json::Value::as_f64)
                        .map(|x| format!("{x:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let (quiver, reference) = (number("quiver_median"), number("reference_median"));
        println!(
            "| {rows} | {} | {:.0} | {quiver:.2} | {reference:.2} | {:.2}× | {} | {} |",
            out["columns"],
            number("bytes") / 1e6,
            reference / quiver,
            list("quiver_gb_per_s"),
            list("reference_gb_per_s"),
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let [data, out] = args.run_quiver.as_slice() {
        return run_quiver(data, out);
    }
    if args.s3 {
        return run_s3(&args);
    }
    if args.spark {
        return run_spark(&args);
    }
    if args.flight {
        return run_flight(&args);
    }
    let venv = if args.no_duckdb {
        None
    } else {
        Some(venv(None)?)
    };
    let me = std::env::current_exe()?;
    println!(
        "| entity rows | view rows | Quiver s | Quiver rows/s | Quiver peak MB | DuckDB s | DuckDB rows/s | DuckDB peak MB | DuckDB/Quiver time | same rows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &rows in &args.entity_rows {
        let data = dataset(&args, rows)?;
        let q_out = data.join("quiver-result.parquet");
        let q = measured(
            &Command::new(&me)
                .arg("--run-quiver")
                .arg(&data)
                .arg(&q_out)
                .output()?,
            "quiver",
        )?;
        let (d, same) = match &venv {
            Some(venv) => {
                let d_out = data.join("duckdb-result.parquet");
                let d = measured(
                    &Command::new(venv.join("bin/python"))
                        .arg(
                            Path::new(env!("CARGO_MANIFEST_DIR"))
                                .join("python/duckdb_training_set.py"),
                        )
                        .arg(&data)
                        .arg(&d_out)
                        .output()?,
                    "duckdb",
                )?;
                let same = match compare(&q_out, &d_out) {
                    Ok(()) => "yes".to_owned(),
                    Err(e) => format!("NO: {e}"),
                };
                (Some(d), same)
            }
            None => (None, "-".into()),
        };
        let fmt = |m: &Option<Measured>, f: &dyn Fn(&Measured) -> String| {
            m.as_ref().map_or("-".into(), f)
        };
        println!(
            "| {rows} | {} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {same} |",
            args.view_rows,
            q.seconds,
            q.rows as f64 / q.seconds,
            q.peak_rss_mb,
            fmt(&d, &|d| format!("{:.2}", d.seconds)),
            fmt(&d, &|d| format!("{:.0}", d.rows as f64 / d.seconds)),
            fmt(&d, &|d| format!("{:.0}", d.peak_rss_mb)),
            fmt(&d, &|d| format!("{:.2}×", d.seconds / q.seconds)),
        );
    }
    Ok(())
}
