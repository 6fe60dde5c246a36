//! Plans: added, changed and removed objects, with breaking changes flagged.

use quiver_core::{Definitions, ObjectKind, Ttl, ValueType};
use quiver_registry::{Action, Plan};

use crate::support::{TestRepo, VALID};

fn defs() -> Definitions {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID);
    repo.load().unwrap()
}

#[test]
fn first_apply_adds_everything_and_same_definitions_change_nothing() {
    let d = defs();
    let plan = Plan::between(&Definitions::default(), &d);
    assert_eq!(plan.counts(), (6, 0, 0));
    assert!(Plan::between(&d, &d).is_empty());
}

#[test]
fn field_changes_are_described_and_non_breaking() {
    let old = defs();
    let mut new = old.clone();
    let view = new.feature_views.get_mut("driver_stats").unwrap();
    view.ttl = "2d".parse::<Ttl>().unwrap();
    view.description = "better".into();
    let plan = Plan::between(&old, &new);
    assert_eq!(plan.counts(), (0, 1, 0));
    let c = &plan.changes[0];
    assert_eq!(
        (c.kind, c.name.as_str(), c.action),
        (ObjectKind::FeatureView, "driver_stats", Action::Changed)
    );
    assert!(
        c.details.contains(&"ttl: 1d -> 2d".to_owned()),
        "{:?}",
        c.details
    );
    assert!(c.breaking.is_empty());
}

#[test]
fn type_key_and_removal_changes_are_breaking() {
    let old = defs();
    let mut new = old.clone();
    let view = new.feature_views.get_mut("driver_stats").unwrap();
    view.features[0].value_type = "float64".parse::<ValueType>().unwrap();
    view.features.pop();
    new.entities.get_mut("place").unwrap().join_keys.pop();
    new.feature_views.remove("driver_place");
    new.feature_services
        .get_mut("model_a")
        .unwrap()
        .features
        .pop();

    let plan = Plan::between(&old, &new);
    let breaking: Vec<String> = plan
        .breaking()
        .flat_map(|c| {
            c.breaking
                .iter()
                .map(move |b| format!("{} {}: {b}", c.kind, c.name))
        })
        .collect();
    for expected in [
        "entity place: join keys changed: region: string, zone: int32 -> region: string",
        "feature view driver_stats: feature 'conv_rate' type changed: float32 -> float64",
        "feature view driver_stats: feature 'avg_daily_trips' removed",
        "feature view driver_place: used by feature service 'model_a'",
        "feature service model_a: feature 'driver_place:conv_rate' removed from the service",
    ] {
        assert!(
            breaking.iter().any(|b| b == expected),
            "missing {expected:?} in {breaking:#?}"
        );
    }
    assert_eq!(plan.counts(), (0, 3, 1));
}

#[test]
fn removing_a_definition_from_the_files_removes_it() {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID);
    let before = repo.load().unwrap();
    repo.write(
        "features.yaml",
        &VALID[..VALID.find("feature_services:").unwrap()],
    );
    let after = repo.load().unwrap();
    let plan = Plan::between(&before, &after);
    assert_eq!(plan.counts(), (0, 0, 1));
    assert_eq!(plan.changes[0].kind, ObjectKind::FeatureService);
}
