//! End-to-end tests of the `quiver` binary.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod drift;
mod feast_repository;
mod flight;
mod monitoring;
mod object_storage;
mod online_cli;
mod operations;
mod pushes;
mod redis;
mod registry_cli;
mod security;
mod serving;
mod spark;
