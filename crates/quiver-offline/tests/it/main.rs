//! Integration tests of the point-in-time join engine on real Parquet files.
#![allow(clippy::unwrap_used, missing_docs)]

mod pull;
mod reference;
mod rules;
mod support;
