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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use quiver_core::{Feature, FeatureView, SparkSettings};
use quiver_offline::{PointInTimeJoin, TrainingSet};
use quiver_source::{SourceScan, VersionedRows};
use tokio::sync::{Mutex, mpsc};

pub use error::{Result, SparkError};
pub use newest::NewestCounts;

use client::{INLINE_BYTES, Session, uuid};
use newest::NewestPlan;
use source::SourceRows;

/// How often a blocking call looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// A Spark cluster that computes training sets.
#[derive(Debug)]
pub struct SparkEngine {
    settings: SparkSettings,
    /// The session the engine's requests share, opened on first use ([`Shared`]).
    shared: Arc<Shared>,
    /// The client's own runtime (taken when dropped: it shuts down in the background, so an
    /// engine may be dropped anywhere, inside an async server too).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SparkEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Released when dropped outside an async context (a CLI's end); else the server
            // expires it.
            if let Some(session) = self
                .shared
                .session
                .try_lock()
                .ok()
                .and_then(|mut s| s.take())
                && tokio::runtime::Handle::try_current().is_err()
            {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(RELEASE, session.release()).await;
                });
            }
            runtime.shutdown_background();
        }
    }
}

/// How long a dropped engine waits for the server to release its session.
const RELEASE: Duration = Duration::from_secs(2);

/// One Spark Connect session shared by an engine's requests, so that the cluster compiles a
/// query's code once, not once per request (a new session recompiles every plan's code on
/// every executor). Reopened when the server no longer has it.
#[derive(Default)]
struct Shared {
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// A request's copy of the shared session, opened first when there is none.
    async fn request(&self, settings: &SparkSettings) -> Result<Session> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.request());
        }
        let session = Session::open(settings).await?;
        let request = session.request();
        *slot = Some(session);
        Ok(request)
    }

    /// Forgets the shared session if it is still `gone`'s (the server no longer has it).
    async fn forget(&self, gone: &Session) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| s.id() == gone.id()) {
            *slot = None;
        }
    }

    /// Runs `work` on a request's copy of the shared session, once more on a new session
    /// when the server no longer had it; [`SparkError::Cancelled`] when `cancel` is set while
    /// a session is opened (`work` watches it after that).
    async fn run<T, F, W>(
        &self,
        settings: &SparkSettings,
        cancel: Option<&AtomicBool>,
        work: W,
    ) -> Result<T>
    where
        W: Fn(Session) -> F,
        F: Future<Output = (Session, Result<T>)>,
    {
        let mut retried = false;
        loop {
            let session = tokio::select! {
                s = self.request(settings) => s?,
                () = cancelled(cancel) => return Err(SparkError::Cancelled),
            };
            match work(session).await {
                (session, Err(e)) if e.session_gone() && !retried => {
                    tracing::info!(error = %e, "the Spark session is gone; opening a new one");
                    self.forget(&session).await;
                    retried = true;
                }
                (_, result) => return result,
            }
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
            shared: Arc::default(),
            runtime: Some(runtime),
        })
    }

    /// Joins `join`'s features onto `entities` on the cluster (blocking; call it from a
    /// thread that may block). When `cancel` becomes true [`SparkError::Cancelled`] is
    /// returned at once; the request's Spark jobs are interrupted in the background.
    pub fn training_set(
        &self,
        join: &PointInTimeJoin<'_>,
        entities: RecordBatch,
        cancel: Option<&AtomicBool>,
    ) -> Result<TrainingSet> {
        let Some(runtime) = &self.runtime else {
            return Err(SparkError::Cancelled);
        };
        let upload = join::entity_rows(join, &entities)?;
        let staging = self.settings.staging.as_deref();
        // An entity table uploaded as cached chunks would stay in the shared session until
        // it ends: such a request has a session of its own, released after it.
        let private = staging.is_none() && upload.get_array_memory_size() > INLINE_BYTES;
        let upload = &upload;
        let work = move |session: Session| {
            let entities = entities.clone();
            async move {
                let result = tokio::select! {
                    r = join::training_set(&session, join, entities, upload, staging) => r,
                    () = cancelled(cancel) => Err(SparkError::Cancelled),
                };
                let ended = session.clone();
                let cleanup = async move {
                    ended.finish().await;
                    if private {
                        ended.release().await;
                    }
                };
                if matches!(result, Err(SparkError::Cancelled)) {
                    // The caller returns at once; a busy cluster acknowledges in the background.
                    let interrupted = session.clone();
                    tokio::spawn(async move {
                        interrupted.interrupt().await;
                        cleanup.await;
                    });
                } else {
                    cleanup.await;
                }
                (session, result)
            }
        };
        runtime.block_on(async {
            if private {
                let session = tokio::select! {
                    s = Session::open(&self.settings) => s?,
                    () = cancelled(cancel) => return Err(SparkError::Cancelled),
                };
                work(session).await.1
            } else {
                self.shared.run(&self.settings, cancel, work).await
            }
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
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            let work = |session: Session| {
                let (query, tx, view_name) = (query.clone(), &tx, &view_name);
                async move {
                    let operation = uuid();
                    let result = tokio::select! {
                        r = session.sql_to(query, &operation, view_name, tx) => r,
                        () = tx.closed() => Ok(()),
                    };
                    if tx.is_closed() {
                        session.interrupt().await;
                    }
                    (session, result)
                }
            };
            if let Err(e) = shared.run(&settings, None, work).await {
                let _ = tx.send(Err(e)).await;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_share_a_session_and_replace_one_the_server_no_longer_has() {
        let engine = SparkEngine::new(SparkSettings {
            connect: quiver_testkit::spark::shared_cluster().url(),
            conf: Default::default(),
            staging: None,
        })
        .unwrap();
        let one = |session: Session| async move {
            let result = session.sql("SELECT 1 AS one".into(), &uuid(), None).await;
            (session, result)
        };
        let runtime = engine.runtime.as_ref().unwrap();
        runtime.block_on(async {
            let first = engine.shared.request(&engine.settings).await.unwrap();
            let again = engine.shared.request(&engine.settings).await.unwrap();
            assert_eq!(
                again.id(),
                first.id(),
                "one session for the engine's requests"
            );
            // The server forgets the session (as when it expires); the engine still holds it.
            first.clone().release().await;
            let answer = engine
                .shared
                .run(&engine.settings, None, one)
                .await
                .unwrap();
            assert_eq!(answer.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
            let now = engine.shared.request(&engine.settings).await.unwrap();
            assert_ne!(now.id(), first.id(), "a new session replaced the one gone");
        });
    }
}
