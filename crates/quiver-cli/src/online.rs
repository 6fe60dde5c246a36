//! `quiver materialize`, `quiver materialize-incremental`, `quiver materialize status` and
//! `quiver online ...`: in this process, or through the server that holds the store.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use quiver_core::{EngineKind, KeyType, format_nanos, parse_duration, parse_time_nanos};
use quiver_online::{
    Cell, FeatureValue, FieldStatus, Progress, RocksDbStore, RunRecord, ViewReport, Window,
};
use quiver_ops::{FeatureSpec, InputValue, MaterializeRequest};
use quiver_registry::{Registry, RepoConfig};
use quiver_server::messages::{run_record, status_report, view_report};
use quiver_server::proto::quiver::v1 as pb;
use serde_json::{Value, json};

use crate::access::{Access, Server, running_server, status_error};
use crate::output;

/// An instant as text: RFC 3339, or the open ends of a window.
pub fn time_text(ns: i64) -> String {
    match ns {
        i64::MIN => "the beginning".into(),
        i64::MAX => "the end".into(),
        _ => format_nanos(ns),
    }
}

/// An instant as a person reads it in a table: to the second.
fn short_time(ns: i64) -> String {
    match ns {
        i64::MIN | i64::MAX => time_text(ns),
        _ => chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The window of `quiver materialize START END`.
pub fn range_window(start: &str, end: &str) -> Result<Window> {
    let (start, end) = (parse_time_nanos(start)?, parse_time_nanos(end)?);
    if start > end {
        bail!(
            "START ({}) is after END ({})",
            time_text(start),
            time_text(end)
        );
    }
    Ok(Window::Range { start, end })
}

/// The window of `quiver materialize-incremental END [--lookback D]`.
pub fn incremental_window(end: &str, lookback: Option<&str>) -> Result<Window> {
    Ok(Window::Incremental {
        end: parse_time_nanos(end)?,
        lookback: lookback
            .map(parse_duration)
            .transpose()?
            .unwrap_or(Duration::ZERO),
    })
}

/// Runs a materialization with a progress bar (hidden with `--json` or off a terminal).
pub fn run_materialize(
    repo: &Path,
    server: Option<&str>,
    views: &[String],
    window: Window,
    engine: Option<EngineKind>,
    as_json: bool,
) -> Result<()> {
    let bar = output::progress_bar(
        as_json,
        "{msg:24} [{bar:30}] {human_pos}/{human_len} rows {per_sec} {eta}",
    );
    let progress = |p: Progress<'_>| match p {
        Progress::ViewStarted { view, rows } => {
            bar.set_message(view.to_owned());
            bar.set_position(0);
            bar.set_length(rows);
        }
        Progress::Rows(n) => bar.inc(n),
    };
    let runtime = Server::runtime()?;
    let reports = match Access::open(&runtime, repo, server)? {
        Access::Local(store) => store.materialize(
            &quiver_ops::Caller::Trusted,
            &MaterializeRequest {
                engine,
                ..MaterializeRequest::manual(views.to_vec(), window)
            },
            &progress,
            None,
        )?,
        Access::Remote(server) => runtime.block_on(remote_materialize(
            &server, views, window, engine, &progress,
        ))?,
    };
    bar.finish_and_clear();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"views": reports}))?
        );
        return Ok(());
    }
    if reports.is_empty() {
        println!("No online feature views to materialize.");
    }
    for r in &reports {
        print_report(r);
    }
    Ok(())
}

