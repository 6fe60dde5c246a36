//! Quiver's offline work on the team's Apache Spark cluster, through Spark Connect.
//!
//! [`SparkEngine`] runs a [`quiver_offline::PointInTimeJoin`] on the cluster: the entity rows
//! are sent as a local relation (cached as uploaded chunks when large), each view's as-of
//! join runs as one SQL plan (`join`: a window over keys ordered by time, in time
//! proportional to sorting, with the native engine's rules and tie-breaks), and the answer
//! streams back as Arrow and is assembled into the same [`TrainingSet`] the native engine
//! gives. The client is a thin one of the Spark Connect protocol (`proto/spark/connect`,
//! Apache Spark's definitions) on tonic: no Java on Quiver's side.

mod client;
mod error;
mod join;

/// Spark Connect's messages and client, generated from `proto/spark/connect`.
#[allow(
    missing_docs,
    dead_code,
    clippy::all,
    clippy::pedantic,
    unused_qualifications,
    rust_2018_idioms
)]
pub(crate) mod proto {
    tonic::include_proto!("spark.connect");
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use quiver_core::SparkSettings;
use quiver_offline::{PointInTimeJoin, TrainingSet};

pub use error::{Result, SparkError};

use client::Session;

/// How often a blocking call looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// A Spark cluster that computes training sets.
#[derive(Debug)]
pub struct SparkEngine {
    settings: SparkSettings,
    /// The client's own runtime (taken when dropped: it shuts down in the background, so an
    /// engine may be dropped anywhere, inside an async server too).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SparkEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl SparkEngine {
    /// An engine for the cluster of `settings` (connected per request; nothing is reached
    /// here, so a cluster that is down fails requests, not the process).
    pub fn new(settings: SparkSettings) -> Result<Self> {
        client::endpoint_of(&settings.connect)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quiver-spark")
            .enable_all()
            .build()
            .map_err(|e| SparkError::Unreachable {
                cluster: settings.connect.clone(),
                message: format!("cannot start the client's runtime: {e}"),
            })?;
        Ok(Self {
            settings,
            runtime: Some(runtime),
        })
    }

    /// Joins `join`'s features onto `entities` on the cluster (blocking; call it from a
    /// thread that may block). When `cancel` becomes true the session's Spark jobs are
    /// interrupted and [`SparkError::Cancelled`] returned.
    pub fn training_set(
        &self,
        join: &PointInTimeJoin<'_>,
        entities: RecordBatch,
        cancel: Option<&AtomicBool>,
    ) -> Result<TrainingSet> {
        let Some(runtime) = &self.runtime else {
            return Err(SparkError::Cancelled);
        };
        runtime.block_on(async {
            let session = Session::open(&self.settings).await?;
            let result = tokio::select! {
                r = join::training_set(&session, join, entities) => r,
                () = cancelled(cancel) => {
                    session.interrupt().await;
                    Err(SparkError::Cancelled)
                }
            };
            session.release().await;
            result
        })
    }
}

/// Resolves once `cancel` is set (never without one).
async fn cancelled(cancel: Option<&AtomicBool>) {
    match cancel {
        Some(flag) => {
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(CANCEL_POLL).await;
            }
        }
        None => std::future::pending().await,
    }
}
