//! Records of materialization runs, kept in the store beside the data they describe.

use serde::{Deserialize, Serialize};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// A command or an RPC.
    Manual,
    /// The server's materialization schedule.
    Schedule,
}

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Still running.
    Running,
    /// Every row of the window was written (and, if incremental, the watermark advanced).
    Succeeded,
    /// It stopped with an error; the watermark did not move.
    Failed,
    /// Its caller cancelled it; the watermark did not move.
    Cancelled,
    /// The process running it stopped before it ended (found `running` at start-up).
    Interrupted,
}

impl RunOutcome {
    /// The outcome's name (`succeeded`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One materialization run of one view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique and increasing: the start time in ns, made unique.
    pub id: u64,
    /// Project.
    pub project: String,
    /// Feature view.
    pub view: String,
    /// The view's online generation the run wrote.
    pub generation: u64,
    /// What started it.
    pub trigger: RunTrigger,
    /// Whether it ran from the watermark (and advances it).
    pub incremental: bool,
    /// Start of the run (ns since the epoch).
    pub started_at: i64,
    /// End of the run (ns), once it ended.
    pub finished_at: Option<i64>,
    /// Window start (ns, inclusive; `i64::MIN` for "from the beginning").
    pub window_start: i64,
    /// Window end (ns, inclusive).
    pub window_end: i64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Source rows read.
    pub rows_scanned: u64,
    /// Rows written to the store.
    pub rows_written: u64,
    /// The newest event time (ns) among the rows it wrote.
    #[serde(default)]
    pub newest_event_ts: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// 1 for a first try, more for retries of a failed scheduled run.
    pub attempt: u32,
    /// The process that ran it (host, process id, start time); empty in records older than
    /// this field.
    #[serde(default)]
    pub holder: String,
}

impl RunRecord {
    /// How long the run took (or has taken so far, at `now`), in ms.
    pub fn duration_ms(&self, now: i64) -> u64 {
        let end = self.finished_at.unwrap_or(now);
        u64::try_from(end.saturating_sub(self.started_at) / 1_000_000).unwrap_or(0)
    }
}
