//! Helpers for end-to-end tests: run the `quiver` binary built by `cargo build --bins`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `quiver` binary next to the test executable (`target/<profile>/quiver`).
pub fn quiver_bin() -> PathBuf {
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
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `quiver --repo REPO ARGS...`.
pub fn quiver(repo: &Path, args: &[&str]) -> Run {
    Command::new(quiver_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("QUIVER_REPO")
        .env("QUIVER_AUTHOR", "e2e")
        .output()
        .expect("run quiver")
        .into()
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
