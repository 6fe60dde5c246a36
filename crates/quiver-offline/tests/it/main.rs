//! Integration tests of the point-in-time join engine on real Parquet files, every one with
//! its sources on local disk and on a real S3 server (SeaweedFS), and the joins also on a real
//! Spark cluster (Spark Connect).
#![allow(clippy::unwrap_used, missing_docs)]

mod pull;
mod reference;
mod rules;
mod support;
