//! Integration tests of `quiver-online`: the RocksDB store, online reads and materialization.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod materialize;
mod reads;
mod store;
mod support;
