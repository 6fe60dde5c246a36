//! Real components for Quiver's tests: the actual servers, started by the test on loopback on
//! free ports, bounded in time, and stopped by process id, never mocks.
//!
//! Each server runs under a small shell watchdog that reads its standard input from the test
//! process: when the test process ends, however it ends, the pipe closes and the watchdog
//! kills the server and removes its folder. So a fixture shared by a whole test binary
//! ([`redis::shared_server`], [`redis::shared_cluster`]) needs no teardown.
//!
//! - [`redis`]: `redis-server` alone (optionally with TLS and an ACL user) and Redis Clusters
//!   made with `redis-cli --cluster create`, with node kills and restarts for failover tests.
//! - [`s3`]: a SeaweedFS S3 server (`weed mini`) with a bucket.
//! - [`spark`]: a Spark standalone cluster (master, two one-core workers) with a Spark Connect
//!   server.
//! - [`SmallDisk`]: a tmpfs of a few megabytes, to run out of space on.

pub mod redis;
pub mod s3;
pub mod spark;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A free loopback port whose `+ 10000` neighbour (a Redis Cluster bus port) is free too.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Kills the server when the test process's end closes the pipe, then removes its folder.
const WATCHDOG: &str = r#"dir="$1"; shift
"$@" >"$dir.log" 2>&1 & pid=$!
echo "$pid"
cat >/dev/null
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir" "$dir.log"
rmdir "$(dirname "$dir")" 2>/dev/null"#;

/// A server process under its watchdog.
pub(crate) struct Running {
    pub(crate) pid: u32,
    _watchdog: Child,
    /// Held open for as long as the server should live.
    _lifeline: ChildStdin,
}

impl Running {
    /// Starts `program` with `args` under a watchdog that kills it and removes `dir` when the
    /// test process ends; its output goes to `<dir>.log`.
    pub(crate) fn spawn(program: &str, dir: &Path, args: &[String]) -> Self {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(dir)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} under its watchdog: {e}"));
        let lifeline = watchdog.stdin.take().expect("piped stdin");
        let mut first = String::new();
        BufReader::new(watchdog.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("read the server's pid");
        let pid = first.trim().parse().expect("the watchdog prints the pid");
        Self {
            pid,
            _watchdog: watchdog,
            _lifeline: lifeline,
        }
    }
}

/// A folder for this test process's servers (their watchdogs remove each server's folder
/// when it ends).
pub(crate) fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quiver-testkit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// Waits until `done` holds, checking every 50 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A certificate authority and a server certificate for `127.0.0.1`, made with `openssl`.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The authority's certificate (PEM).
    pub ca: PathBuf,
    /// The server's certificate (PEM), for the IP address 127.0.0.1.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl Certificates {
    /// Makes a new authority and server certificate in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let path = |name: &str| dir.join(name).display().to_string();
        let (ca_key, ca, key, csr, cert, ext) = (
            path("ca.key"),
            path("ca.crt"),
            path("server.key"),
            path("server.csr"),
            path("server.crt"),
            path("server.ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("write the extension file");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=quiver-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        Self {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Sets its flag when dropped, also when the test panics: threads a test spawned and stops
/// with the flag then end rather than keep the test binary alive.
#[derive(Debug)]
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A small real filesystem (tmpfs) mounted in a temporary folder for the test's lifetime, to
/// run out of space on; unmounted when dropped.
#[derive(Debug)]
pub struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`. Needs the privilege to mount (CI runs as root): `None`,
    /// after saying the test is skipped, without it.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::TempDir::new().expect("create a temporary folder");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mounting a tmpfs needs root");
        }
        mounted.then_some(Self(dir))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file that takes every byte left; returns its path (remove it to free the space).
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler file");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
