//! `quiver training-set` (the join in-process) and `quiver serve`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use quiver_core::{Definitions, FeatureRef, ResolvedFeature};
use quiver_offline::{JoinOptions, PointInTimeJoin, Progress, read_entity_file};
use quiver_registry::{Registry, RepoConfig};
use quiver_server::{Catalog, RepoContext, ServeOptions, serve, shutdown_signal};
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

/// Joins the features onto the entity table in `entities` and writes `out`.
pub fn training_set(
    data_root: &Path,
    defs: &Definitions,
    features: Vec<ResolvedFeature>,
    entities: &Path,
    out: &Path,
    options: JoinOptions,
    as_json: bool,
) -> Result<()> {
    let started = Instant::now();
    let table = read_entity_file(entities)?;

    let bar = output::progress_bar(
        as_json,
        "joining [{bar:30}] {human_pos}/{human_len} source rows {per_sec} {eta}",
    );
    let join = PointInTimeJoin::new(defs, data_root, features, options)?;
    let set = join.run(table, &|p| match p {
        Progress::Planned(n) => bar.inc_length(n),
        Progress::Scanned(n) => bar.inc(n),
    })?;
    bar.finish_and_clear();

    let rows = set.num_rows();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let tmp = out.with_extension("parquet.partial");
    let mut writer = ArrowWriter::try_new(
        File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        set.schema(),
        Some(props),
    )?;
    for batch in set {
        writer.write(&batch?)?;
    }
    writer.close()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"rows": rows, "out": out, "seconds": secs}))?
        );
    } else {
        println!(
            "Wrote {rows} rows to {} in {secs:.2} s ({:.0} rows/s).",
            out.display(),
            rows as f64 / secs.max(1e-6)
        );
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve_repo(repo: &Path, config: &RepoConfig, options: ServeOptions) -> Result<()> {
    let registry = Registry::open_local(&config.registry_path(repo), &config.project);
    let defs = registry.latest()?.map(|v| v.definitions);
    let store = Arc::new(crate::online::open_store(repo, config, defs.as_ref())?);
    let context = RepoContext {
        path: repo.to_path_buf(),
        config: config.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let catalog = Catalog::open(registry)?;
        let version = catalog.current().version;
        let project = config.project.clone();
        serve(
            Arc::clone(&catalog),
            store,
            context,
            options,
            move |bound| {
                println!(
                    "Serving project '{project}' (registry version {version}).\nOnline gRPC: {}\nHTTP: http://{}\nArrow Flight: grpc://{}",
                    bound.grpc, bound.http, bound.flight
                );
            },
            shutdown_signal(),
        )
        .await?;
        println!("Stopped.");
        anyhow::Ok(())
    })
}
