//! Quiver's offline work on the team's Apache Spark cluster, through Spark Connect.
//!
//! [`SparkEngine`] runs a [`quiver_offline::PointInTimeJoin`] on the cluster: the entity rows
//! are sent as a local relation (cached as uploaded chunks when large), each view's as-of
//! join runs as one SQL plan (`join`: a window over keys ordered by time, in time
//! proportional to sorting, with the native engine's rules and tie-breaks), and the answer
//! streams back as Arrow and is assembled into the same [`TrainingSet`] the native engine
//! gives. [`SparkEngine::newest_rows`] computes a materialization's newest row per key of a
//! window on the cluster (`newest`: one grouped query per view, the native materializer's
//! order and tie-break) and streams it back for the online store. The client is a thin one
//! of the Spark Connect protocol (`proto/spark/connect`, Apache Spark's definitions) on
//! tonic: no Java on Quiver's side.

mod client;
mod error;
mod join;
mod newest;
mod source;

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
use quiver_core::{Feature, FeatureView, SparkSettings};
use quiver_offline::{PointInTimeJoin, TrainingSet};
use quiver_source::{SourceScan, VersionedRows};
use tokio::sync::mpsc;

pub use error::{Result, SparkError};
pub use newest::NewestCounts;

use client::{Session, uuid};
use newest::NewestPlan;
use source::SourceRows;

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
    /// thread that may block). When `cancel` becomes true [`SparkError::Cancelled`] is
    /// returned at once; the session's Spark jobs are interrupted in the background.
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
            let session = tokio::select! {
                s = Session::open(&self.settings) => s?,
                () = cancelled(cancel) => return Err(SparkError::Cancelled),
            };
            let result = tokio::select! {
                r = join::training_set(&session, join, entities, self.settings.staging.as_deref()) => r,
                () = cancelled(cancel) => Err(SparkError::Cancelled),
            };
            if matches!(result, Err(SparkError::Cancelled)) {
                // The caller returns at once; a busy cluster acknowledges in the background.
                tokio::spawn(async move {
                    session.interrupt().await;
                    session.release().await;
                });
            } else {
                session.release().await;
            }
            result
        })
    }

    /// The newest row per key of `view`'s source (opened as `scan`, with `features`, the
    /// view's) among the rows with `start <= event_ts <= end`, computed on the cluster and
    /// streamed back batch by batch. Once `cancel` is set, or the stream is dropped, the
    /// query is interrupted.
    pub fn newest_rows<'a>(
        &'a self,
        scan: &'a SourceScan,
        view: &'a FeatureView,
        features: &'a [&'a Feature],
        (start, end): (i64, i64),
        cancel: Option<&'a AtomicBool>,
    ) -> Result<NewestRows<'a>> {
        let Some(runtime) = &self.runtime else {
            return Err(SparkError::Cancelled);
        };
        let plan = NewestPlan {
            rows: SourceRows {
                view,
                scan,
                features,
            },
            window: (start, end),
        };
        let query = plan.query()?;
        tracing::debug!(view = %view.name, %query, "newest rows on Spark");
        // Two batches in flight: the cluster's stream waits for the store's writes.
        let (tx, batches) = mpsc::channel(2);
        let settings = self.settings.clone();
        let view_name = view.name.clone();
        runtime.spawn(async move {
            let session = match Session::open(&settings).await {
                Ok(session) => session,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let operation = uuid();
            let result = tokio::select! {
                r = session.sql_to(query, &operation, &view_name, &tx) => r,
                () = tx.closed() => Ok(()),
            };
            if tx.is_closed() {
                session.interrupt().await;
            } else if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
            session.release().await;
        });
        Ok(NewestRows {
            plan,
            runtime,
            batches,
            cancel,
            counts: NewestCounts::default(),
            done: false,
        })
    }
}

/// A window's newest rows per key as the cluster sends them ([`SparkEngine::newest_rows`]);
/// [`NewestRows::counts`] holds what it counted of the rows received so far.
pub struct NewestRows<'a> {
    plan: NewestPlan<'a>,
    runtime: &'a tokio::runtime::Runtime,
    batches: mpsc::Receiver<Result<RecordBatch>>,
    cancel: Option<&'a AtomicBool>,
    counts: NewestCounts,
    done: bool,
}

impl std::fmt::Debug for NewestRows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewestRows")
            .field("view", &self.plan.rows.view.name)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl NewestRows<'_> {
    /// The rows counted so far: all of the window's once the iterator has ended.
    pub fn counts(&self) -> NewestCounts {
        self.counts
    }
}

impl Iterator for NewestRows<'_> {
    type Item = Result<VersionedRows>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (batches, cancel) = (&mut self.batches, self.cancel);
            let received = self.runtime.block_on(async {
                tokio::select! {
                    b = batches.recv() => b,
                    () = cancelled(cancel) => Some(Err(SparkError::Cancelled)),
                }
            });
            let Some(batch) = received else {
                self.done = true;
                break;
            };
            match batch.and_then(|b| self.plan.rows(&b, &mut self.counts)) {
                Ok(Some(rows)) => return Some(Ok(rows)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
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
