//! `quiver training-set` (the join in-process) and `quiver serve`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use quiver_core::{Definitions, FeatureRef, ResolvedFeature};
use quiver_offline::{PointInTimeJoin, Progress, read_entity_file};
use quiver_ops::{FeatureStore, StoreOptions};
use quiver_server::{ServeOptions, serve, shutdown_signal};
use serde_json::json;

use crate::output;

/// What features a request names.
pub fn resolve_features(
    defs: &Definitions,
    features: &[String],
    service: Option<&str>,
    full_feature_names: bool,
) -> Result<Vec<ResolvedFeature>> {
    Ok(match (features.is_empty(), service) {
        (false, None) => {
            let refs = features
                .iter()
                .map(|f| f.parse::<FeatureRef>())
                .collect::<Result<Vec<_>, _>>()?;
            defs.resolve(&refs, full_feature_names)?
        }
        (true, Some(s)) => defs.resolve_service(s, full_feature_names)?,
        _ => bail!("give exactly one of --features and --service"),
    })
}

/// Runs `join` on the entity table in `entities` (on `spark` when given) and writes `out`.
pub fn training_set(
    join: &PointInTimeJoin<'_>,
    entities: &Path,
    out: &str,
    spark: Option<&quiver_spark::SparkEngine>,
    as_json: bool,
) -> Result<()> {
    let started = Instant::now();
    let table = read_entity_file(entities)?;

    let bar = output::progress_bar(
        as_json,
        "joining [{bar:30}] {human_pos}/{human_len} source rows {per_sec} {eta}",
    );
    let set = match spark {
        Some(spark) => spark.training_set(join, table, None)?,
        None => join.run(table, &|p| match p {
            Progress::Planned(n) => bar.inc_length(n),
            Progress::Scanned(n) => bar.inc(n),
        })?,
    };
    bar.finish_and_clear();

    let schema = set.schema();
    let mut batches = set.map(|b| {
        b.map_err(|e| quiver_source::SourceError::InvalidRows {
            source_name: "training set".into(),
            message: e.to_string(),
        })
    });
    let rows = join.sources().write_output(out, &schema, &mut batches)?;
    let secs = started.elapsed().as_secs_f64();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"rows": rows, "out": out, "seconds": secs}))?
        );
    } else {
        println!(
            "Wrote {rows} rows to {out} in {secs:.2} s ({:.0} rows/s).",
            rows as f64 / secs.max(1e-6)
        );
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM; it holds the repository's online store.
pub fn serve_repo(repo: &Path, store_options: StoreOptions, options: ServeOptions) -> Result<()> {
    let store = match FeatureStore::open(repo, store_options) {
        Ok(store) => Arc::new(store),
        Err(quiver_ops::OpsError::Online(quiver_online::OnlineError::Locked { path })) => {
            let holder = quiver_ops::Endpoint::read(&path)
                .map(|e| format!(" (quiver serve, pid {}, gRPC {})", e.pid, e.grpc))
                .unwrap_or_default();
            bail!(
                "the online store {} is held by another process{holder}; one server owns a store at a time",
                path.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let snapshot = store.snapshot();
        let (project, version) = (snapshot.defs.project.clone(), snapshot.version);
        let (http, flight) = if options.tls.is_some() {
            ("https", "grpc+tls")
        } else {
            ("http", "grpc")
        };
        serve(
            Arc::clone(&store),
            options,
            move |bound| {
                println!(
                    "Serving project '{project}' (registry version {version}).\nOnline gRPC: {}\nHTTP: {http}://{}",
                    bound.grpc, bound.http
                );
                if let Some(metrics) = bound.metrics {
                    println!("Metrics: {http}://{metrics}/metrics");
                }
                // Last: readers wait for this line.
                println!("Arrow Flight: {flight}://{}", bound.flight);
            },
            shutdown_signal(),
        )
        .await?;
        println!("Stopped.");
        anyhow::Ok(())
    })
}
