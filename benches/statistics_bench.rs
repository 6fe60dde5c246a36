//! Feature statistics throughput: `quiver monitor profile`'s computation (count, nulls,
//! min/max/mean/stddev, quantile, distinct and frequent-value sketches, every core) vs
//! DuckDB's `SUMMARIZE` on the same Parquet file, in one run, each timed `--runs` times
//! (median reported).
//!
//! `cargo build --release --workspace --all-targets && $CARGO_TARGET_DIR/release/statistics-bench --rows 10000000`
//!
//! DuckDB comes from PyPI into a venv (benches/python/venv.sh).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use quiver_benches::{python_json, view_repo, write_view_source};
use quiver_core::DataSelection;

/// Statistics benchmark.
#[derive(Parser)]
struct Args {
    /// Source rows.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Features per row (half float64, half int64).
    #[arg(long, default_value_t = 20)]
    features: usize,
    /// Timed runs per engine.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn duckdb(parquet: &Path, features: usize) -> Result<serde_json::Value> {
    let features = features.to_string();
    python_json(
        "duckdb_summarize.py",
        &[parquet.as_os_str(), features.as_ref()],
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let parquet = dir.path().join("stats.parquet");
    eprintln!(
        "writing {} rows x {} features ...",
        args.rows, args.features
    );
    write_view_source(
        &parquet,
        args.rows,
        (args.rows as i64 / 10).max(1),
        args.features,
    )?;
    let store = view_repo(dir.path(), &parquet, args.features)?;
    let defs = store.snapshot().defs.clone();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let window: DataSelection = "2023-01-01..2025-01-01".parse()?;
    let profiles = dir.path().join(quiver_ops::profile::PROFILES_FOLDER);

    let (mut quiver, mut duck) = (Vec::new(), Vec::new());
    let (mut ours, mut theirs) = (None, None);
    for run in 0..args.runs {
        eprintln!("run {} of {} ...", run + 1, args.runs);
        // Not the stored profile: every run reads the data.
        let _ = std::fs::remove_dir_all(&profiles);
        let started = Instant::now();
        let p = quiver_ops::profile::profile(
            &defs,
            store.sources(),
            "stats",
            &window,
            quiver_core::now_nanos(),
            threads,
        )?;
        quiver.push(started.elapsed().as_secs_f64());
        ours = Some(p);
        let d = duckdb(&parquet, args.features)?;
        duck.push(d["seconds"].as_f64().unwrap_or(f64::NAN));
        theirs = Some(d);
    }
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        bail!("--runs must be at least 1");
    };
    let rows = ours.profile.rows;
    let (q, d) = (median(quiver), median(duck));
    println!(
        "\nStatistics of {} features over {rows} rows ({:.0} MB of Parquet), {threads} threads, median of {} runs",
        args.features,
        std::fs::metadata(&parquet)?.len() as f64 / 1e6,
        args.runs
    );
    println!("| engine | seconds | rows/s | values/s |");
    println!("|---|---:|---:|---:|");
    for (engine, s) in [("quiver monitor profile", q), ("duckdb SUMMARIZE", d)] {
        println!(
            "| {engine} | {s:.2} | {:.0} | {:.0} |",
            rows as f64 / s,
            (rows as usize * args.features) as f64 / s
        );
    }
    println!("\nDuckDB / Quiver time: {:.2}x", d / q);
    let f0 = ours.profile.features[0].summary();
    let n = f0.numeric.context("f0 is numeric")?;
    let median_f0 = n
        .quantiles
        .iter()
        .find(|(q, _)| *q == 0.5)
        .map_or(f64::NAN, |(_, v)| *v);
    println!(
        "f0 (uniform on [0, 1)): mean {:.5} / {:.5}, p50 {:.5} / {:.5}, distinct {} / {} (Quiver / DuckDB)",
        n.mean,
        theirs["f0"]["avg"].as_f64().unwrap_or(f64::NAN),
        median_f0,
        theirs["f0"]["q50"].as_f64().unwrap_or(f64::NAN),
        f0.distinct.unwrap_or(0),
        theirs["f0"]["approx_unique"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(())
}
