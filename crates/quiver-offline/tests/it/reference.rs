//! The engine against a deliberately simple reference (for each entity row, scan every source
//! row) on random data full of ties, nulls, ttl boundaries, duplicate keys and empty inputs.

use proptest::prelude::*;
use quiver_offline::JoinOptions;

use crate::support::*;

/// The spec's rules, literally: candidates with the same key, `ts <= T`, `ts >= T - ttl`
/// (ttl > 0), `created <= T` (as_of_created); the greatest `(ts, created, file, row)` wins.
fn expected(
    sources: &[&[Row]],
    entity: &EntityRow,
    ttl: i64,
    as_of_created: bool,
    zone_key: bool,
) -> Option<i64> {
    let (id, t) = (entity.id?, entity.t?);
    let zone = if zone_key {
        Some(entity.zone.as_ref()?)
    } else {
        None
    };
    // ((event, created, file, row), value) of the best candidate so far.
    type Best = ((i64, i64, usize, usize), Option<i64>);
    let mut best: Option<Best> = None;
    for (f, rows) in sources.iter().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let (Some(rid), Some(ts)) = (row.id, row.ts) else {
                continue;
            };
            if rid != id || ts > t || (ttl > 0 && ts < t - ttl) {
                continue;
            }
            if zone.is_some_and(|z| row.zone.as_ref() != Some(z)) {
                continue;
            }
            let created = row.created.unwrap_or(i64::MIN);
            if as_of_created && created > t {
                continue;
            }
            let version = (ts, created, f, r);
            if best.as_ref().is_none_or(|(v, _)| *v < version) {
                best = Some((version, row.value));
            }
        }
    }
    best.and_then(|(_, v)| v)
}

fn maybe<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 6 => s.prop_map(Some)]
}

fn source_row() -> impl Strategy<Value = Row> {
    (
        maybe(0i64..5),
        maybe(prop_oneof![Just("a".to_owned()), Just("b".to_owned())]),
        maybe(0i64..20),
        maybe(0i64..25),
        maybe(-100i64..100),
    )
        .prop_map(|(id, zone, ts, created, value)| Row {
            id,
            zone,
            ts,
            created,
            value,
        })
}

fn entity_row() -> impl Strategy<Value = EntityRow> {
    (
        maybe(0i64..6),
        maybe(prop_oneof![Just("a".to_owned()), Just("b".to_owned())]),
        maybe(0i64..24),
    )
        .prop_map(|(id, zone, t)| EntityRow { id, zone, t })
}

/// One randomized case of the join against the reference.
#[derive(Debug, Clone)]
struct ReferenceCase {
    stats_a: Vec<Row>,
    stats_b: Vec<Row>,
    zones: Vec<Row>,
    entities: Vec<EntityRow>,
    stats_ttl: i64,
    zones_ttl: i64,
    as_of_created: bool,
    row_group: usize,
    memory_limit: usize,
    threads: usize,
}

prop_compose! {
    fn reference_case()(
        stats_a in prop::collection::vec(source_row(), 0..25),
        stats_b in prop::collection::vec(source_row(), 0..25),
        zones in prop::collection::vec(source_row(), 0..25),
        entities in prop::collection::vec(entity_row(), 0..30),
        stats_ttl in prop_oneof![Just(0i64), Just(3), Just(8)],
        zones_ttl in prop_oneof![Just(0i64), Just(5)],
        as_of_created in any::<bool>(),
        row_group in 1usize..6,
        memory_limit in prop_oneof![Just(usize::MAX), Just(900usize), Just(2500)],
        threads in 1usize..3,
    ) -> ReferenceCase {
        ReferenceCase {
            stats_a, stats_b, zones, entities, stats_ttl, zones_ttl, as_of_created, row_group,
            memory_limit, threads,
        }
    }
}

fn engine_matches_the_reference(setup: Setup, case: ReferenceCase) -> Result<(), TestCaseError> {
    let ReferenceCase {
        stats_a,
        stats_b,
        zones,
        entities,
        stats_ttl,
        zones_ttl,
        as_of_created,
        row_group,
        memory_limit,
        threads,
    } = case;
    let dir = Data::new(setup);
    write_source(&dir.path().join("stats/a.parquet"), &stats_a, row_group);
    write_source(&dir.path().join("stats/b.parquet"), &stats_b, row_group);
    write_source(&dir.path().join("zones.parquet"), &zones, row_group);
    let defs = definitions(stats_ttl, zones_ttl);
    let options = JoinOptions {
        as_of_created,
        memory_limit,
        threads,
        batch_rows: 7,
        ..JoinOptions::default()
    };
    let out = join(
        &defs,
        &dir,
        &["stats:value", "zones:demand"],
        entity_table(&entities),
        options,
    )
    .unwrap();
    prop_assert_eq!(out.num_rows(), entities.len());
    let want_stats: Vec<Option<i64>> = entities
        .iter()
        .map(|e| expected(&[&stats_a, &stats_b], e, stats_ttl, as_of_created, false))
        .collect();
    let want_zones: Vec<Option<i64>> = entities
        .iter()
        .map(|e| expected(&[&zones], e, zones_ttl, as_of_created, true))
        .collect();
    prop_assert_eq!(ints(&out, "value"), want_stats);
    prop_assert_eq!(ints(&out, "demand"), want_zones);
    let labels: Vec<f64> = (0..entities.len()).map(|i| i as f64).collect();
    let got: Vec<f64> = out
        .column_by_name("label")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .values()
        .to_vec();
    prop_assert_eq!(got, labels);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn engine_matches_the_reference_on_disk(case in reference_case()) {
        engine_matches_the_reference(Setup::Disk, case)?;
    }

    #[test]
    fn engine_matches_the_reference_on_s3(case in reference_case()) {
        engine_matches_the_reference(Setup::S3, case)?;
    }
}

proptest! {
    // Each case is a few Spark jobs (about a second each on two cores).
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn engine_matches_the_reference_on_spark(case in reference_case()) {
        engine_matches_the_reference(Setup::Spark, case)?;
    }
}
