//! `quiver materialize`, `quiver materialize-incremental` and `quiver online ...`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use quiver_core::{Definitions, FeatureRef, KeyType, KeyValue, parse_duration, parse_time};
use quiver_online::{
    Cell, FeatureValue, OnlineStore, Progress, ReadPlan, RocksDbOptions, RocksDbStore, ViewReport,
    Window, layout_fingerprint, materialize, now_micros, read_online_features,
};
use quiver_registry::RepoConfig;
use serde_json::{Value, json};

use crate::output;

/// Opens the repository's online store and tells it the views' ttls.
pub fn open_store(
    repo: &Path,
    config: &RepoConfig,
    defs: Option<&Definitions>,
) -> Result<RocksDbStore> {
    let path = config.online_store_path(repo);
    let options = RocksDbOptions {
        block_cache_bytes: usize::try_from(config.online_store.block_cache_mb << 20)
            .unwrap_or(usize::MAX),
    };
    let store = RocksDbStore::open(&path, &options)?;
    if let Some(defs) = defs {
        store.set_ttls(
            &defs.project,
            defs.feature_views.values().map(|v| {
                (
                    v.name.as_str(),
                    i64::try_from(v.ttl.as_duration().as_micros()).unwrap_or(i64::MAX),
                )
            }),
        );
    }
    Ok(store)
}

fn micros(text: &str) -> Result<i64> {
    Ok(parse_time(text)?.timestamp_micros())
}

pub fn time_text(us: i64) -> String {
    match us {
        i64::MIN => "the beginning".into(),
        _ => chrono::DateTime::from_timestamp_micros(us).map_or_else(
            || us.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
    }
}

/// Runs a materialization with a progress bar (hidden with `--json` or off a terminal).
pub fn run_materialize(
    repo: &Path,
    config: &RepoConfig,
    defs: &Definitions,
    views: &[String],
    window: Window,
    as_json: bool,
) -> Result<()> {
    let store = open_store(repo, config, Some(defs))?;
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
    let reports = materialize(
        &store,
        defs,
        &config.data_root(repo),
        views,
        window,
        &progress,
    )?;
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

fn print_report(r: &ViewReport) {
    let secs = (r.elapsed_ms as f64 / 1000.0).max(1e-3);
    println!(
        "{}: {} -> {}: {} rows in window of {} scanned, {} written ({:.0} rows/s, {:.1} MB/s)",
        r.view,
        time_text(r.start),
        time_text(r.end),
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

/// The window of `quiver materialize START END`.
pub fn range_window(start: &str, end: &str) -> Result<Window> {
    let (start, end) = (micros(start)?, micros(end)?);
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
        end: micros(end)?,
        lookback: lookback
            .map(parse_duration)
            .transpose()?
            .unwrap_or(Duration::ZERO),
    })
}

/// Parses `--key name=value` against the view's declared join-key types.
fn parse_keys(
    defs: &Definitions,
    view: &str,
    keys: &[String],
) -> Result<Vec<(String, Vec<KeyValue>)>> {
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
            KeyType::Int32 | KeyType::Int64 => KeyValue::Int(value.parse().with_context(|| {
                format!("join key '{name}' is {}, got '{value}'", key.key_type)
            })?),
            KeyType::String => KeyValue::String(value.to_owned()),
            KeyType::Bytes => KeyValue::Bytes(value.as_bytes().to_vec()),
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
        FeatureValue::Timestamp(t) => json!(time_text(*t)),
        FeatureValue::List(items) => Value::Array(items.iter().map(value_json).collect()),
    }
}

/// `quiver online get --view V --key k=v ...`.
pub fn online_get(
    repo: &Path,
    config: &RepoConfig,
    defs: &Definitions,
    view: &str,
    keys: &[String],
    as_json: bool,
) -> Result<()> {
    let entities = parse_keys(defs, view, keys)?;
    let plan = ReadPlan::new(
        defs,
        defs.resolve(&[FeatureRef::parse(&format!("{view}:*"))?], false)?,
    )?;
    let features = plan.features();
    let store = open_store(repo, config, Some(defs))?;
    let result = read_online_features(&store, &plan, &entities, now_micros())?;
    let cells: Vec<Cell<'_>> = (0..features.len())
        .map(|c| result.cell(c, 0))
        .collect::<Result<_, _>>()?;
    if as_json {
        let features: Vec<Value> = features
            .iter()
            .zip(&cells)
            .map(|(f, c)| {
                json!({
                    "name": f.output_name,
                    "value": value_json(&c.value),
                    "status": c.status,
                    "event_timestamp": c.event_ts.map(time_text),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"view": view, "features": features}))?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = features
        .iter()
        .zip(&cells)
        .map(|(f, c)| {
            let value = match value_json(&c.value) {
                Value::String(s) => s,
                v => v.to_string(),
            };
            vec![
                f.output_name.clone(),
                value,
                serde_json::to_value(c.status)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                c.event_ts.map(time_text).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["FEATURE", "VALUE", "STATUS", "EVENT TIME"], &rows)
    );
    Ok(())
}

/// Deletes the online data of views an apply removed, took offline or re-keyed / re-typed.
pub fn delete_stale_views(
    repo: &Path,
    config: &RepoConfig,
    old: &Definitions,
    new: &Definitions,
) -> Result<Vec<String>> {
    let store_path = config.online_store_path(repo);
    if !store_path.exists() {
        return Ok(Vec::new());
    }
    let stale: Vec<String> = old
        .feature_views
        .values()
        .filter(|v| v.online)
        .filter(|v| match new.feature_views.get(&v.name) {
            None => true,
            Some(n) => {
                !n.online
                    || old.join_keys(v).ok() != new.join_keys(n).ok()
                    || layout_fingerprint(&n.features) != layout_fingerprint(&v.features)
            }
        })
        .map(|v| v.name.clone())
        .collect();
    if stale.is_empty() {
        return Ok(stale);
    }
    let store = open_store(repo, config, None)?;
    for view in &stale {
        store.delete_view(&old.project, view)?;
    }
    Ok(stale)
}
