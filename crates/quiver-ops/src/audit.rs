//! The audit log: every write (apply, push, materialization) and every refusal (a denied
//! action, a request without valid credentials), one JSON object per line, never with
//! token material.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

/// Where audit records go (`server.audit_log` in `quiver.yaml`).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl AuditLog {
    /// A log appending to `path` (created on the first record).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: Mutex::new(None),
        }
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `principal` did (`outcome: "ok"`) or was refused (`"denied"`,
    /// `"unauthenticated"`) `action` on `object`, with a detail (the error, the rows).
    pub fn record(&self, principal: &str, action: &str, object: &str, outcome: &str, detail: &str) {
        let line = json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "principal": principal,
            "action": action,
            "object": object,
            "outcome": outcome,
            "detail": detail,
        });
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    eprintln!("audit log {}: {e}", self.path.display());
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = writeln!(f, "{line}")
        {
            eprintln!("audit log {}: {e}", self.path.display());
        }
    }
}
