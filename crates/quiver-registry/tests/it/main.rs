//! Integration tests of `quiver-registry`: validation, plans and the versioned store.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod plan;
mod store;
mod support;
mod validation;
