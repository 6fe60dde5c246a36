//! A Spark cluster: a standalone master, two workers of one core each and a Spark Connect
//! server, from `pyspark` on PyPI (it ships Spark and the Connect server; installed into the
//! examples' venv by `examples/python/venv.sh`) on a JDK from Debian.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Running, free_port, scratch_dir, wait_until};

/// How long the cluster may take to serve Spark Connect (measured: about 25 s).
const START: Duration = Duration::from_secs(180);

/// A Spark standalone cluster with a Spark Connect server on loopback.
pub struct SparkCluster {
    /// The Spark Connect port.
    pub connect_port: u16,
    _master: Running,
    _workers: Vec<Running>,
    _connect: Running,
}

impl std::fmt::Debug for SparkCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparkCluster")
            .field("connect_port", &self.connect_port)
            .finish_non_exhaustive()
    }
}

/// `$SPARK_HOME` of the `pyspark` in the examples' venv (created on first use), or
/// `$QUIVER_SPARK_HOME`.
pub fn spark_home() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_SPARK_HOME") {
        return PathBuf::from(path);
    }
    let python = crate::s3::venv().join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "find pyspark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl SparkCluster {
    /// Starts the master, two one-core workers and the Connect server on free ports, each
    /// under a watchdog, and waits until the Connect server accepts connections.
    pub fn start() -> Self {
        let home = spark_home();
        let class = home.join("bin/spark-class").display().to_string();
        let submit = home.join("bin/spark-submit").display().to_string();
        let dir = scratch_dir().join(format!("spark-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("create the cluster's folder");
        let env = |program: &str| {
            vec![
                "SPARK_LOCAL_IP=127.0.0.1".to_owned(),
                format!("SPARK_HOME={}", home.display()),
                program.to_owned(),
            ]
        };
        let master_port = free_port();
        let mut args = env(&class);
        args.extend([
            "org.apache.spark.deploy.master.Master".to_owned(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            master_port.to_string(),
            "--webui-port".into(),
            free_port().to_string(),
        ]);
        let master_dir = dir.join("master");
        let master = Running::spawn("env", &master_dir, &args);
        let master_url = format!("spark://127.0.0.1:{master_port}");
        wait_until(
            &format!("the Spark master on port {master_port}"),
            START,
            || TcpStream::connect(("127.0.0.1", master_port)).is_ok(),
        );
        let workers = (0..2)
            .map(|i| {
                let worker = dir.join(format!("worker-{i}"));
                let work = worker.join("work");
                std::fs::create_dir_all(&work).expect("create a worker's folder");
                let mut args = env(&class);
                args.extend([
                    "org.apache.spark.deploy.worker.Worker".to_owned(),
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--cores".into(),
                    "1".into(),
                    "--memory".into(),
                    "2g".into(),
                    "--webui-port".into(),
                    free_port().to_string(),
                    "--work-dir".into(),
                    work.display().to_string(),
                    master_url.clone(),
                ]);
                Running::spawn("env", &worker, &args)
            })
            .collect();
        let connect_port = free_port();
        let connect = dir.join("connect");
        std::fs::create_dir_all(&connect).expect("create the Connect server's folder");
        let mut args = env(&submit);
        args.extend([
            "--class".to_owned(),
            "org.apache.spark.sql.connect.service.SparkConnectServer".into(),
            "--master".into(),
            master_url,
            "--driver-memory".into(),
            "1g".into(),
        ]);
        for (key, value) in [
            ("spark.connect.grpc.binding.address", "127.0.0.1".to_owned()),
            ("spark.connect.grpc.binding.port", connect_port.to_string()),
            ("spark.executor.memory", "1g".into()),
            ("spark.ui.enabled", "false".into()),
            ("spark.sql.shuffle.partitions", "4".into()),
            (
                "spark.sql.warehouse.dir",
                connect.join("warehouse").display().to_string(),
            ),
            (
                "spark.local.dir",
                connect.join("local").display().to_string(),
            ),
            (
                "spark.driver.extraJavaOptions",
                format!("-Djava.io.tmpdir={}", connect.display()),
            ),
        ] {
            args.push("--conf".into());
            args.push(format!("{key}={value}"));
        }
        args.push("spark-internal".into());
        let connect = Running::spawn("env", &connect, &args);
        wait_until(
            &format!("Spark Connect on port {connect_port}"),
            START,
            || TcpStream::connect(("127.0.0.1", connect_port)).is_ok(),
        );
        Self {
            connect_port,
            _master: master,
            _workers: workers,
            _connect: connect,
        }
    }

    /// `sc://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("sc://127.0.0.1:{}", self.connect_port)
    }
}

/// One Spark cluster shared by every test of the test binary.
pub fn shared_cluster() -> &'static SparkCluster {
    static CLUSTER: OnceLock<SparkCluster> = OnceLock::new();
    CLUSTER.get_or_init(SparkCluster::start)
}
