//! In-process tests of the server's translations: its services on port 0 inside the test
//! (as arrow-flight's own tests do), answering real clients; statuses are checked code by
//! code.

// Helpers outside #[test] functions unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod conversions;
mod feast_registry;
mod fixture;
