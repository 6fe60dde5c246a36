//! What the benchmark harnesses share: the synthetic features their views are made of
//! (even-numbered features float64, odd ones int64), as Arrow fields, random columns and
//! Quiver definitions; and the view source and repository two of them use.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver_ops::{ApplyRequest, BaseVersion, FeatureStore, StoreOptions};
use quiver_registry::{RepoConfig, load_definitions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn is_float(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// Nullable Arrow fields of `n` features named `{prefix}{i}`.
pub fn feature_fields(prefix: &str, n: usize) -> Vec<Field> {
    (0..n)
        .map(|i| {
            let t = if is_float(i) {
                DataType::Float64
            } else {
                DataType::Int64
            };
            Field::new(format!("{prefix}{i}"), t, true)
        })
        .collect()
}

/// `rows` random values of feature `i`, each present with probability `present` (floats in
/// [0, 1), integers in [0, 1,000,000)).
pub fn feature_column(i: usize, rows: usize, present: f64, rng: &mut StdRng) -> ArrayRef {
    let some = |rng: &mut StdRng| present >= 1.0 || rng.random_bool(present);
    if is_float(i) {
        Arc::new(Float64Array::from_iter(
            (0..rows).map(|_| some(rng).then(|| rng.random::<f64>())),
        ))
    } else {
        Arc::new(Int64Array::from_iter(
            (0..rows).map(|_| some(rng).then(|| rng.random_range(0..1_000_000))),
        ))
    }
}

/// The `features:` entries of a view definition for `n` features named `{prefix}{i}`.
pub fn feature_definitions(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            let t = if is_float(i) { "float64" } else { "int64" };
            format!("      - {{name: {prefix}{i}, type: {t}}}\n")
        })
        .collect()
}

/// 2024-01-01T00:00:00Z in µs.
pub const T0: i64 = 1_704_067_200_000_000;
/// A day in µs.
pub const DAY: i64 = 86_400_000_000;

/// Writes the benchmark view's source: `rows` rows of `keys` distinct `driver_id`s over 30
/// days of 2024 (event and created times), and `features` features (see [`feature_column`]),
/// in row groups of 128Ki rows.
pub fn write_view_source(path: &Path, rows: usize, keys: i64, features: usize) -> Result<()> {
    let tz: Option<Arc<str>> = Some("UTC".into());
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, tz),
            false,
        ),
    ];
    fields.extend(feature_fields("f", features));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema.clone(), Some(props))?;
    let mut rng = StdRng::seed_from_u64(3);
    let mut left = rows;
    while left > 0 {
        let n = left.min(128 * 1024);
        left -= n;
        let events: Vec<i64> = (0..n).map(|_| T0 + rng.random_range(0..30 * DAY)).collect();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|_| rng.random_range(0..keys))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(events.clone()).with_timezone("UTC")),
            Arc::new(
                TimestampMicrosecondArray::from(
                    events
                        .iter()
                        .map(|e| e + rng.random_range(0..3_600_000_000))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ];
        columns.extend((0..features).map(|i| feature_column(i, n, 0.98, &mut rng)));
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    writer.close()?;
    Ok(())
}

/// A repository in `dir/quiver` with one view, `stats` (entity `driver`), over the file
/// `parquet` written by [`write_view_source`], applied; its store, opened.
pub fn view_repo(dir: &Path, parquet: &Path, features: usize) -> Result<FeatureStore> {
    let repo = dir.join("quiver");
    std::fs::create_dir_all(&repo)?;
    // Source paths stay under the data root: the folder holding the generated file.
    let data = parquet.parent().context("the source file has a folder")?;
    std::fs::write(
        repo.join("quiver.yaml"),
        format!("project: bench\ndata_root: {}\n", data.display()),
    )?;
    let feature_list = feature_definitions("f", features);
    std::fs::write(
        repo.join("defs.yaml"),
        format!(
            "entities:\n  - name: driver\n    join_keys: [{{name: driver_id, type: int64}}]\nsources:\n  - name: src\n    path: {}\n    timestamp_field: event_timestamp\n    created_timestamp_column: created\nfeature_views:\n  - name: stats\n    entities: [driver]\n    source: src\n    features:\n{feature_list}",
            parquet
                .file_name()
                .context("the source file has a name")?
                .to_string_lossy()
        ),
    )?;
    let config = RepoConfig::load(&repo)?;
    let definitions = load_definitions(&repo, &config, &config.sources(&repo))?;
    let store = FeatureStore::open(&repo, StoreOptions::default())?;
    store.apply(
        &quiver_ops::Caller::Trusted,
        ApplyRequest {
            definitions,
            based_on: BaseVersion::Latest,
            author: "bench".into(),
        },
    )?;
    Ok(store)
}

/// Runs `benches/python/<script>` with `args` in the benchmark venv (made by
/// `benches/python/venv.sh` when missing) and parses the JSON of its last output line.
pub fn python_json(script: &str, args: &[&std::ffi::OsStr]) -> Result<serde_json::Value> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let venv = std::process::Command::new(here.join("venv.sh"))
        .output()
        .context("creating the benchmark venv")?;
    if !venv.status.success() {
        anyhow::bail!(
            "benches/python/venv.sh failed: {}",
            String::from_utf8_lossy(&venv.stderr)
        );
    }
    let python = Path::new(String::from_utf8(venv.stdout)?.trim()).join("bin/python");
    let out = std::process::Command::new(python)
        .arg(here.join(script))
        .args(args)
        .output()?;
    if !out.status.success() {
        anyhow::bail!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?)
}

/// CPU time (user + system, seconds) process `pid` and all its threads have used so far,
/// from `/proc/<pid>/stat`; `None` when it cannot be read (the process is gone, or no procfs).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS_PER_SECOND.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (the state);
    // utime and stime are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / ticks)
}

/// A child process (and its process group's leader) sent `SIGTERM` and awaited on drop.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The `quiver` binary beside the running harness (the same build profile).
pub fn quiver_bin() -> Result<std::path::PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("quiver"))
}

/// A `quiver serve` the harness started on free loopback ports.
pub struct Served {
    /// Stops the server when dropped.
    pub guard: Guard,
    /// The online gRPC address (`host:port`).
    pub grpc: String,
    /// The HTTP address (`host:port`).
    pub http: String,
    /// The Arrow Flight location (`grpc://host:port`, or `grpc+tls://`).
    pub flight: String,
}

impl Served {
    /// Starts [`quiver_bin`] serving `repo` and returns once it says where it listens.
    pub fn start(repo: &Path) -> Result<Self> {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(quiver_bin()?)
            .arg("--repo")
            .arg(repo)
            .args([
                "serve",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--flight-port",
                "0",
            ])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let guard = Guard(child);
        let mut lines = BufReader::new(stdout).lines();
        let (mut grpc, mut http, mut flight) = (String::new(), String::new(), String::new());
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.strip_prefix("Online gRPC: ") {
                grpc = a.to_owned();
            }
            if let Some(a) = line.strip_prefix("HTTP: http://") {
                http = a.to_owned();
            }
            if let Some(a) = line.strip_prefix("Arrow Flight") {
                flight = a.rsplit(' ').next().unwrap_or_default().to_owned();
                break;
            }
        }
        anyhow::ensure!(!flight.is_empty(), "quiver serve exited before it listened");
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            guard,
            grpc,
            http,
            flight,
        })
    }
}
