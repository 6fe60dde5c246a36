//! Quiver's operations: every user-level action on a feature repository, with all its effects,
//! in one place. The CLI, each protocol handler of `quiver serve` and the materialization
//! scheduler call these and only translate inputs and outcomes.
//!
//! [`FeatureStore`] is one process's handle on a repository: its registry, its sources and
//! its online store (held exclusively while the handle lives), and the registry version the
//! process works with ([`Snapshot`]).
//!
//! - [`FeatureStore::apply`] ([`apply`](mod@apply)): validates nothing itself (callers load
//!   definitions), commits a registry version with the conflict rule, then activates it.
//! - Activation ([`FeatureStore::refresh`]): wherever a version becomes current (an apply in
//!   this process, or one made elsewhere and picked up), the online store is made to hold
//!   exactly the view generations it serves (removed, re-keyed and re-typed views' rows go),
//!   and the purge follows the new ttls.
//! - [`FeatureStore::materialize`] ([`materialize`](mod@materialize)): on demand or on a
//!   schedule ([`schedule`]); runs of one view never overlap, each run is recorded beside the
//!   data ([`quiver_online::RunRecord`]).
//! - [`FeatureStore::push`] ([`push`](mod@push)): rows checked against every target view
//!   before anything is written, then written online (one atomic batch) and offline (a new
//!   file) so that neither side keeps a row the other lost.
//! - [`FeatureStore::read_online`]: online reads from the snapshot's cached read plans.
//!
//! ```no_run
//! use quiver_ops::{FeatureStore, MaterializeRequest, StoreOptions};
//! use quiver_online::Window;
//!
//! let store = FeatureStore::open("my_repo".as_ref(), StoreOptions::default())?;
//! let request = MaterializeRequest::manual(Vec::new(), Window::Incremental {
//!     end: quiver_core::now_nanos(),
//!     lookback: std::time::Duration::ZERO,
//! });
//! for report in store.materialize(&quiver_ops::Caller::Trusted, &request, &|_| {}, None)? {
//!     println!("{}: {} rows", report.view, report.rows_written);
//! }
//! # Ok::<_, quiver_ops::OpsError>(())
//! ```

pub mod apply;
pub mod audit;
pub mod auth;
mod catalog;
pub mod endpoint;
pub mod error;
pub mod feature_log;
mod lease;
pub mod materialize;
pub mod metrics;
pub mod oidc;
pub mod profile;
pub mod push;
pub mod schedule;
pub mod skew;
pub mod status;
mod value;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quiver_core::{Action, EngineKind, ObjectKind, now_nanos};
use quiver_online::{
    LiveView, OnlineFeatures, OnlineStore, RocksDbOptions, RocksDbStore, RunOutcome, StoreStats,
    ViewId, read_online_features,
};
use quiver_redis::{RedisOptions, RedisStore, TlsOptions};
use quiver_registry::{OnlineStoreConfig, Registry, RepoConfig, Secret};
use quiver_source::Sources;
use quiver_spark::SparkEngine;

pub use apply::{ApplyOutcome, ApplyRequest, BaseVersion, Committed, commit, views_leaving};
pub use audit::AuditLog;
pub use auth::{Authenticator, Authorizer, Caller, Grant, Principal, token_hash};
pub use catalog::{EncodedRefs, FeatureSpec, PlannedRead, Snapshot};
pub use endpoint::Endpoint;
pub use error::{OpsError, Result};
pub use feature_log::FeatureLogOptions;
pub use materialize::MaterializeRequest;
pub use metrics::Metrics;
pub use oidc::{OidcVerifier, TokenError};
pub use push::{PushOutcome, PushRequest, PushTarget};
pub use status::{Freshness, StatusReport, ViewStatus};
pub use value::InputValue;

use crate::catalog::Current;
use crate::feature_log::{Entry, FeatureLog};
use crate::materialize::RunLocks;

/// The online store `config` names, for the repository at `repo`.
pub fn open_online_store(repo: &Path, config: &RepoConfig) -> Result<Arc<dyn OnlineStore>> {
    Ok(match &config.online_store {
        OnlineStoreConfig::RocksDb(c) => Arc::new(RocksDbStore::open(
            &repo.join(&c.path),
            &RocksDbOptions {
                block_cache_bytes: usize::try_from(c.block_cache_mb << 20).unwrap_or(usize::MAX),
            },
        )?),
        OnlineStoreConfig::Redis(c) => {
            let tls = c.tls.as_ref().map(|t| TlsOptions {
                ca_file: t.ca_file.as_ref().map(|f| repo.join(f)),
                client: t
                    .cert_file
                    .as_ref()
                    .zip(t.key_file.as_ref())
                    .map(|(cert, key)| (repo.join(cert), repo.join(key))),
            });
            let options = RedisOptions {
                nodes: c.nodes.clone(),
                username: c.username.clone(),
                password: c.password.as_ref().map(Secret::value).transpose()?,
                tls,
                timeout: c.timeout,
            };
            Arc::new(RedisStore::open(&options).map_err(quiver_online::OnlineError::from)?)
        }
    })
}