/// Materializes through the server, following its progress.
async fn remote_materialize(
    server: &Server,
    views: &[String],
    window: Window,
    engine: Option<EngineKind>,
    progress: &dyn Fn(Progress<'_>),
) -> Result<Vec<ViewReport>> {
    let engine = engine.map(|e| e.to_string()).unwrap_or_default();
    let mut client = pb::materialization_service_client::MaterializationServiceClient::new(
        server.channel.clone(),
    );
    let stream = match window {
        Window::Range { start, end } => {
            client
                .materialize(pb::MaterializeRequest {
                    views: views.to_vec(),
                    start_nanos: start,
                    end_nanos: end,
                    engine,
                })
                .await
        }
        Window::Incremental { end, lookback } => {
            client
                .materialize_incremental(pb::MaterializeIncrementalRequest {
                    views: views.to_vec(),
                    end_nanos: end,
                    lookback_nanos: i64::try_from(lookback.as_nanos()).unwrap_or(i64::MAX),
                    engine,
                })
                .await
        }
    }
    .map_err(|s| status_error(&s))?;
    let mut stream = stream.into_inner();
    let mut reports = Vec::new();
    while let Some(event) = stream.next().await {
        match event.map_err(|s| status_error(&s))?.event {
            Some(pb::materialize_event::Event::ViewStarted(v)) => progress(Progress::ViewStarted {
                view: &v.view,
                rows: v.rows,
            }),
            Some(pb::materialize_event::Event::RowsRead(n)) => progress(Progress::Rows(n)),
            Some(pb::materialize_event::Event::ViewDone(r)) => reports.push(view_report(r)),
            None => {}
        }
    }
    Ok(reports)
}

fn print_report(r: &ViewReport) {
    let secs = (r.elapsed_ms as f64 / 1000.0).max(1e-3);
    println!(
        "{}: {} -> {}: {} rows in window of {} scanned, {} written ({:.0} rows/s, {:.1} MB/s)",
        r.view,
        short_time(r.start),
        short_time(r.end),
        r.rows_in_window,
        r.rows_scanned,
        r.rows_written,
        r.rows_scanned as f64 / secs,
        r.bytes_written as f64 / secs / 1e6,
    );
    if r.skipped_null_key + r.skipped_null_timestamp > 0 {
        println!(
            "  skipped {} rows with a null join key and {} with a null event timestamp",
            r.skipped_null_key, r.skipped_null_timestamp
        );
    }
}

/// `quiver materialize status [--view V]`: the recorded runs, newest first.
pub fn materialize_status(
    repo: &Path,
    server: Option<&str>,
    view: Option<&str>,
    limit: usize,
    as_json: bool,
) -> Result<()> {
    let runtime = Server::runtime()?;
    let runs: Vec<RunRecord> = match Access::open(&runtime, repo, server)? {
        Access::Local(store) => store.runs(view, limit)?,
        Access::Remote(server) => {
            let mut client = pb::materialization_service_client::MaterializationServiceClient::new(
                server.channel.clone(),
            );
            let runs = runtime
                .block_on(client.list_runs(pb::ListRunsRequest {
                    view: view.unwrap_or_default().to_owned(),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                }))
                .map_err(|s| status_error(&s))?
                .into_inner()
                .runs;
            runs.into_iter()
                .map(run_record)
                .collect::<serde_json::Result<_>>()?
        }
    };
    let now = quiver_core::now_nanos();
    if as_json {
        let runs: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "view": r.view,
                    "trigger": r.trigger,
                    "incremental": r.incremental,
                    "started_at": time_text(r.started_at),
                    "finished_at": r.finished_at.map(time_text),
                    "window_start": time_text(r.window_start),
                    "window_end": time_text(r.window_end),
                    "outcome": r.outcome,
                    "rows_scanned": r.rows_scanned,
                    "rows_written": r.rows_written,
                    "duration_ms": r.duration_ms(now),
                    "attempt": r.attempt,
                    "holder": r.holder,
                    "error": r.error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"runs": runs}))?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("No materialization runs recorded.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.view.clone(),
                short_time(r.started_at),
                format!("{:?}", r.trigger).to_lowercase(),
                format!(
                    "{} -> {}",
                    short_time(r.window_start),
                    short_time(r.window_end)
                ),
                r.rows_written.to_string(),
                format!("{:.1}s", r.duration_ms(now) as f64 / 1000.0),
                match &r.error {
                    Some(e) => format!("{} ({e})", r.outcome.name()),
                    None => r.outcome.name().to_owned(),
                },
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "VIEW", "STARTED", "TRIGGER", "WINDOW", "ROWS", "TIME", "OUTCOME"
            ],
            &rows
        )
    );
    Ok(())
}

