//! Outcomes of operations in their protobuf form and back: the one mapping of each message,
//! used by the server to answer and by clients (the CLI) to read its answers.

use std::time::Duration;

use quiver_online::{RunRecord, ViewReport};
use quiver_ops::{Freshness, StatusReport, ViewStatus};

use crate::proto::quiver::v1 as pb;

/// The protobuf form of a view's materialization report.
pub fn view_report_message(r: &ViewReport) -> pb::ViewReport {
    pb::ViewReport {
        view: r.view.clone(),
        start_nanos: r.start,
        end_nanos: r.end,
        files: r.files as u64,
        row_groups_read: r.row_groups_read as u64,
        rows_scanned: r.rows_scanned,
        rows_in_window: r.rows_in_window,
        rows_written: r.rows_written,
        bytes_written: r.bytes_written,
        skipped_null_key: r.skipped_null_key,
        skipped_null_timestamp: r.skipped_null_timestamp,
        elapsed_ms: r.elapsed_ms,
        newest_event_nanos: r.newest_event_ts,
    }
}

/// A view's materialization report from its protobuf form.
pub fn view_report(m: pb::ViewReport) -> ViewReport {
    ViewReport {
        view: m.view,
        start: m.start_nanos,
        end: m.end_nanos,
        files: usize::try_from(m.files).unwrap_or(usize::MAX),
        row_groups_read: usize::try_from(m.row_groups_read).unwrap_or(usize::MAX),
        rows_scanned: m.rows_scanned,
        rows_in_window: m.rows_in_window,
        rows_written: m.rows_written,
        bytes_written: m.bytes_written,
        skipped_null_key: m.skipped_null_key,
        skipped_null_timestamp: m.skipped_null_timestamp,
        elapsed_ms: m.elapsed_ms,
        newest_event_ts: m.newest_event_nanos,
    }
}

/// The protobuf form of a run record (its project is the server's).
pub fn run_message(r: &RunRecord) -> pb::Run {
    pb::Run {
        id: r.id,
        view: r.view.clone(),
        generation: r.generation,
        trigger: serde_json::to_value(r.trigger)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        incremental: r.incremental,
        started_at_nanos: r.started_at,
        finished_at_nanos: r.finished_at.unwrap_or(0),
        window_start_nanos: r.window_start,
        window_end_nanos: r.window_end,
        outcome: r.outcome.name().to_owned(),
        rows_scanned: r.rows_scanned,
        rows_written: r.rows_written,
        error: r.error.clone().unwrap_or_default(),
        attempt: r.attempt,
        holder: r.holder.clone(),
        newest_event_nanos: r.newest_event_ts,
    }
}

/// A run record from its protobuf form (without its project); an error names a trigger or an
/// outcome this version does not know.
pub fn run_record(m: pb::Run) -> serde_json::Result<RunRecord> {
    let name = |s: &str| serde_json::Value::String(s.to_owned());
    Ok(RunRecord {
        id: m.id,
        project: String::new(),
        view: m.view,
        generation: m.generation,
        trigger: serde_json::from_value(name(&m.trigger))?,
        incremental: m.incremental,
        started_at: m.started_at_nanos,
        finished_at: (m.finished_at_nanos != 0).then_some(m.finished_at_nanos),
        window_start: m.window_start_nanos,
        window_end: m.window_end_nanos,
        outcome: serde_json::from_value(name(&m.outcome))?,
        rows_scanned: m.rows_scanned,
        rows_written: m.rows_written,
        newest_event_ts: m.newest_event_nanos,
        error: (!m.error.is_empty()).then_some(m.error),
        attempt: m.attempt,
        holder: m.holder,
    })
}

/// The protobuf form of a status report.
pub fn status_message(r: &StatusReport) -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        now_nanos: r.now,
        registry_version: r.version,
        views: r
            .views
            .iter()
            .map(|v| pb::ViewStatus {
                view: v.view.clone(),
                freshness_nanos: v
                    .freshness
                    .map(|f| i64::try_from(f.as_nanos()).unwrap_or(i64::MAX)),
                newest_event_nanos: v.newest_event_ts,
                rows: v.rows,
                last_run: v.last_run.as_ref().map(run_message),
                last_success_nanos: v.last_success,
                state: v.state.name().to_owned(),
            })
            .collect(),
    }
}

/// A status report from its protobuf form; an error names a state, trigger or outcome this
/// version does not know.
pub fn status_report(m: pb::GetStatusResponse) -> serde_json::Result<StatusReport> {
    let views = m
        .views
        .into_iter()
        .map(|v| {
            Ok(ViewStatus {
                view: v.view,
                freshness: v
                    .freshness_nanos
                    .map(|n| Duration::from_nanos(u64::try_from(n).unwrap_or(0))),
                newest_event_ts: v.newest_event_nanos,
                rows: v.rows,
                last_run: v.last_run.map(run_record).transpose()?,
                last_success: v.last_success_nanos,
                state: serde_json::from_value::<Freshness>(serde_json::Value::String(v.state))?,
            })
        })
        .collect::<serde_json::Result<_>>()?;
    Ok(StatusReport {
        now: m.now_nanos,
        version: m.registry_version,
        views,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_online::{RunOutcome, RunTrigger};

    #[test]
    fn a_run_record_comes_back_as_it_went() {
        let run = RunRecord {
            id: 7,
            project: String::new(),
            view: "v".into(),
            generation: 3,
            trigger: RunTrigger::Schedule,
            incremental: true,
            started_at: 10,
            finished_at: Some(20),
            window_start: i64::MIN,
            window_end: 5,
            outcome: RunOutcome::Interrupted,
            rows_scanned: 4,
            rows_written: 2,
            newest_event_ts: Some(-3),
            error: Some("gone".into()),
            attempt: 2,
            holder: "host/1/2".into(),
        };
        assert_eq!(run_record(run_message(&run)).unwrap(), run);
        let report = StatusReport {
            now: 30,
            version: 4,
            views: vec![ViewStatus {
                view: "v".into(),
                freshness: Some(Duration::from_secs(7200)),
                newest_event_ts: Some(-3),
                rows: 9,
                last_run: Some(run),
                last_success: None,
                state: Freshness::Stale,
            }],
        };
        assert_eq!(status_report(status_message(&report)).unwrap(), report);
    }
}
