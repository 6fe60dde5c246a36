//! `quiver-storage` against a real S3 server (SeaweedFS): uploads, conditional writes and
//! reads, listings, and the errors of a missing bucket and an unreachable server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;

use quiver_storage::{
    Failure, ObjectStorage, ObjectUrl, S3Settings, StaticCredentials, StorageSettings,
};
use quiver_testkit::s3::{BUCKET, shared_server};

fn url(key: &str) -> ObjectUrl {
    let prefix = format!("storage-{}", std::process::id());
    ObjectUrl::parse(&format!("s3://{BUCKET}/{prefix}/{key}"))
        .unwrap()
        .unwrap()
}

#[test]
fn a_large_file_is_uploaded_in_parts_and_read_back_by_ranges() {
    let storage = shared_server().storage();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..(40u32 << 20)).map(|i| (i % 251) as u8).collect();
    file.write_all(&bytes).unwrap();
    let target = url("large/file.bin");
    storage.upload_file(&target, file.path()).unwrap();
    let listed = storage.list(&url("large")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, bytes.len() as u64);
    let ranges = vec![0..10, 20_000_000..20_000_100, (40 << 20) - 5..40 << 20];
    let got = storage
        .get_ranges_if(&target, listed[0].etag.as_deref(), ranges.clone())
        .unwrap();
    for (range, got) in ranges.into_iter().zip(got) {
        assert_eq!(&got[..], &bytes[range.start as usize..range.end as usize]);
    }
}

#[test]
fn create_if_absent_has_one_winner_and_a_replaced_object_fails_conditional_reads() {
    let storage = shared_server().storage();
    let target = url("once.txt");
    assert!(storage.put_if_absent(&target, "first".into()).unwrap());
    assert!(!storage.put_if_absent(&target, "second".into()).unwrap());
    assert_eq!(&storage.get(&target).unwrap().unwrap()[..], b"first");
    let listed = storage.head(&target).unwrap().unwrap();
    storage.put(&target, "replaced".into()).unwrap();
    let first_bytes = 0..3;
    let e = storage
        .get_ranges_if(&target, listed.etag.as_deref(), vec![first_bytes])
        .unwrap_err();
    assert_eq!(e.failure(), Some(Failure::Changed), "{e}");
    assert!(storage.get(&url("absent.txt")).unwrap().is_none());
    storage.delete(&target).unwrap();
    assert!(storage.head(&target).unwrap().is_none());
}

#[test]
fn a_missing_bucket_and_an_unreachable_server_are_told_apart() {
    let storage = shared_server().storage();
    let missing = ObjectUrl::parse("s3://no-such-bucket-here/x")
        .unwrap()
        .unwrap();
    let e = storage.list(&missing).unwrap_err();
    assert_eq!(e.failure(), Some(Failure::NoSuchBucket), "{e}");
    assert!(e.to_string().contains("no-such-bucket-here"), "{e}");

    let settings = StorageSettings {
        s3: S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{}", quiver_testkit::free_port())),
            ..S3Settings::default()
        },
        max_retries: Some(1),
        timeout: Some(quiver_core::Period(std::time::Duration::from_secs(2))),
        ..StorageSettings::default()
    };
    let closed = ObjectStorage::new(settings.clone()).with_credentials(StaticCredentials {
        key_id: "k".into(),
        secret_key: "s".into(),
    });
    let e = closed.get(&url("x")).unwrap_err();
    assert_eq!(e.failure(), Some(Failure::Unreachable), "{e}");
    assert!(
        e.to_string().contains("GET") && e.to_string().contains(BUCKET),
        "{e}"
    );

    // No credentials anywhere (this test process sets none): said so, not a server error.
    let anonymous = ObjectStorage::new(settings);
    let e = anonymous.get(&url("x")).unwrap_err();
    assert_eq!(e.failure(), Some(Failure::Credentials), "{e}");
}
