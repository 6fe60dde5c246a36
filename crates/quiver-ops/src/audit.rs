//! The audit log: every write (apply, push, materialization) and every refusal (a denied
//! action, a request without valid credentials), one JSON object per line, never with
//! token material. Records are written by a thread of their own, so recording never does
//! file IO on a request's thread; dropping the log waits for the records already queued.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::json;

/// Records waiting for the writer; beyond, records are dropped and counted.
const QUEUE: usize = 4096;

/// Where audit records go (`server.audit_log` in `quiver.yaml`).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    /// The writer thread and its queue, started by the first record.
    writer: Mutex<Option<(SyncSender<String>, JoinHandle<()>)>>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// A log appending to `path` (created on the first record).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            writer: Mutex::new(None),
            dropped: Arc::new(AtomicU64::new(0)),
        }
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
        })
        .to_string();
        let Ok(mut writer) = self.writer.lock() else {
            return;
        };
        if writer.is_none() {
            *writer = self.start();
        }
        let sent = writer
            .as_ref()
            .is_some_and(|(tx, _)| tx.try_send(line).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer could not keep up (or could not write).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts the writer thread.
    fn start(&self) -> Option<(SyncSender<String>, JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        let path = self.path.clone();
        let dropped = Arc::clone(&self.dropped);
        let spawned = std::thread::Builder::new()
            .name("quiver-audit".into())
            .spawn(move || {
                let mut file = match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!("audit log {}: {e}", path.display());
                        return;
                    }
                };
                for line in rx {
                    if let Err(e) = writeln!(file, "{line}") {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("audit log {}: {e}", path.display());
                    }
                }
            });
        match spawned {
            Ok(handle) => Some((tx, handle)),
            Err(e) => {
                tracing::error!("audit log {}: {e}", self.path.display());
                None
            }
        }
    }
}

impl Drop for AuditLog {
    /// Waits until the queued records are written.
    fn drop(&mut self) {
        let writer = self.writer.get_mut().ok().and_then(Option::take);
        if let Some((tx, handle)) = writer {
            drop(tx);
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_written_before_the_log_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(&path);
        log.record("alice", "push", "push:stats", "ok", "3 rows");
        log.record(
            "unknown",
            "authenticate",
            "/x",
            "unauthenticated",
            "invalid token",
        );
        assert_eq!(log.dropped(), 0);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["principal"], "alice");
        assert_eq!(lines[1]["outcome"], "unauthenticated");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    }
}
