//! Online reads: statuses, composite and mixed-type keys, request errors.

use quiver_core::{FeatureRef, KeyValue};
use quiver_online::{FeatureValue, FieldStatus, ReadPlan, Window, read_online_features};

use crate::support::{HOUR, On, Repo, StatRow, T0, stat};

fn statuses_present_null_not_found_and_outside_max_age(on: &On) {
    let repo = Repo::new(
        on,
        &[vec![
            stat(1, T0, T0, 0.1),
            StatRow {
                rate: None,
                ..stat(2, T0, T0, 0.0)
            },
            stat(3, T0 - 2 * HOUR, T0, 0.3),
        ]],
    );
    repo.materialize(
        &[],
        Window::Range {
            start: i64::MIN,
            end: T0,
        },
    );
    let got = repo.rates(&[1, 2, 3, 4, 1], T0 + 10);
    assert_eq!(got[0], (Some(0.1), FieldStatus::Present, Some(T0)));
    assert_eq!(got[1], (None, FieldStatus::NullValue, Some(T0)));
    assert_eq!(
        got[2],
        (Some(0.3), FieldStatus::OutsideMaxAge, Some(T0 - 2 * HOUR)),
        "value still returned"
    );
    assert_eq!(got[3], (None, FieldStatus::NotFound, None));
    assert_eq!(
        got[4], got[0],
        "duplicate keys are answered twice, in order"
    );
    // Exactly at the ttl boundary the row is still fresh.
    assert_eq!(repo.rates(&[1], T0 + HOUR)[0].1, FieldStatus::Present);
    assert_eq!(
        repo.rates(&[1], T0 + HOUR + 1)[0].1,
        FieldStatus::OutsideMaxAge
    );
}

fn composite_mixed_type_keys_in_any_order(on: &On) {
    let repo = Repo::new(on, &[vec![stat(1, T0, T0, 0.1)]]);
    repo.materialize(&["driver_zone"], Window::Range { start: T0, end: T0 });
    let features = repo
        .defs
        .resolve(&[FeatureRef::parse("driver_zone:demand").unwrap()], true)
        .unwrap();
    // Keys in another order than declared; zone_id (int32) sent as a plain integer.
    let keys = vec![
        (
            "city".to_owned(),
            vec![
                KeyValue::String("paris".into()),
                KeyValue::String("rome".into()),
                KeyValue::String("rome".into()),
            ],
        ),
        (
            "zone_id".to_owned(),
            vec![KeyValue::Int(7), KeyValue::Int(7), KeyValue::Int(8)],
        ),
        (
            "driver_id".to_owned(),
            vec![KeyValue::Int(1), KeyValue::Int(2), KeyValue::Int(2)],
        ),
    ];
    let plan = ReadPlan::new(&repo.defs, &repo.generations(), features).unwrap();
    let result =
        futures::executor::block_on(read_online_features(repo.store.as_ref(), &plan, &keys, T0))
            .unwrap();
    assert_eq!(result.features()[0].output_name, "driver_zone__demand");
    assert_eq!(result.cell(0, 0).unwrap().value, FeatureValue::Float64(1.5));
    assert_eq!(result.cell(0, 1).unwrap().status, FieldStatus::NullValue);
    assert_eq!(result.cell(0, 2).unwrap().status, FieldStatus::NotFound);
    // What was answered, per view and status (present, null, not found, outside max age).
    assert_eq!(
        result.answered().collect::<Vec<_>>(),
        vec![("driver_zone", [1, 1, 1, 0])]
    );
}

fn bad_requests_are_errors_naming_the_key(on: &On) {
    let repo = Repo::new(on, &[vec![stat(1, T0, T0, 0.1)]]);
    let features = repo
        .defs
        .resolve(&[FeatureRef::parse("driver_stats:*").unwrap()], false)
        .unwrap();
    let plan = ReadPlan::new(&repo.defs, &repo.generations(), features).unwrap();
    let read = |keys: Vec<(String, Vec<KeyValue>)>| {
        futures::executor::block_on(read_online_features(repo.store.as_ref(), &plan, &keys, T0))
            .unwrap_err()
            .to_string()
    };
    let err = read(vec![(
        "driver_id".into(),
        vec![KeyValue::String("1".into())],
    )]);
    assert!(
        err.contains("join key 'driver_id': expected int64, got string"),
        "{err}"
    );
    let err = read(vec![("rider_id".into(), vec![KeyValue::Int(1)])]);
    assert!(err.contains("missing join key 'driver_id'"), "{err}");
    let err = read(vec![
        ("driver_id".into(), vec![KeyValue::Int(1)]),
        ("zone_id".into(), vec![KeyValue::Int(1)]),
    ]);
    assert!(err.contains("unknown join key 'zone_id'"), "{err}");
    let err = read(vec![
        ("driver_id".into(), vec![KeyValue::Int(1)]),
        ("driver_id".into(), vec![KeyValue::Int(1)]),
    ]);
    assert!(err.contains("given twice"), "{err}");
}

fn plans_refuse_offline_views_and_stale_features(on: &On) {
    let repo = Repo::new(on, &[vec![stat(1, T0, T0, 0.1)]]);
    let features = repo
        .defs
        .resolve(&[FeatureRef::parse("driver_stats:*").unwrap()], false)
        .unwrap();
    let mut offline = repo.defs.clone();
    offline
        .feature_views
        .get_mut("driver_stats")
        .unwrap()
        .online = false;
    let err = ReadPlan::new(&offline, &repo.generations(), features.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("feature view 'driver_stats' is not online"),
        "{err}"
    );

    // Features resolved against another version whose view lost a feature.
    let mut changed = repo.defs.clone();
    changed
        .feature_views
        .get_mut("driver_stats")
        .unwrap()
        .features
        .remove(0);
    let err = ReadPlan::new(&changed, &repo.generations(), features)
        .unwrap_err()
        .to_string();
    assert!(err.contains("driver_stats"), "{err}");
}

on_every_backend!(
    statuses_present_null_not_found_and_outside_max_age,
    composite_mixed_type_keys_in_any_order,
    bad_requests_are_errors_naming_the_key,
    plans_refuse_offline_views_and_stale_features,
);
