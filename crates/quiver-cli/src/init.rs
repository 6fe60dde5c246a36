//! `quiver init`: scaffold a runnable example feature repository with sample Parquet data.
//!
//! The example has drivers (int64 key), customers (string key) and a composite-key view over
//! both; its data covers the last week up to the current hour, with nulls, late-arriving rows
//! (created well after their event time) and corrections (a second row for the same event time
//! with a later created time).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ENTITIES_YAML: &str = r#"# Entities: the things features describe, with typed join keys.
entities:
  - name: driver
    description: A driver on the platform.
    join_keys:
      - {name: driver_id, type: int64}
  - name: customer
    description: A rider.
    join_keys:
      - {name: customer_id, type: string}
"#;

const FEATURES_YAML: &str = r#"# Sources, feature views and feature services.
sources:
  - name: driver_stats_source
    path: data/driver_hourly_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {trips: avg_daily_trips}
  - name: customer_profile_source
    path: data/customer_profile.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - name: driver_customer_source
    path: data/driver_customer_trips   # a folder of Parquet files
    timestamp_field: event_timestamp

feature_views:
  - name: driver_hourly_stats
    description: Hourly driver statistics.
    owner: ml-platform@example.com
    entities: [driver]
    source: driver_stats_source
    ttl: 1d
    freshness: 2h   # `quiver status` fails when the newest online row is older
    features:
      - {name: conv_rate, type: float32, description: Share of offers accepted.}
      - {name: acc_rate, type: float32}
      - {name: avg_daily_trips, type: int64}
    tags: {team: drivers}
  - name: customer_profile
    entities: [customer]
    source: customer_profile_source
    ttl: 2d
    features:
      - {name: current_balance, type: float64}
      - {name: lifetime_trip_count, type: int64}
      - {name: avg_passenger_count, type: float64}
  - name: driver_customer_trips
    description: What a driver and a customer did together (a composite key).
    entities: [driver, customer]
    source: driver_customer_source
    ttl: 7d
    features:
      - {name: trips_together, type: int64}
      - {name: last_rating, type: float32}

feature_services:
  - name: driver_activity
    description: Features of the ride-acceptance model.
    features:
      - driver_hourly_stats:*
      - customer_profile:current_balance
      - driver_customer_trips:trips_together
"#;

const DRIVERS: i64 = 10;
const CUSTOMERS: i64 = 20;
const DAYS: i64 = 7;

