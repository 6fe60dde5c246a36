//! Integration tests of `quiver-ops`: applies and their effects, pushes, materialization runs
//! (native and on a real Spark cluster) and the schedule, on real repositories in temporary folders.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod apply;
mod materialize;
mod push;
mod spark;
mod support;
