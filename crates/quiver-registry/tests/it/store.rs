//! The versioned registry: history, atomic create-if-absent versions, concurrent applies.

use std::sync::{Arc, Barrier};

use quiver_core::Definitions;
use quiver_registry::{
    Action, BlobStore, LocalBlobStore, ObjectBlobStore, Registry, RegistryError,
};
use quiver_storage::{ObjectStorage, ObjectUrl};
use quiver_testkit::on_disk_and_s3;
use quiver_testkit::s3::Place;
use tempfile::TempDir;

use crate::support::{TestRepo, VALID};

/// A registry location of a test's own: a local folder, or a fresh prefix of the test S3
/// server's bucket.
struct Location {
    dir: TempDir,
    url: Option<(Arc<ObjectStorage>, ObjectUrl)>,
}

impl Location {
    fn new(place: Place) -> Self {
        let dir = TempDir::new().unwrap();
        let url = (place == Place::S3).then(|| {
            let server = quiver_testkit::s3::shared_server();
            let storage = Arc::new(server.storage());
            // An empty folder uploaded: just a fresh prefix.
            let prefix = server.upload(&storage, dir.path(), "registry");
            (storage, ObjectUrl::parse(&prefix).unwrap().unwrap())
        });
        Self { dir, url }
    }

    fn blobs(&self) -> Box<dyn BlobStore> {
        match &self.url {
            Some((storage, url)) => {
                Box::new(ObjectBlobStore::new(Arc::clone(storage), url.clone()))
            }
            None => Box::new(LocalBlobStore::new(self.dir.path())),
        }
    }

    /// A new handle, as another process would open it.
    fn open(&self, project: &str) -> Registry {
        Registry::new(self.blobs(), project)
    }
}

fn valid_definitions() -> Definitions {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID);
    repo.load().unwrap()
}

fn versions_are_numbered_kept_and_readable(place: Place) {
    let at = Location::new(place);
    let registry = at.open("test");
    assert!(registry.latest().unwrap().is_none());
    assert!(matches!(registry.current(), Err(RegistryError::Empty(_))));

    let defs = valid_definitions();
    let v1 = registry.commit(None, defs.clone(), "alice").unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.author, "alice");
    assert!(v1.changes.iter().all(|c| c.action == Action::Added));

    let mut changed = defs.clone();
    changed.feature_services.clear();
    let v2 = registry.commit(Some(1), changed.clone(), "bob").unwrap();
    assert_eq!(v2.changes.len(), 1);
    assert_eq!(v2.changes[0].action, Action::Removed);

    // A second process (a new handle) sees every version, with its content.
    let reader = at.open("test");
    assert_eq!(reader.versions().unwrap(), [1, 2]);
    assert_eq!(reader.get(1).unwrap().definitions, defs);
    assert_eq!(reader.current().unwrap().definitions, changed);
    assert_eq!(reader.history().unwrap().len(), 2);
    assert!(matches!(
        reader.get(3),
        Err(RegistryError::UnknownVersion { version: 3, .. })
    ));

    // Projects are separate namespaces in one registry folder.
    assert!(at.open("other").latest().unwrap().is_none());
}

fn a_stale_apply_is_a_conflict_not_a_lost_update(place: Place) {
    let at = Location::new(place);
    let registry = at.open("test");
    let defs = valid_definitions();
    registry.commit(None, defs.clone(), "a").unwrap();
    registry
        .commit(
            Some(1),
            Definitions {
                project: "test".into(),
                ..Default::default()
            },
            "b",
        )
        .unwrap();
    let err = registry.commit(Some(1), defs, "c").unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Conflict {
                based_on: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("run plan again"), "{err}");
    assert_eq!(registry.versions().unwrap(), [1, 2]);
}

fn concurrent_applies_from_the_same_version_have_exactly_one_winner(place: Place) {
    for round in 0..20 {
        let at = Arc::new(Location::new(place));
        let defs = valid_definitions();
        at.open("test").commit(None, defs.clone(), "setup").unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (at, barrier) = (Arc::clone(&at), barrier.clone());
                let mut mine = defs.clone();
                mine.feature_services.clear();
                if i == 1 {
                    mine.feature_views.remove("driver_place");
                }
                std::thread::spawn(move || {
                    let registry = at.open("test");
                    let based_on = registry.latest_version().unwrap();
                    barrier.wait();
                    registry
                        .commit(based_on, mine.clone(), &format!("writer-{i}"))
                        .map(|v| (v, mine))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(RegistryError::Conflict { .. })))
            .count();
        assert_eq!(
            (winners.len(), conflicts),
            (1, 1),
            "round {round}: {results:?}"
        );
        let registry = at.open("test");
        assert_eq!(registry.versions().unwrap(), [1, 2]);
        assert_eq!(registry.current().unwrap().definitions, winners[0].1);
    }
}

fn blobs_are_created_once_and_never_overwritten(place: Place) {
    let at = Location::new(place);
    let store = at.blobs();
    assert!(store.put_if_absent("a/b.json", b"first").unwrap());
    assert!(!store.put_if_absent("a/b.json", b"second").unwrap());
    assert_eq!(store.get("a/b.json").unwrap().unwrap(), b"first");
    assert_eq!(store.get("a/none.json").unwrap(), None);
    assert_eq!(store.list("a/").unwrap(), ["b.json"]);
    assert!(store.list("missing/").unwrap().is_empty());
}

on_disk_and_s3!(
    versions_are_numbered_kept_and_readable,
    a_stale_apply_is_a_conflict_not_a_lost_update,
    concurrent_applies_from_the_same_version_have_exactly_one_winner,
    blobs_are_created_once_and_never_overwritten,
);
