//! Redis servers and clusters from Debian's `redis-server` and `redis-tools`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{Running, free_port, scratch_dir, wait_until};

/// How long a server may take to start answering.
const START: Duration = Duration::from_secs(20);

/// One `redis-server` process on loopback.
pub struct RedisNode {
    /// The port it listens on (its TLS port when it speaks TLS).
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    running: Mutex<Running>,
    /// Watchdogs of earlier runs (after restarts): kept until the end, since each removes the
    /// folder when it goes.
    retired: Mutex<Vec<Running>>,
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// Panics with what to install when Redis is missing.
fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is not installed: run .ci/install-deps (Debian packages redis-server and redis-tools)"
        );
    }
}

impl RedisNode {
    /// Starts `redis-server` on a free port in a new folder under `parent` with `extra`
    /// settings (`["--cluster-enabled", "yes"]`), no persistence, and waits until it answers.
    pub fn start(parent: &Path, extra: &[&str]) -> Self {
        Self::start_on(parent, free_port(), extra, false)
    }

    /// Starts a server that speaks only TLS on its port; `extra` names its certificates.
    pub fn start_tls(parent: &Path, extra: &[&str]) -> Self {
        Self::start_on(parent, free_port(), extra, true)
    }

    fn start_on(parent: &Path, port: u16, extra: &[&str], tls: bool) -> Self {
        require_redis();
        let dir = parent.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        let mut args: Vec<String> = if tls {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
            ]
        } else {
            vec!["--port".into(), port.to_string()]
        };
        for a in [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ] {
            args.push(a.into());
        }
        args.extend(["--dir".into(), dir.display().to_string()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let node = Self {
            port,
            running: Mutex::new(spawn(&dir, &args)),
            retired: Mutex::default(),
            dir,
            args,
        };
        node.wait_listening();
        node
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.running.lock().map(|r| r.pid).unwrap_or(0)
    }

    /// Kills the server with SIGKILL and waits until its port is closed.
    pub fn kill(&self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        wait_until(&format!("redis {} to exit", self.port), START, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    /// Starts the server again with the same settings and folder (a cluster node rejoins with
    /// its node id), and waits until it listens.
    pub fn restart(&self) {
        let running = spawn(&self.dir, &self.args);
        if let (Ok(mut current), Ok(mut retired)) = (self.running.lock(), self.retired.lock()) {
            retired.push(std::mem::replace(&mut *current, running));
        }
        self.wait_listening();
    }

    /// Runs `redis-cli` against this server (plain TCP) and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_listening(&self) {
        wait_until(&format!("redis on port {}", self.port), START, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }
}

fn spawn(dir: &Path, args: &[String]) -> Running {
    Running::spawn("redis-server", dir, args)
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, on loopback.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, masters first as created.
    pub nodes: Vec<RedisNode>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster with `redis-cli --cluster create`, and waits
    /// until every node reports it healthy. Failover takes about two seconds (node timeout
    /// 1.5 s).
    pub fn start(masters: usize, replicas: usize) -> Self {
        let parent = scratch_dir();
        let nodes: Vec<RedisNode> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisNode::start(
                    &parent,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "1500",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-replica-validity-factor",
                        "0",
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(RedisNode::address).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// `host:port` of every node, for a client to start from.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::address).collect()
    }

    /// Waits until every live node says the cluster is ok and every live replica is in sync
    /// with its master (a replica promoted before then would lose what it had not got).
    pub fn wait_healthy(&self) {
        wait_until(
            "the Redis Cluster to be healthy",
            Duration::from_secs(60),
            || {
                self.live().all(|n| {
                    let ok = n
                        .cli(&["cluster", "info"])
                        .lines()
                        .any(|l| l.trim() == "cluster_state:ok");
                    let info = n.cli(&["info", "replication"]);
                    let replica = info.lines().any(|l| l.trim() == "role:slave");
                    ok && (!replica || info.lines().any(|l| l.trim() == "master_link_status:up"))
                })
            },
        );
    }

    /// The nodes that are masters now.
    pub fn masters(&self) -> Vec<&RedisNode> {
        self.live()
            .filter(|n| n.cli(&["role"]).lines().next().map(str::trim) == Some("master"))
            .collect()
    }

    /// The node that replicates `master` now, if any.
    pub fn replica_of(&self, master: &RedisNode) -> Option<&RedisNode> {
        self.live().find(|n| {
            let info = n.cli(&["info", "replication"]);
            info.lines().any(|l| l.trim() == "role:slave")
                && info
                    .lines()
                    .any(|l| l.trim() == format!("master_port:{}", master.port))
        })
    }

    /// Waits until `node` (a replica of a killed master) has been promoted.
    pub fn wait_promoted(&self, node: &RedisNode) {
        wait_until(
            &format!("redis {} to be promoted", node.port),
            Duration::from_secs(30),
            || node.cli(&["role"]).lines().next().map(str::trim) == Some("master"),
        );
    }

    fn live(&self) -> impl Iterator<Item = &RedisNode> {
        self.nodes
            .iter()
            .filter(|n| std::net::TcpStream::connect(("127.0.0.1", n.port)).is_ok())
    }
}

/// One plain Redis server shared by every test of the test binary.
pub fn shared_server() -> &'static RedisNode {
    static SERVER: OnceLock<RedisNode> = OnceLock::new();
    SERVER.get_or_init(|| RedisNode::start(&scratch_dir(), &[]))
}

/// One Redis Cluster (three masters, three replicas) shared by every test of the test
/// binary. Tests that kill nodes start a cluster of their own.
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 1))
}