/// Limits on requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entity rows per online read or push.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rows: 10_000 }
    }
}

impl Limits {
    /// The largest online read or push request, in bytes: 1 MiB plus 2 KiB per row allowed.
    pub fn max_request_bytes(&self) -> usize {
        (1usize << 20).saturating_add(self.max_rows.saturating_mul(2 << 10))
    }

    /// Checks the length of every column of a request (before any is converted).
    pub fn check_rows<'a>(
        &self,
        columns: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Result<()> {
        match columns.into_iter().find(|(_, rows)| *rows > self.max_rows) {
            Some((name, rows)) => Err(OpsError::LimitExceeded(format!(
                "too many entity rows: {rows} in column '{name}' (the limit is {} per request, server.limits.max_rows)",
                self.max_rows
            ))),
            None => Ok(()),
        }
    }
}

/// How a [`FeatureStore`] runs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Request limits of reads and pushes.
    pub limits: Limits,
    /// Worker threads of each materialization.
    pub materialize_threads: usize,
    /// Materialize below the priority of the process's other threads (a server: requests
    /// come first).
    pub materialize_in_background: bool,
    /// How logged reads are batched into files.
    pub feature_log: FeatureLogOptions,
    /// Whether online reads are counted (their values by view and status) and a server
    /// records and serves metrics.
    pub metrics: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            materialize_threads: std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get),
            materialize_in_background: false,
            feature_log: FeatureLogOptions::default(),
            metrics: true,
        }
    }
}

/// The materialization watermark (ns) of each online view, by name.
pub type Watermarks = Vec<(String, Option<i64>)>;

/// What making a registry version current did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The version now current.
    pub version: u64,
    /// View generations whose online rows were deleted.
    pub deleted: Vec<ViewId>,
}

/// One process's handle on a feature repository: registry, sources, online store and the
/// current registry version.
pub struct FeatureStore {
    repo: PathBuf,
    config: RepoConfig,
    registry: Registry,
    sources: Arc<Sources>,
    store: Arc<dyn OnlineStore>,
    current: Current,
    /// Activations happen one at a time (an apply and the registry poller).
    activation: Mutex<()>,
    runs: RunLocks,
    /// Increasing run ids.
    last_run_id: AtomicU64,
    /// Tie-break sequence of pushed rows: later pushes win over equal times.
    push_sequence: AtomicU64,
    /// Sources whose pushed files are being compacted.
    compacting: push::Busy,
    /// This process among the holders of the store's leases.
    holder: String,
    options: StoreOptions,
    /// What activating the current version did when this handle opened the store.
    opened: Activation,
    audit: Arc<AuditLog>,
    metrics: Metrics,
    feature_log: FeatureLog,
    /// The Spark cluster of `offline_engine`, made on first use.
    spark: Mutex<Option<Arc<SparkEngine>>>,
}