/// Creates the example repository in `dir` (which must not already hold a `quiver.yaml`).
pub fn init(dir: &Path, project: Option<&str>) -> Result<String> {
    if dir.join(quiver_registry::CONFIG_FILE).exists() {
        bail!(
            "{} already holds a feature repository (quiver.yaml exists)",
            dir.display()
        );
    }
    let project = match project {
        Some(p) => p.to_owned(),
        None => default_project_name(dir),
    };
    if !quiver_registry::is_valid_name(&project) {
        bail!(
            "invalid project name '{project}': use letters, digits, '_' and '-', starting with a letter (pass --project)"
        );
    }
    std::fs::create_dir_all(dir.join("data/driver_customer_trips"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let config = format!(
        "# Quiver feature repository settings.\nproject: {project}\n# Registry folder (versions of the definitions).\nregistry: registry\n# Source paths are relative to this folder.\ndata_root: .\nonline_store:\n  path: online_store\n  block_cache_mb: 64\n"
    );
    write(dir, "quiver.yaml", &config)?;
    write(dir, "entities.yaml", ENTITIES_YAML)?;
    write(dir, "features.yaml", FEATURES_YAML)?;
    write(
        dir,
        ".gitignore",
        "registry/\nonline_store/\nonline_store.lock\naudit.log\nfeast/\n",
    )?;

    let end = Utc::now().duration_trunc(TimeDelta::hours(1))?;
    let mut rng = StdRng::seed_from_u64(42);
    write_parquet(
        &dir.join("data/driver_hourly_stats.parquet"),
        &driver_stats(&mut rng, end)?,
    )?;
    write_parquet(
        &dir.join("data/customer_profile.parquet"),
        &customer_profile(&mut rng, end)?,
    )?;
    let trips = driver_customer_trips(&mut rng, end)?;
    let half = trips.num_rows() / 2;
    write_parquet(
        &dir.join("data/driver_customer_trips/part-0.parquet"),
        &trips.slice(0, half),
    )?;
    write_parquet(
        &dir.join("data/driver_customer_trips/part-1.parquet"),
        &trips.slice(half, trips.num_rows() - half),
    )?;
    Ok(project)
}

fn default_project_name(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if quiver_registry::is_valid_name(&cleaned) {
        cleaned
    } else {
        "quickstart".into()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn ts_array(values: &[DateTime<Utc>]) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from(
            values
                .iter()
                .map(DateTime::timestamp_micros)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    )
}

/// Hourly rows per driver; 3% arrive hours late, 2% get a later correction, some nulls.
fn driver_stats(rng: &mut StdRng, end: DateTime<Utc>) -> Result<RecordBatch> {
    let (mut ids, mut events, mut created) = (Vec::new(), Vec::new(), Vec::new());
    let (mut conv, mut acc, mut trips) = (Vec::new(), Vec::new(), Vec::new());
    for hour in (0..DAYS * 24).rev() {
        let event = end - TimeDelta::hours(hour);
        for driver in 1001..1001 + DRIVERS {
            let delay = if rng.random_bool(0.03) {
                TimeDelta::minutes(rng.random_range(120..360))
            } else {
                TimeDelta::minutes(rng.random_range(1..30))
            };
            let rate: f32 = rng.random_range(0.0..1.0);
            let mut rows = vec![(event + delay, rng.random_bool(0.98).then_some(rate))];
            if rng.random_bool(0.02) {
                rows.push((
                    event + delay + TimeDelta::hours(3),
                    Some((rate + 0.1).min(1.0)),
                ));
            }
            for (created_at, conv_rate) in rows {
                ids.push(driver);
                events.push(event);
                created.push(created_at);
                conv.push(conv_rate);
                acc.push(rng.random_bool(0.99).then(|| rng.random_range(0.5f32..1.0)));
                trips.push(rng.random_range(0i64..40));
            }
        }
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            ts_array(&events),
            ts_array(&created),
            Arc::new(Float32Array::from(conv)),
            Arc::new(Float32Array::from(acc)),
            Arc::new(Int64Array::from(trips)),
        ],
    )?)
}

/// One row per customer per day at a random hour, with some null passenger counts.
fn customer_profile(rng: &mut StdRng, end: DateTime<Utc>) -> Result<RecordBatch> {
    let (mut ids, mut events, mut created) = (Vec::new(), Vec::new(), Vec::new());
    let (mut balance, mut count, mut passengers) = (Vec::new(), Vec::new(), Vec::new());
    for day in (0..DAYS).rev() {
        for customer in 1001..1001 + CUSTOMERS {
            let event = end - TimeDelta::days(day) - TimeDelta::hours(rng.random_range(0..24));
            ids.push(format!("C{customer}"));
            events.push(event);
            created.push(event + TimeDelta::minutes(rng.random_range(1..90)));
            balance.push(rng.random_range(0.0..500.0f64));
            count.push(rng.random_range(0i64..1000));
            passengers.push(rng.random_bool(0.95).then(|| rng.random_range(1.0..4.0f64)));
        }
    }
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("current_balance", DataType::Float64, false),
        Field::new("lifetime_trip_count", DataType::Int64, false),
        Field::new("avg_passenger_count", DataType::Float64, true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(ids)),
            ts_array(&events),
            ts_array(&created),
            Arc::new(Float64Array::from(balance)),
            Arc::new(Int64Array::from(count)),
            Arc::new(Float64Array::from(passengers)),
        ],
    )?)
}

/// Every six hours, a few (driver, customer) pairs ride together.
fn driver_customer_trips(rng: &mut StdRng, end: DateTime<Utc>) -> Result<RecordBatch> {
    let (mut drivers, mut customers, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let (mut together, mut rating) = (Vec::new(), Vec::new());
    for slot in (0..DAYS * 4).rev() {
        let event = end - TimeDelta::hours(6 * slot);
        for _ in 0..8 {
            drivers.push(rng.random_range(1001..1001 + DRIVERS));
            customers.push(format!("C{}", rng.random_range(1001..1001 + CUSTOMERS)));
            events.push(event);
            together.push(rng.random_range(1i64..20));
            rating.push(rng.random_bool(0.9).then(|| rng.random_range(1.0f32..5.0)));
        }
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        ts_field("event_timestamp"),
        Field::new("trips_together", DataType::Int64, false),
        Field::new("last_rating", DataType::Float32, true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(drivers)),
            Arc::new(StringArray::from(customers)),
            ts_array(&events),
            Arc::new(Int64Array::from(together)),
            Arc::new(Float32Array::from(rating)),
        ],
    )?)
}
