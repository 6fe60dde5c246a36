//! Helpers for end-to-end tests: run the `quiver` binary built by `cargo build --bins`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `quiver` binary next to the test executable (`target/<profile>/quiver`), or
/// `QUIVER_BIN` when set (to run the suite against another build, such as an older one).
pub fn quiver_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("QUIVER_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("quiver{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bins` (make test does)",
        bin.display()
    );
    bin
}

/// The result of one `quiver` invocation.
#[derive(Debug)]
pub struct Run {
    /// Exit status was success.
    pub ok: bool,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `quiver --repo REPO ARGS...` and asserts it exited with `code`.
pub fn quiver_exit(repo: &Path, args: &[&str], code: i32) -> Run {
    let run = quiver(repo, args);
    assert_eq!(
        run.code,
        Some(code),
        "quiver {args:?}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Runs `quiver --repo REPO ARGS...`.
pub fn quiver(repo: &Path, args: &[&str]) -> Run {
    quiver_env(repo, args, &[])
}

/// Runs `quiver --repo REPO ARGS...` with `env` added to its environment.
pub fn quiver_env(repo: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
    Command::new(quiver_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("QUIVER_REPO")
        .env("QUIVER_AUTHOR", "e2e")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run quiver")
        .into()
}

/// Runs `quiver --repo REPO ARGS...`, killing it (and failing the test) if it has not ended
/// after `seconds`.
#[track_caller]
pub fn quiver_within(repo: &Path, args: &[&str], seconds: u64) -> Run {
    let mut child = Command::new(quiver_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("QUIVER_REPO")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run quiver");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for quiver").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(seconds) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quiver {args:?} did not end within {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("quiver's output").into()
}

/// Runs `quiver ARGS...` and asserts it succeeded.
#[track_caller]
pub fn quiver_ok(repo: &Path, args: &[&str]) -> Run {
    let run = quiver(repo, args);
    assert!(
        run.ok,
        "quiver {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// A new example repository made by `quiver init` (project `demo`) in a temporary folder.
pub fn example_repo() -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().expect("temporary folder");
    let path = dir.path().to_str().expect("UTF-8 path").to_owned();
    quiver_ok(dir.path(), &["init", &path, "--project", "demo"]);
    dir
}

/// A Tokio runtime for a test's gRPC calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a Tokio runtime")
}

/// A running `quiver serve` on free loopback ports, stopped with SIGTERM when dropped.
pub struct Server {
    child: std::process::Child,
    /// The Arrow Flight address, `grpc://127.0.0.1:PORT`.
    pub flight: String,
    /// The online gRPC address, `127.0.0.1:PORT`.
    pub grpc: String,
    /// The HTTP address, `http://127.0.0.1:PORT`.
    pub http: String,
    /// The metrics URL, `http://127.0.0.1:PORT/metrics`, when started with `--metrics-port`.
    pub metrics: Option<String>,
    /// Everything the server printed before it was ready.
    pub banner: String,
}

impl Server {
    /// Starts `quiver serve` for `repo` with every port picked by the OS.
    pub fn start(repo: &Path) -> Self {
        Self::start_with(repo, &[])
    }

    /// Starts `quiver serve` with extra arguments.
    pub fn start_with(repo: &Path, extra: &[&str]) -> Self {
        Self::spawn(Command::new(quiver_bin()), repo, extra)
    }

    /// Starts `quiver serve` with `env` added to its environment.
    pub fn start_with_env(repo: &Path, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(quiver_bin());
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(command, repo, &[])
    }

    /// Starts `quiver serve` with at most `files` open files (`prlimit`).
    pub fn start_with_files_limit(repo: &Path, files: u32) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}"))
            .arg("--")
            .arg(quiver_bin());
        Self::spawn(command, repo, &[])
    }

    fn spawn(mut command: Command, repo: &Path, extra: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = command
            .arg("--repo")
            .arg(repo)
            .args([
                "serve",
                "--flight-port",
                "0",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
            ])
            .args(extra)
            .env_remove("QUIVER_REPO")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start quiver serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = String::new();
        let (mut grpc, mut http, mut metrics) = (String::new(), String::new(), None);
        let flight = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("quiver serve exited early:\n{banner}"))
                .expect("read server output");
            banner.push_str(&line);
            banner.push('\n');
            if let Some(address) = line.strip_prefix("Online gRPC: ") {
                address.clone_into(&mut grpc);
            }
            if let Some(address) = line.strip_prefix("HTTP: ") {
                address.clone_into(&mut http);
            }
            if let Some(url) = line.strip_prefix("Metrics: ") {
                metrics = Some(url.to_owned());
            }
            if let Some(address) = line.strip_prefix("Arrow Flight: ") {
                break address.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            flight,
            grpc,
            http,
            metrics,
            banner,
        }
    }

    /// A gRPC channel to the online gRPC port (connects on first use).
    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("a valid address")
            .connect_lazy()
    }

    /// The host and port of the Arrow Flight address (as Feast's `offline_store` takes them).
    pub fn flight_host_port(&self) -> (&str, &str) {
        self.flight
            .trim_start_matches("grpc://")
            .rsplit_once(':')
            .expect("a host:port address")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub fn wait(mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    fn terminate(&mut self) -> bool {
        self.sigterm();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// The Python interpreter of a venv with `examples/python/requirements.txt` installed
/// (created on first use by `examples/python/venv.sh`).
pub fn examples_python() -> PathBuf {
    static VENV: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut venv = VENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if venv.is_none() {
        let script = examples_dir().join("python/venv.sh");
        let out = Command::new(&script).output().expect("run venv.sh");
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        *venv = Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    venv.as_ref()
        .map(|v| v.join("bin/python"))
        .unwrap_or_default()
}

/// Runs a Python `script` with the examples' venv and `args`; asserts it succeeded and
/// returns its standard output parsed as JSON.
pub fn python_json<S: AsRef<std::ffi::OsStr>>(
    script: &Path,
    args: impl IntoIterator<Item = S>,
) -> serde_json::Value {
    let out = Command::new(examples_python())
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// RFC 3339 (UTC, to the second) of the time `seconds` ago.
pub fn rfc3339_ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RFC 3339 (UTC) of a time in µs since the epoch.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("a time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The start of the current hour, in µs since the epoch and as RFC 3339: the end of test
/// data that stays inside its views' ttl, so the store's purge of expired rows keeps it.
pub fn this_hour() -> (i64, String) {
    let micros = (now_micros() / 3_600_000_000) * 3_600_000_000;
    (micros, rfc3339(micros))
}

/// A minimal HTTP/1.1 client: sends `method path` with an optional JSON body to `base`
/// (`http://host:port`) and returns the status code and body.
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_exchange(base, method, path, body, &[]);
    (status, body)
}

/// [`http`] with extra request headers; also returns the response's headers (names in
/// lower case).
pub fn http_exchange(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the HTTP port");
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Writes one batch as a Parquet file.
pub fn write_parquet(path: &Path, batch: &arrow::array::RecordBatch) {
    let file = std::fs::File::create(path).expect("create Parquet file");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(batch).expect("write batch");
    w.close().expect("close Parquet file");
}

/// Reads a whole Parquet file into one batch.
pub fn read_parquet(path: &Path) -> arrow::array::RecordBatch {
    use arrow::array::RecordBatchReader;
    let file = std::fs::File::open(path).expect("open Parquet file");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("readable Parquet file")
        .build()
        .expect("readable Parquet file");
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(|b| b.expect("readable batch")).collect();
    arrow::compute::concat_batches(&schema, &batches).expect("one schema")
}

/// The published Parquet files of `folder` (none when it is missing): writers' hidden
/// temporary files, which are there before a file is whole, are left out.
pub fn parquet_files(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|d| {
            d.map(|e| e.expect("readable folder entry").path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "parquet")
                        && p.file_name()
                            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `done` every 50 ms until it holds; fails the test after `seconds`, naming `what`.
#[track_caller]
pub fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(seconds),
            "timed out after {seconds} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The current time in µs since the epoch.
pub fn now_micros() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros(),
    )
    .expect("fits")
}

/// Writes rows `(driver, customer, event µs, trips together)` as a file of the example's
/// `driver_customer_trips` folder source.
pub fn write_trips(path: &Path, rows: &[(i64, &str, i64, i64)]) {
    use arrow::array::{Float32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("trips_together", DataType::Int64, false),
        Field::new("last_rating", DataType::Float32, true),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Float32Array::from(vec![None; rows.len()])),
        ],
    )
    .expect("batch");
    write_parquet(path, &batch);
}

/// Replaces the example's driver data with `drivers` x `hours` hourly rows ending at `end_us`
/// whose features are functions of (driver, hour), so a torn or mixed row is detectable (see
/// [`sample_driver_stats`]).
pub fn write_big_driver_stats(repo: &Path, drivers: i64, hours: i64, end_us: i64) {
    use arrow::array::{Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let tz = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
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
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, false),
    ]));
    let file = std::fs::File::create(repo.join("data/driver_hourly_stats.parquet"))
        .expect("create the driver data");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).expect("writer");
    for h in 0..hours {
        let event = end_us - (hours - 1 - h) * 3_600_000_000;
        let ids: Vec<i64> = (0..drivers).collect();
        let times = || {
            Arc::new(TimestampMicrosecondArray::from(vec![event; ids.len()]).with_timezone("UTC"))
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                times(),
                times(),
                Arc::new(Float32Array::from(
                    ids.iter()
                        .map(|d| (d % 100) as f32 + h as f32)
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Float32Array::from(vec![h as f32; ids.len()])),
                Arc::new(Int64Array::from(
                    ids.iter().map(|d| d * 1000 + h).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch");
        w.write(&batch).expect("write");
    }
    w.close().expect("close the driver data");
}

/// `quiver --json online get` of `view` at the entity key `keys` (`join_key=value` each).
pub fn online_get(repo: &Path, view: &str, keys: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "online", "get", "--view", view];
    for key in keys {
        args.extend(["--key", key]);
    }
    quiver_ok(repo, &args).json()
}

/// The recorded runs of `view`, newest first (`quiver --json materialize status`).
pub fn runs_of(repo: &Path, view: &str) -> Vec<serde_json::Value> {
    let status = quiver_ok(repo, &["--json", "materialize", "status", "--view", view]).json();
    status["runs"].as_array().expect("runs").clone()
}

/// The watermark of `view` in `quiver --json online stats` (null when it has none).
pub fn watermark_of(repo: &Path, view: &str) -> serde_json::Value {
    let stats = quiver_ok(repo, &["--json", "online", "stats"]).json();
    stats["watermarks"]
        .as_array()
        .expect("watermarks")
        .iter()
        .find(|w| w["view"] == view)
        .map_or(serde_json::Value::Null, |w| w["watermark"].clone())
}

/// `quiver online get` of every `step`-th of `drivers` drivers' hourly stats (data from
/// [`write_big_driver_stats`]), each checked whole: its three features come from one row.
pub fn sample_driver_stats(repo: &Path, drivers: i64, step: usize) -> Vec<serde_json::Value> {
    (0..drivers)
        .step_by(step)
        .map(|d| {
            let got = online_get(repo, "driver_hourly_stats", &[&format!("driver_id={d}")]);
            let f = &got["features"];
            let h = f[1]["value"].as_f64().expect("acc_rate") as i64;
            assert_eq!(
                f[0]["value"].as_f64().expect("conv_rate") as i64,
                d % 100 + h,
                "torn row for {d}: {got}"
            );
            assert_eq!(
                f[2]["value"].as_i64().expect("trips"),
                d * 1000 + h,
                "torn row for {d}: {got}"
            );
            got
        })
        .collect()
}

/// Writes an entity table of (driver, customer) rows at the current time.
pub fn write_trip_entities(path: &Path, rows: &[(i64, &str)]) {
    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampMicrosecondArray::from(vec![now_micros(); rows.len()])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("batch");
    write_parquet(path, &batch);
}

/// A gRPC codec that sends raw bytes and ignores the answer, to send messages no generated
/// client would.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