impl std::fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStore")
            .field("repo", &self.repo)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl FeatureStore {
    /// Opens the repository at `repo` with the online store its `quiver.yaml` names: the
    /// embedded RocksDB store, which this handle holds until it is dropped
    /// ([`quiver_online::OnlineError::Locked`] if another process holds it), or a Redis
    /// deployment, which every process of the repository shares.
    pub fn open(repo: &Path, options: StoreOptions) -> Result<Self> {
        let config = RepoConfig::load(repo)?;
        let store = open_online_store(repo, &config)?;
        Self::with_store(repo, config, store, options)
    }

    /// Opens the repository with any online store. Activates the latest registry version,
    /// marks runs left `running` by a process that stopped as interrupted, and removes
    /// temporary files that failed writers left behind.
    pub fn with_store(
        repo: &Path,
        config: RepoConfig,
        store: Arc<dyn OnlineStore>,
        options: StoreOptions,
    ) -> Result<Self> {
        let sources = Arc::new(config.sources(repo));
        let registry = config.open_registry(repo, sources.storage())?;
        let snapshot = match registry.latest()? {
            Some(v) => Snapshot::of(v),
            None => Snapshot::empty(&config.project),
        };
        let audit = Arc::new(AuditLog::new(
            repo.join(config.server.audit_log.as_deref().unwrap_or("audit.log")),
        ));
        let metrics = Metrics::default();
        let feature_log = FeatureLog::start(
            Arc::clone(&sources),
            options.feature_log,
            metrics.feature_log.clone(),
        );
        let mut this = Self {
            audit,
            metrics,
            feature_log,
            repo: repo.to_path_buf(),
            sources,
            config,
            registry,
            store,
            current: Current::new(snapshot),
            activation: Mutex::new(()),
            runs: RunLocks::default(),
            last_run_id: AtomicU64::new(0),
            push_sequence: AtomicU64::new(u64::try_from(now_nanos()).unwrap_or(0)),
            compacting: push::Busy::default(),
            holder: lease::holder_name(),
            options,
            opened: Activation {
                version: 0,
                deleted: Vec::new(),
            },
            spark: Mutex::new(None),
        };
        let snapshot = this.snapshot();
        this.opened = Activation {
            version: snapshot.version,
            deleted: this.activate(&snapshot)?,
        };
        this.mark_interrupted(None)?;
        this.sweep_temporary_files();
        Ok(this)
    }

    /// What making the current version current did when this handle opened the store: the
    /// view generations it found there that the version no longer serves, now deleted (after
    /// a restore of an old backup, views re-created since).
    pub fn opened(&self) -> &Activation {
        &self.opened
    }

    /// The repository folder.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// The repository's settings.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The Spark cluster when `requested` (or else `offline_engine`) is Spark; `None` for the
    /// native engine. Spark asked for but not configured is an error.
    pub fn spark(&self, requested: Option<EngineKind>) -> Result<Option<Arc<SparkEngine>>> {
        let Some(settings) = self.config.offline_engine.select(requested)? else {
            return Ok(None);
        };
        let mut spark = self
            .spark
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spark.is_none() {
            *spark = Some(Arc::new(SparkEngine::new(settings.clone())?));
        }
        Ok(spark.clone())
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The repository's sources.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// The online store.
    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    /// The folder of the embedded online store, which a server holding it names in its
    /// endpoint file (`None` for a shared store).
    pub fn local_store_path(&self) -> Option<PathBuf> {
        self.config.online_store_path(&self.repo)
    }

    /// This process's name among the holders of the store's leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The options this handle runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The current registry snapshot (a cheap `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    /// Makes the latest registry version current if it is newer than the current one, with
    /// its effects on the online store; `None` when it was already current.
    pub fn refresh(&self) -> Result<Option<Activation>> {
        let _one_at_a_time = self
            .activation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let latest = self.registry.latest_version()?.unwrap_or(0);
        if latest <= self.snapshot().version {
            return Ok(None);
        }
        let snapshot = Arc::new(Snapshot::of(self.registry.get(latest)?));
        let deleted = self.activate(&snapshot)?;
        self.current.set(snapshot);
        Ok(Some(Activation {
            version: latest,
            deleted,
        }))
    }

    /// Applies the current version's effects again (after writes that may have landed in
    /// generations it no longer serves), one activation at a time.
    fn reactivate(&self) -> Result<Vec<ViewId>> {
        let _one_at_a_time = self
            .activation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.activate(&self.snapshot())
    }

    /// Makes the online store hold exactly the view generations `snapshot` serves.
    fn activate(&self, snapshot: &Snapshot) -> Result<Vec<ViewId>> {
        let live: Vec<LiveView> = snapshot
            .online_views()
            .map(|v| LiveView {
                id: snapshot.view_id(&v.name),
                ttl_nanos: v
                    .ttl
                    .limit()
                    .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)),
            })
            .collect();
        Ok(self
            .store
            .retain(&snapshot.defs.project, snapshot.version, &live)?)
    }

    /// What this process's operations did, for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Writes every sampled read waiting in the feature log now (a server stopping).
    pub fn flush_feature_log(&self) {
        self.feature_log.flush();
    }

    /// The audit log every write and refusal is recorded in.
    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Checks that `caller` may do `action` on every object, by `snapshot`'s permissions;
    /// a denial is recorded in the audit log.
    pub fn authorize(
        &self,
        snapshot: &Snapshot,
        caller: &Caller,
        action: Action,
        objects: &[(ObjectKind, &str)],
    ) -> Result<()> {
        snapshot
            .authorizer
            .check(caller, action, objects)
            .inspect_err(|e| {
                let names: Vec<String> = objects
                    .iter()
                    .map(|(k, n)| format!("{}:{n}", k.key()))
                    .collect();
                self.audit.record(
                    caller.name(),
                    action.name(),
                    &names.join(","),
                    "denied",
                    &e.to_string(),
                );
            })
    }

    /// Reads the features of `spec` for entity rows given column by column, then lets
    /// `answer` build the caller's response from the snapshot, the features and the cells.
    /// Waits only on the store's read (no blocking: an embedded store answers in place). A
    /// read of a feature service that declares `logging:` may be sampled into its feature
    /// log under `request_id`.
    pub async fn read_online<T>(
        &self,
        caller: &Caller,
        request_id: &str,
        spec: FeatureSpec,
        full_feature_names: bool,
        entities: &[(String, Vec<InputValue>)],
        answer: impl FnOnce(&Snapshot, &OnlineFeatures<'_>) -> Result<T>,
    ) -> Result<T> {
        self.options
            .limits
            .check_rows(entities.iter().map(|(n, v)| (n.as_str(), v.len())))?;
        let snapshot = self.snapshot();
        // Only a caller the permissions restrict needs the service's name kept.
        let service = match (&spec, caller) {
            (FeatureSpec::Service(name), Caller::Principal(_)) => Some(name.clone()),
            _ => None,
        };
        let planned = snapshot.plan(spec, full_feature_names, &self.metrics)?;
        let plan = &planned.plan;
        if !matches!(caller, Caller::Trusted) {
            let objects: Vec<(ObjectKind, &str)> = service
                .iter()
                .map(|s| (ObjectKind::FeatureService, s.as_str()))
                .chain(plan.view_names().map(|v| (ObjectKind::FeatureView, v)))
                .collect();
            self.authorize(&snapshot, caller, Action::ReadOnline, &objects)?;
        }
        let keys = entities
            .iter()
            .map(|(name, values)| {
                let values = values
                    .iter()
                    .enumerate()
                    .map(|(row, v)| v.key(name, row))
                    .collect::<Result<Vec<_>>>()?;
                Ok((name.clone(), values))
            })
            .collect::<Result<Vec<_>>>()?;
        let now = now_nanos();
        let read = read_online_features(self.store.as_ref(), plan, &keys, now).await?;
        let answered = answer(&snapshot, &read);
        let rows = read.num_rows();
        if self.options.metrics {
            self.metrics.online_read(rows);
            planned.counters.add(&read);
        }
        if let (Ok(_), Some(target)) = (&answered, &planned.log)
            && target.rate.samples(rand::random())
        {
            let entry = Entry {
                target: Arc::clone(target),
                planned: Arc::clone(&planned),
                keys,
                found: read.into_found(),
                at: now,
                request_id: request_id.to_owned(),
            };
            if !self.feature_log.offer(entry) {
                self.metrics.feature_log.dropped(&target.service, rows);
            }
        }
        answered
    }

    /// The store's counts and sizes, and the watermark (ns) of every online view.
    pub fn stats(&self) -> Result<(StoreStats, Watermarks)> {
        let snapshot = self.snapshot();
        let watermarks = snapshot
            .online_views()
            .map(|v| {
                Ok((
                    v.name.clone(),
                    self.store.watermark(&snapshot.view_id(&v.name))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok((self.store.stats()?, watermarks))
    }

    /// Writes a consistent copy of the online store to `dir`, which must not exist.
    pub fn backup(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            return Err(OpsError::invalid(format!(
                "{} already exists; choose a new folder for the backup",
                dir.display()
            )));
        }
        Ok(self.store.backup(dir)?)
    }

    /// A new run id: increasing, and the start time in ns when that is larger.
    fn next_run_id(&self) -> u64 {
        let now = u64::try_from(now_nanos()).unwrap_or(0);
        let mut last = self.last_run_id.load(Ordering::Relaxed);
        loop {
            let id = now.max(last + 1);
            match self
                .last_run_id
                .compare_exchange(last, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(seen) => last = seen,
            }
        }
    }

    /// Runs (of one view, or of all) recorded as running whose view's run lease nobody
    /// holds ran in a process that stopped: they are interrupted.
    fn mark_interrupted(&self, view: Option<&str>) -> Result<()> {
        let project = &self.config.project;
        for mut run in self.store.runs(project, view, usize::MAX)? {
            if run.outcome == RunOutcome::Running
                && self
                    .store
                    .lease_holder(&lease::run_lease(project, &run.view))?
                    .is_none_or(|h| h == self.holder)
            {
                run.outcome = RunOutcome::Interrupted;
                run.error = Some("the process running it stopped before it ended".into());
                self.store.record_run(&run)?;
            }
        }
        Ok(())
    }

    /// Removes temporary files that failed writers left in the registry and in folder
    /// sources (best effort: a folder that cannot be read is left alone).
    fn sweep_temporary_files(&self) {
        let _ = self.registry.sweep_temporary_files();
        for source in self.snapshot().defs.sources.values() {
            if let Ok(Some(folder)) = self.sources.source_folder(source) {
                let _ = quiver_source::sweep_temporary_files(
                    &folder,
                    &[quiver_source::TEMPORARY_PREFIX],
                );
            }
        }
    }
}
