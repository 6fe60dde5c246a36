//! `quiver status`: each online view's freshness against what it declares, its rows and its
//! last materialization, read from the online store (not from this process's memory), so
//! any process of the repository gives the same answer.

use std::time::Duration;

use quiver_core::{Action, ObjectKind, now_nanos};
use quiver_online::{RUNS_KEPT, RunOutcome, RunRecord};

use crate::FeatureStore;
use crate::auth::Caller;
use crate::error::Result;

/// Whether a view is as fresh as it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Its newest online row is within its declared freshness.
    Fresh,
    /// Its newest online row is older than its declared freshness, or it has no row.
    Stale,
    /// It declares no freshness.
    Unchecked,
}

impl Freshness {
    /// The state's name (`fresh`, `stale`, `unchecked`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Unchecked => "unchecked",
        }
    }

    /// The state of a view declaring `expected`, whose newest row has event time `newest`,
    /// at `now` (ns).
    pub fn of(expected: Option<Duration>, newest: Option<i64>, now: i64) -> Self {
        let Some(expected) = expected else {
            return Self::Unchecked;
        };
        let limit = i64::try_from(expected.as_nanos()).unwrap_or(i64::MAX);
        match newest {
            Some(t) if now.saturating_sub(t) <= limit => Self::Fresh,
            _ => Self::Stale,
        }
    }
}

/// One online view's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStatus {
    /// The view.
    pub view: String,
    /// The freshness it declares.
    pub freshness: Option<Duration>,
    /// The newest event time (ns) among its online rows.
    pub newest_event_ts: Option<i64>,
    /// Its online rows.
    pub rows: u64,
    /// Its newest materialization run.
    pub last_run: Option<RunRecord>,
    /// When its newest successful run ended (ns).
    pub last_success: Option<i64>,
    /// Fresh, stale or unchecked.
    pub state: Freshness,
}

/// Every online view's health at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// When it was taken (ns).
    pub now: i64,
    /// The registry version it describes.
    pub version: u64,
    /// The online views the caller may describe, in name order.
    pub views: Vec<ViewStatus>,
}

impl StatusReport {
    /// Whether any view is stale.
    pub fn any_stale(&self) -> bool {
        self.views.iter().any(|v| v.state == Freshness::Stale)
    }
}

impl FeatureStore {
    /// The health of every online view `caller` may describe. Counts each view's online rows
    /// (a read of every row: for cron jobs and people, not for request paths).
    pub fn status(&self, caller: &Caller) -> Result<StatusReport> {
        let snapshot = self.snapshot();
        let now = now_nanos();
        let views = snapshot
            .online_views()
            .filter(|v| {
                snapshot
                    .authorizer
                    .decide(caller, Action::Describe, ObjectKind::FeatureView, &v.name)
                    .is_some()
            })
            .map(|v| {
                let contents = self.store.view_contents(&snapshot.view_id(&v.name))?;
                let runs = self
                    .store
                    .runs(&snapshot.defs.project, Some(&v.name), RUNS_KEPT)?;
                let freshness = v.freshness.map(|f| f.0);
                Ok(ViewStatus {
                    view: v.name.clone(),
                    freshness,
                    newest_event_ts: contents.newest_event_ts,
                    rows: contents.rows,
                    last_success: runs
                        .iter()
                        .filter(|r| r.outcome == RunOutcome::Succeeded)
                        .find_map(|r| r.finished_at),
                    last_run: runs.into_iter().next(),
                    state: Freshness::of(freshness, contents.newest_event_ts, now),
                })
            })
            .collect::<Result<_>>()?;
        Ok(StatusReport {
            now,
            version: snapshot.version,
            views,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_stale_past_its_freshness_or_without_rows() {
        let hour = Duration::from_secs(3600);
        let h = 3_600_000_000_000i64;
        let now = 10 * h;
        assert_eq!(Freshness::of(None, None, now), Freshness::Unchecked);
        assert_eq!(
            Freshness::of(Some(hour), Some(now - h), now),
            Freshness::Fresh
        );
        assert_eq!(
            Freshness::of(Some(hour), Some(now - h - 1), now),
            Freshness::Stale
        );
        assert_eq!(Freshness::of(Some(hour), None, now), Freshness::Stale);
        // Rows from the future are fresh.
        assert_eq!(
            Freshness::of(Some(hour), Some(now + h), now),
            Freshness::Fresh
        );
    }
}
