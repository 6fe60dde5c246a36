//! Integration tests of `quiver-online`: the online store contract on every backend
//! (RocksDB, Redis, Redis Cluster), online reads and materialization on every backend, and
//! what only the embedded store does.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

/// Makes each named `fn(&On)` a test on every backend: `rocksdb::NAME`, `redis::NAME` and
/// `redis_cluster::NAME`.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod rocksdb {
            $(#[test]
            fn $test() {
                super::$test(&crate::support::On::new(crate::support::Backend::RocksDb, stringify!($test)));
            })+
        }
        mod redis {
            $(#[test]
            fn $test() {
                super::$test(&crate::support::On::new(crate::support::Backend::Redis, stringify!($test)));
            })+
        }
        mod redis_cluster {
            $(#[test]
            fn $test() {
                super::$test(&crate::support::On::new(crate::support::Backend::RedisCluster, stringify!($test)));
            })+
        }
    };
}

/// [`on_every_backend`], plus RocksDB with the sources read from S3 (materialization suites).
macro_rules! on_every_backend_and_s3_sources {
    ($($test:ident),+ $(,)?) => {
        on_every_backend!($($test),+);
        mod rocksdb_sources_on_s3 {
            $(#[test]
            fn $test() {
                super::$test(
                    &crate::support::On::new(crate::support::Backend::RocksDb, stringify!($test))
                        .with_sources_on_s3(),
                );
            })+
        }
    };
}

mod contract;
mod materialize;
mod reads;
mod redis_store;
mod store;
mod support;
