//! Materialization throughput: Quiver vs Feast's `materialize` into its default SQLite online
//! store, on the same Parquet file, in one run.
//!
//! `cargo build --workspace --all-targets && $CARGO_TARGET_DIR/debug/materialize-bench --rows 10000000 --feast-rows 1000000`
//!
//! Quiver runs at `--rows`; both run at `--feast-rows` (Feast needs minutes per million rows),
//! which gives the like-for-like ratio. Feast comes from PyPI into a venv
//! (benches/python/venv.sh).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use quiver_benches::{python_json, view_repo, write_view_source};
use quiver_online::Window;
use quiver_ops::MaterializeRequest;

/// Materialization benchmark.
#[derive(Parser)]
struct Args {
    /// Source rows for Quiver's large run.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Source rows for the side-by-side run with Feast (0 skips Feast).
    #[arg(long, default_value_t = 1_000_000)]
    feast_rows: usize,
    /// Distinct entity keys, as a fraction of rows.
    #[arg(long, default_value_t = 0.1)]
    key_ratio: f64,
    /// Features per row (half float64, half int64).
    #[arg(long, default_value_t = 20)]
    features: usize,
}

struct Run {
    engine: &'static str,
    rows: usize,
    seconds: f64,
    bytes: u64,
}

fn quiver_run(dir: &Path, parquet: &Path, features: usize) -> Result<Run> {
    let store = view_repo(dir, parquet, features)?;
    let started = Instant::now();
    let request = MaterializeRequest::manual(
        Vec::new(),
        Window::Range {
            start: i64::MIN,
            end: i64::MAX,
        },
    );
    let reports = store.materialize(&quiver_ops::Caller::Trusted, &request, &|_| {}, None)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Run {
        engine: "quiver",
        rows: usize::try_from(reports[0].rows_scanned)?,
        seconds,
        bytes: std::fs::metadata(parquet)?.len(),
    })
}

fn feast_run(dir: &Path, parquet: &Path, features: usize) -> Result<Run> {
    let feast = dir.join("feast");
    let features = features.to_string();
    let json = python_json(
        "feast_materialize.py",
        &[
            parquet.as_os_str(),
            feast.as_os_str(),
            features.as_ref(),
            "2023-12-01T00:00:00+00:00".as_ref(),
            "2024-03-01T00:00:00+00:00".as_ref(),
        ],
    )?;
    Ok(Run {
        engine: "feast (sqlite)",
        rows: json["rows"].as_u64().unwrap_or(0).try_into()?,
        seconds: json["seconds"].as_f64().unwrap_or(f64::NAN),
        bytes: std::fs::metadata(parquet)?.len(),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    let keys = |rows: usize| ((rows as f64 * args.key_ratio) as i64).max(1);

    let big = dir.path().join("big.parquet");
    eprintln!(
        "writing {} rows x {} features ...",
        args.rows, args.features
    );
    write_view_source(&big, args.rows, keys(args.rows), args.features)?;
    runs.push(quiver_run(&dir.path().join("big"), &big, args.features)?);

    if args.feast_rows > 0 {
        let small = dir.path().join("small.parquet");
        write_view_source(
            &small,
            args.feast_rows,
            keys(args.feast_rows),
            args.features,
        )?;
        runs.push(quiver_run(
            &dir.path().join("small"),
            &small,
            args.features,
        )?);
        eprintln!(
            "running Feast's materialize on {} rows ...",
            args.feast_rows
        );
        runs.push(feast_run(&dir.path().join("small"), &small, args.features)?);
    }

    println!(
        "\nMaterialization, {} features, distinct keys = {} x rows",
        args.features, args.key_ratio
    );
    println!("| engine | source rows | seconds | rows/s | MB/s (Parquet) |");
    println!("|---|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} |",
            r.engine,
            r.rows,
            r.seconds,
            r.rows as f64 / r.seconds,
            r.bytes as f64 / r.seconds / 1e6
        );
    }
    if let [_, q, f] = &runs[..] {
        println!(
            "\nQuiver / Feast throughput at {} rows: {:.0}x",
            f.rows,
            f.seconds / q.seconds
        );
    }
    Ok(())
}
