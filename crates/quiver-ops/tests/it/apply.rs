//! Applies and what a new version does to the online store, wherever it becomes current.

use quiver_online::{FieldStatus, Window};
use quiver_ops::MaterializeRequest;
use quiver_registry::RepoConfig;

use crate::support::{HOUR, LABELS, RATES, Repo, hour_ago};

fn materialize_all(repo: &Repo) {
    repo.store
        .materialize(
            &quiver_ops::Caller::Trusted,
            &MaterializeRequest::manual(
                Vec::new(),
                Window::Range {
                    start: i64::MIN,
                    end: i64::MAX,
                },
            ),
            &|_| {},
            None,
        )
        .unwrap();
}

#[test]
fn a_removed_view_added_again_never_serves_its_old_rows() {
    let repo = Repo::new(&[RATES, LABELS], &[(1, hour_ago(), 0.5, 3, 1.0)]);
    materialize_all(&repo);
    assert_eq!(repo.read("rates:rate", &[1])[0].1, FieldStatus::Present);

    repo.define(&[LABELS]);
    let removed = repo.apply();
    assert_eq!(removed.deleted_views, ["rates"]);
    repo.define(&[RATES, LABELS]);
    let added = repo.apply();
    assert!(added.deleted_views.is_empty(), "{:?}", added.deleted_views);
    assert_eq!(
        repo.read("rates:rate", &[1])[0].1,
        FieldStatus::NotFound,
        "the re-added view starts empty"
    );
    assert_eq!(
        repo.read("labels:label", &[1])[0].1,
        FieldStatus::Present,
        "an unchanged view keeps its rows"
    );
}

#[test]
fn a_version_applied_elsewhere_takes_effect_when_picked_up() {
    let repo = Repo::new(&[RATES, LABELS], &[(1, hour_ago(), 0.5, 3, 1.0)]);
    materialize_all(&repo);
    // Another process (a CLI apply) commits two versions while this one holds the store:
    // the view is removed, then added back.
    let registry = repo.store.registry();
    let config = RepoConfig::load(repo.path()).unwrap();
    let sources = quiver_source::Sources::new(repo.path());
    for views in [&[LABELS][..], &[RATES, LABELS][..]] {
        repo.define(views);
        let definitions =
            quiver_registry::load_definitions(repo.path(), &config, &sources).unwrap();
        quiver_ops::commit(
            registry,
            quiver_ops::ApplyRequest {
                definitions,
                based_on: quiver_ops::BaseVersion::Latest,
                author: "elsewhere".into(),
            },
        )
        .unwrap();
    }
    assert_eq!(repo.read("rates:rate", &[1])[0].1, FieldStatus::Present);
    let activation = repo.store.refresh().unwrap().unwrap();
    assert_eq!(activation.version, 3);
    assert_eq!(
        activation
            .deleted
            .iter()
            .map(quiver_online::ViewId::view)
            .collect::<Vec<_>>(),
        ["rates"],
        "the removal in between counts, though it was never current here"
    );
    assert_eq!(repo.read("rates:rate", &[1])[0].1, FieldStatus::NotFound);
    assert!(repo.store.refresh().unwrap().is_none());
}

#[test]
fn a_changed_ttl_changes_the_purge() {
    let rows = [
        (1, hour_ago() - 5 * HOUR, 0.5, 3, 1.0),
        (2, hour_ago(), 0.7, 4, 2.0),
    ];
    let (repo, rocks) = Repo::new(&[RATES], &rows).reopen_with_rocks();
    materialize_all(&repo);
    // ttl 2h: driver 1's row (6 h old) is older than twice the ttl once the version is current.
    repo.define(&[&RATES.replace("    source: stats\n", "    source: stats\n    ttl: 2h\n")]);
    let applied = repo.apply();
    assert!(
        applied.deleted_views.is_empty(),
        "a ttl change keeps the rows"
    );
    assert_eq!(
        repo.read("rates:rate", &[1])[0].1,
        FieldStatus::OutsideMaxAge
    );
    rocks.compact().unwrap();
    let got = repo.read("rates:rate", &[1, 2]);
    assert_eq!(got[0].1, FieldStatus::NotFound, "purged by the new ttl");
    assert_eq!(got[1].1, FieldStatus::Present);
}