/// Parses `--key name=value` against the view's declared join-key types.
fn parse_keys(
    registry: &Registry,
    view: &str,
    keys: &[String],
) -> Result<Vec<(String, Vec<InputValue>)>> {
    let defs = registry.current()?.definitions;
    let join_keys = defs.join_keys(defs.view(view)?)?;
    let mut out = Vec::new();
    for text in keys {
        let (name, value) = text
            .split_once('=')
            .with_context(|| format!("--key '{text}' must look like name=value"))?;
        let key = join_keys
            .iter()
            .find(|k| k.name == name)
            .with_context(|| format!("feature view '{view}' has no join key '{name}'"))?;
        let value = match key.key_type {
            KeyType::Int32 | KeyType::Int64 => {
                InputValue::Int(value.parse().with_context(|| {
                    format!("join key '{name}' is {}, got '{value}'", key.key_type)
                })?)
            }
            KeyType::String => InputValue::String(value.to_owned()),
            KeyType::Bytes => InputValue::Bytes(value.as_bytes().to_vec()),
        };
        out.push((name.to_owned(), vec![value]));
    }
    Ok(out)
}

/// A value as JSON: numbers, strings, lists; timestamps as RFC 3339; bytes as hex.
pub fn value_json(v: &FeatureValue<'_>) -> Value {
    match v {
        FeatureValue::Null => Value::Null,
        FeatureValue::Bool(b) => json!(b),
        FeatureValue::Int32(x) => json!(x),
        FeatureValue::Int64(x) => json!(x),
        // The shortest decimal that round-trips the f32, not its widened f64 digits.
        FeatureValue::Float32(x) => x
            .to_string()
            .parse::<f64>()
            .map_or(Value::Null, |v| json!(v)),
        FeatureValue::Float64(x) => json!(x),
        FeatureValue::String(s) => json!(s),
        FeatureValue::Bytes(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        FeatureValue::Timestamp(t) => json!(time_text(t.saturating_mul(1_000))),
        FeatureValue::List(items) => Value::Array(items.iter().map(value_json).collect()),
    }
}

/// One answered feature of `quiver online get`: name, value as JSON, status, event time.
type GotFeature = (String, Value, FieldStatus, Option<i64>);

/// `quiver online get --view V --key k=v ...`.
pub fn online_get(
    repo: &Path,
    registry: &Registry,
    server: Option<&str>,
    view: &str,
    keys: &[String],
    as_json: bool,
) -> Result<()> {
    let entities = parse_keys(registry, view, keys)?;
    let spec = FeatureSpec::Refs(vec![format!("{view}:*")]);
    let runtime = Server::runtime()?;
    let got: Vec<GotFeature> = match Access::open(&runtime, repo, server)? {
        Access::Local(store) => runtime.block_on(store.read_online(
            &quiver_ops::Caller::Trusted,
            "cli",
            spec,
            false,
            &entities,
            |_, read| {
                read.features()
                    .iter()
                    .enumerate()
                    .map(|(c, f)| {
                        let Cell {
                            value,
                            status,
                            event_ts,
                        } = read.cell(c, 0)?;
                        Ok((f.output_name.clone(), value_json(&value), status, event_ts))
                    })
                    .collect::<Result<_, quiver_ops::OpsError>>()
            },
        ))?,
        Access::Remote(server) => runtime.block_on(remote_get(&server, view, entities))?,
    };
    if as_json {
        let features: Vec<Value> = got
            .iter()
            .map(|(name, value, status, event)| {
                json!({
                    "name": name,
                    "value": value,
                    "status": status,
                    "event_timestamp": event.map(time_text),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"view": view, "features": features}))?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = got
        .iter()
        .map(|(name, value, status, event)| {
            let value = match value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            vec![
                name.clone(),
                value,
                serde_json::to_value(status)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                event.map(time_text).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["FEATURE", "VALUE", "STATUS", "EVENT TIME"], &rows)
    );
    Ok(())
}

/// `online get` through the server: every feature of the view for one key.
async fn remote_get(
    server: &Server,
    view: &str,
    entities: Vec<(String, Vec<InputValue>)>,
) -> Result<Vec<GotFeature>> {
    let key_value = |v: &InputValue| pb::Value {
        kind: Some(match v {
            InputValue::Int(i) => pb::value::Kind::Int64Value(*i),
            InputValue::Bytes(b) => pb::value::Kind::BytesValue(b.clone()),
            other => pb::value::Kind::StringValue(match other {
                InputValue::String(s) => s.clone(),
                _ => String::new(),
            }),
        }),
    };
    let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel.clone());
    let response = client
        .get_online_features(pb::GetOnlineFeaturesRequest {
            features: Some(pb::get_online_features_request::Features::FeatureRefs(
                pb::FeatureList {
                    refs: vec![format!("{view}:*")],
                },
            )),
            entities: entities
                .iter()
                .map(|(name, values)| pb::Column {
                    name: name.clone(),
                    values: values.iter().map(key_value).collect(),
                })
                .collect(),
            full_feature_names: false,
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    Ok(response
        .features
        .iter()
        .map(|f| {
            let status = match pb::FieldStatus::try_from(f.statuses[0]) {
                Ok(pb::FieldStatus::Present) => FieldStatus::Present,
                Ok(pb::FieldStatus::NullValue) => FieldStatus::NullValue,
                Ok(pb::FieldStatus::OutsideMaxAge) => FieldStatus::OutsideMaxAge,
                _ => FieldStatus::NotFound,
            };
            let event = (f.event_timestamps_micros[0] != 0)
                .then(|| f.event_timestamps_micros[0].saturating_mul(1_000));
            (
                f.name.clone(),
                crate::remote::value_json(&f.values[0]),
                status,
                event,
            )
        })
        .collect())
}

/// `quiver online stats`.
pub fn online_stats(repo: &Path, server: Option<&str>, as_json: bool) -> Result<()> {
    let runtime = Server::runtime()?;
    let (stats, watermarks) = match Access::open(&runtime, repo, server)? {
        Access::Local(store) => store.stats()?,
        Access::Remote(server) => {
            let mut client = pb::online_store_service_client::OnlineStoreServiceClient::new(
                server.channel.clone(),
            );
            let r = runtime
                .block_on(client.get_stats(pb::GetStatsRequest {}))
                .map_err(|s| status_error(&s))?
                .into_inner();
            (
                quiver_online::StoreStats {
                    estimated_rows: r.estimated_rows,
                    disk_bytes: r.disk_bytes,
                    memory_bytes: r.memory_bytes,
                    pending_compaction_bytes: r.pending_compaction_bytes,
                    running_compactions: r.running_compactions,
                    block_cache_hits: r.block_cache_hits,
                    block_cache_misses: r.block_cache_misses,
                },
                r.watermarks
                    .into_iter()
                    .map(|w| (w.view, w.watermark_nanos))
                    .collect(),
            )
        }
    };
    let watermarks: Vec<(String, Option<String>)> = watermarks
        .into_iter()
        .map(|(v, w)| (v, w.map(time_text)))
        .collect();
    if as_json {
        return crate::print_json(&json!({
            "stats": stats,
            "watermarks": watermarks.iter().map(|(v, w)| json!({"view": v, "watermark": w})).collect::<Vec<_>>(),
        }));
    }
    println!(
        "estimated rows: {}\ndisk bytes: {}\nmemory bytes: {}",
        stats.estimated_rows, stats.disk_bytes, stats.memory_bytes
    );
    let rows: Vec<Vec<String>> = watermarks
        .into_iter()
        .map(|(v, w)| vec![v, w.unwrap_or_else(|| "-".into())])
        .collect();
    print!("{}", output::table(&["VIEW", "WATERMARK"], &rows));
    Ok(())
}

/// `quiver status`: every online view's freshness, rows and last run; `Ok(true)` when a view
/// is stale.
pub fn status(repo: &Path, server: Option<&str>, as_json: bool) -> Result<bool> {
    let runtime = Server::runtime()?;
    let report = match Access::open(&runtime, repo, server)? {
        Access::Local(store) => store.status(&quiver_ops::Caller::Trusted)?,
        Access::Remote(server) => {
            let mut client = pb::online_store_service_client::OnlineStoreServiceClient::new(
                server.channel.clone(),
            );
            let response = runtime
                .block_on(client.get_status(pb::GetStatusRequest {}))
                .map_err(|s| status_error(&s))?
                .into_inner();
            status_report(response).context("the server's status answer")?
        }
    };
    let age = |t: i64| {
        quiver_core::format_duration(Duration::from_nanos(
            u64::try_from(report.now.saturating_sub(t)).unwrap_or(0),
        ))
    };
    if as_json {
        let views: Vec<Value> = report
            .views
            .iter()
            .map(|v| {
                json!({
                    "view": v.view,
                    "state": v.state.name(),
                    "freshness": v.freshness.map(quiver_core::format_duration),
                    "newest_event": v.newest_event_ts.map(time_text),
                    "age_seconds": v.newest_event_ts.map(|t| report.now.saturating_sub(t) as f64 / 1e9),
                    "rows": v.rows,
                    "last_run": v.last_run.as_ref().map(|r| json!({
                        "id": r.id,
                        "outcome": r.outcome.name(),
                        "started_at": time_text(r.started_at),
                        "error": r.error,
                    })),
                    "last_success": v.last_success.map(time_text),
                })
            })
            .collect();
        crate::print_json(&json!({
            "registry_version": report.version,
            "now": time_text(report.now),
            "stale": report.any_stale(),
            "views": views,
        }))?;
    } else {
        let rows: Vec<Vec<String>> = report
            .views
            .iter()
            .map(|v| {
                let dash = || "-".to_owned();
                vec![
                    v.view.clone(),
                    v.state.name().to_owned(),
                    v.newest_event_ts.map_or_else(dash, age),
                    v.freshness.map_or_else(dash, quiver_core::format_duration),
                    v.rows.to_string(),
                    v.last_run.as_ref().map_or_else(dash, |r| {
                        format!("{} {}", r.outcome.name(), short_time(r.started_at))
                    }),
                    v.last_success.map_or_else(dash, age),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(
                &[
                    "VIEW",
                    "STATE",
                    "AGE",
                    "FRESHNESS",
                    "ROWS",
                    "LAST RUN",
                    "SINCE SUCCESS"
                ],
                &rows
            )
        );
    }
    Ok(report.any_stale())
}

/// `quiver online backup DIR`.
pub fn online_backup(repo: &Path, server: Option<&str>, dir: &Path) -> Result<()> {
    let dir = std::path::absolute(dir)?;
    if dir.exists() {
        bail!(
            "{} already exists; choose a new folder for the backup",
            dir.display()
        );
    }
    let runtime = Server::runtime()?;
    match Access::open(&runtime, repo, server)? {
        Access::Local(store) => {
            store.backup(&dir)?;
            println!(
                "Backed up {} to {}.",
                store.store().location(),
                dir.display()
            );
        }
        Access::Remote(server) => {
            let mut client = pb::online_store_service_client::OnlineStoreServiceClient::new(
                server.channel.clone(),
            );
            runtime
                .block_on(client.backup(pb::BackupRequest {
                    dir: dir.display().to_string(),
                }))
                .map_err(|s| status_error(&s))?;
            println!(
                "Backed up the online store of {} to {}.",
                server.describe(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// `quiver online restore DIR`: refused while any process holds the store.
pub fn online_restore(repo: &Path, config: &RepoConfig, dir: &Path) -> Result<()> {
    let Some(path) = config.online_store_path(repo) else {
        bail!(
            "the online store of {} is a Redis deployment, restored with Redis's own tools (RDB or AOF files); `quiver online restore` restores embedded stores",
            repo.display()
        );
    };
    let runtime = Server::runtime()?;
    if let Some(server) = running_server(&runtime, repo, config) {
        bail!(
            "{} holds the online store {}; stop it, then restore (a restore under a running server would lose what it writes)",
            server.describe(),
            path.display()
        );
    }
    RocksDbStore::restore(dir, &path)?;
    println!("Restored {} from {}.", path.display(), dir.display());
    // Opening the store makes the current registry version current on it: rows of view
    // generations it no longer serves (views removed or re-created since the backup) go.
    let store = quiver_ops::FeatureStore::open(repo, quiver_ops::StoreOptions::default())?;
    for id in &store.opened().deleted {
        println!(
            "Dropped the backup's rows of feature view '{}' (generation {}): registry version {} no longer serves them (the view was removed or re-created after the backup).",
            id.view(),
            id.generation(),
            store.opened().version
        );
    }
    Ok(())
}
