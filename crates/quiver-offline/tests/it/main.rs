//! Integration tests of the point-in-time join engine on real Parquet files, every one with
//! its sources on local disk and on a real S3 server (SeaweedFS).
#![allow(clippy::unwrap_used, missing_docs)]

/// Runs each named test (a `fn(Place)`) with its sources on local disk and on S3.
macro_rules! on_disk_and_s3 {
    ($($test:ident),+ $(,)?) => {
        mod disk {
            $(#[test]
            fn $test() {
                super::$test(crate::support::Place::Disk);
            })+
        }
        mod s3 {
            $(#[test]
            fn $test() {
                super::$test(crate::support::Place::S3);
            })+
        }
    };
}

mod pull;
mod reference;
mod rules;
mod support;
