//! [`RedisStore`]: the online store contract on Redis or Redis Cluster.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use quiver_online::{
    LiveView, OnlineError, OnlineStore, RUNS_KEPT, ReadFuture, Row, RunRecord, StoreStats,
    StoredRows, ViewContents, ViewId, ViewKeys, ViewRows,
};
use redis::AsyncCommands;

use crate::connection::{self, Connection, Mode, RedisOptions, info_field};
use crate::error::{RedisStoreError, Result};
use crate::keys::{self, Meta};
use crate::scripts;

/// Rows per script call at most: one call holds its node for its duration.
const KEYS_PER_CALL: usize = 256;
/// Script calls in flight per write.
const CALLS_IN_FLIGHT: usize = 32;
/// Keys per `SCAN` step and `UNLINK` when deleting a view generation.
const SCAN_COUNT: usize = 1000;
/// The least time between two renewals of a cluster connection.
const RENEW_EVERY: Duration = Duration::from_millis(500);

/// The scripts, loaded into each node on first use.
struct Scripts {
    write: redis::Script,
    acquire: redis::Script,
    release: redis::Script,
    record_run: redis::Script,
}

/// The online store on Redis (one server, with or without replicas) or Redis Cluster.
///
/// Shared by every process of a repository: rows newest-wins by a script per slot, ttl
/// enforced on reads by the caller and by key expiry at twice the ttl, one key range per view
/// generation (deleted by scanning each master), watermarks, run records and leases in
/// Redis beside the rows. The client has a runtime of its own, so the store works the
/// same from a command, a server's request handlers and blocking threads; reads made on a
/// Tokio runtime are awaited there.
pub struct RedisStore {
    runtime: Option<tokio::runtime::Runtime>,
    link: Arc<Link>,
    mode: Mode,
    location: String,
    timeout: Duration,
    /// The ttl (ns) of each live view, from [`OnlineStore::retain`]: rows expire at twice it.
    ttls: RwLock<HashMap<ViewId, i64>>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // A store may be dropped on an async runtime's thread, where blocking is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The store's connection, renewed when a cluster stops answering through it.
///
/// The cluster client follows `MOVED` and `ASK`, but after a failover it can keep sending a
/// dead master's slots to the dead master until its requests time out; a new connection
/// learns the slots afresh from whichever node answers.
struct Link {
    options: RedisOptions,
    current: RwLock<Connection>,
    renewing: AtomicBool,
    renewed_at: Mutex<Instant>,
}

impl Link {
    fn get(&self) -> Connection {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Notes the outcome of an operation: after a transient error on a cluster, renews the
    /// connection in the background (one renewal at a time, at most every [`RENEW_EVERY`]).
    fn check<T>(self: &Arc<Self>, outcome: &Result<T>, mode: Mode) {
        let Err(e) = outcome else { return };
        if mode != Mode::Cluster || !e.is_transient() || self.renewing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let since = link
                .renewed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed();
            tokio::time::sleep(RENEW_EVERY.saturating_sub(since)).await;
            if let Ok((connection, _)) = Connection::open(&link.options).await {
                *link
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
            }
            *link
                .renewed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            link.renewing.store(false, Ordering::Release);
        });
    }
}

/// Runs `future` on `runtime` and waits for it from any thread (a plain thread, a blocking
/// thread of another runtime, or a handler of one).
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .map_err(|_| RedisStoreError::Runtime("the store's task stopped".into()))?
}

impl RedisStore {
    /// Connects to the deployment of `options` (plain Redis or Redis Cluster, told apart by
    /// asking the first node that answers).
    pub fn open(options: &RedisOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-redis")
            .enable_all()
            .build()
            .map_err(|e| RedisStoreError::Runtime(e.to_string()))?;
        let opening = options.clone();
        let (connection, mode) = wait(&runtime, async move { Connection::open(&opening).await })?;
        let mode_name = match mode {
            Mode::Standalone => "standalone",
            Mode::Cluster => "cluster",
        };
        Ok(Self {
            runtime: Some(runtime),
            link: Arc::new(Link {
                options: options.clone(),
                current: RwLock::new(connection),
                renewing: AtomicBool::new(false),
                renewed_at: Mutex::new(Instant::now()),
            }),
            mode,
            location: format!("{} ({mode_name})", connection::describe(options)),
            timeout: options.timeout,
            ttls: RwLock::default(),
            scripts: Arc::new(Scripts {
                write: scripts::write_newest(),
                acquire: scripts::acquire_lease(),
                release: scripts::release_lease(),
                record_run: scripts::record_run(),
            }),
        })
    }

    /// Whether the deployment is a cluster.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `op` with a connection on the store's runtime and waits for it.
    fn run<T, F>(&self, op: impl FnOnce(Connection, String) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (link, mode) = (Arc::clone(&self.link), self.mode);
        let operation = op(link.get(), self.location.clone());
        wait(self.runtime(), async move {
            let outcome = operation.await;
            link.check(&outcome, mode);
            outcome
        })
    }

    fn ttl_of(&self, view: &ViewId) -> Option<i64> {
        self.ttls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(view)
            .copied()
    }
}

/// Wraps a client error with the store's addresses.
fn redis_error(store: &str) -> impl Fn(redis::RedisError) -> RedisStoreError + '_ {
    move |source| RedisStoreError::Redis {
        store: store.to_owned(),
        source,
    }
}

/// One script call: rows of one bucket.
type Call = Vec<(Vec<u8>, Vec<u8>, i64)>;

/// Waits until every online replica of every master has every write its master had
/// acknowledged when this started (whichever connection sent it).
async fn replicate(mut conn: Connection, store: &str, timeout: Duration) -> Result<()> {
    let err = redis_error(store);
    let deadline = Instant::now() + timeout;
    for node in conn.masters().await.map_err(&err)? {
        let replication = redis::cmd("INFO").arg("replication").clone();
        let info: String = conn.on_node(&node, &replication).await.map_err(&err)?;
        let (offset, replicas) = connection::replication_offsets(&info);
        if replicas.is_empty() {
            continue;
        }
        // WAIT makes the replicas acknowledge at once what this connection wrote; the
        // offsets then show whether they have everything else too (replicas acknowledge
        // on their own every second).
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let _: usize = conn
            .on_node(&node, redis::cmd("WAIT").arg(replicas.len()).arg(millis))
            .await
            .map_err(&err)?;
        loop {
            let info: String = conn.on_node(&node, &replication).await.map_err(&err)?;
            let (_, replicas) = connection::replication_offsets(&info);
            let behind: Vec<&(String, u64)> =
                replicas.iter().filter(|(_, at)| *at < offset).collect();
            if behind.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(RedisStoreError::NotReplicated {
                    store: store.to_owned(),
                    message: format!(
                        "{} of {} replicas of {node} did not confirm the writes within {}",
                        behind.len(),
                        replicas.len(),
                        quiver_core::format_duration(timeout)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// One `SCAN` step on `node`: the next cursor and the keys matching `pattern`.
async fn scan_step(
    conn: &mut Connection,
    node: &connection::Node,
    cursor: &str,
    pattern: &str,
) -> redis::RedisResult<(String, Vec<Vec<u8>>)> {
    conn.on_node(
        node,
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT),
    )
    .await
}

/// Deletes every row and the watermark of one view generation, then forgets the range.
async fn delete_range(mut conn: Connection, store: &str, id: &ViewId) -> Result<()> {
    let err = redis_error(store);
    let meta = Meta::of(id.project());
    let member = keys::range_member(id);
    // The watermark goes first: a delete interrupted half-way never leaves a watermark that
    // claims the view's data is there.
    let () = conn
        .hdel(meta.watermarks(), &member)
        .await
        .map(|_: i64| ())
        .map_err(&err)?;
    let pattern = keys::range_pattern(id);
    for node in conn.masters().await.map_err(&err)? {
        let mut cursor = "0".to_owned();
        loop {
            let (next, found) = scan_step(&mut conn, &node, &cursor, &pattern)
                .await
                .map_err(&err)?;
            if !found.is_empty() {
                let _: i64 = conn.unlink(found).await.map_err(&err)?;
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
    }
    let _: i64 = conn.srem(meta.ranges(), &member).await.map_err(&err)?;
    Ok(())
}

impl OnlineStore for RedisStore {
    fn read<'a>(&'a self, reads: &'a [ViewKeys<'a>]) -> ReadFuture<'a> {
        let counts: Vec<usize> = reads.iter().map(|r| r.keys.len()).collect();
        let mut mget = redis::cmd("MGET");
        for r in reads {
            let prefix = keys::range_prefix(r.view);
            for k in r.keys {
                mget.arg(keys::row_key(&prefix, keys::bucket(k), k));
            }
        }
        let store = self.location.clone();
        let (link, mode) = (Arc::clone(&self.link), self.mode);
        let total: usize = counts.iter().sum();
        let query = async move {
            let outcome = mget
                .query_async::<Vec<Option<Vec<u8>>>>(&mut link.get())
                .await
                .map_err(redis_error(&store));
            link.check(&outcome, mode);
            outcome
        };
        // Awaited on the caller's runtime when it has one (a server's handler: no hop to
        // another runtime's threads); otherwise run on the store's own runtime.
        let answer: Option<futures::future::BoxFuture<'static, Result<_>>> =
            (total > 0).then(|| match tokio::runtime::Handle::try_current() {
                Ok(_) => query.boxed(),
                Err(_) => {
                    let task = self.runtime().spawn(query);
                    async move {
                        task.await
                            .map_err(|e| RedisStoreError::Runtime(e.to_string()))?
                    }
                    .boxed()
                }
            });
        let store = self.location.clone();
        Box::pin(async move {
            let Some(answer) = answer else {
                return Ok(counts.iter().map(|_| Vec::new()).collect());
            };
            let values = answer.await?;
            if values.len() != total {
                return Err(RedisStoreError::Unexpected {
                    store,
                    message: format!("{} values for {total} keys", values.len()),
                }
                .into());
            }
            let mut values = values.into_iter();
            Ok(counts
                .iter()
                .map(|n| values.by_ref().take(*n).collect())
                .collect::<StoredRows>())
        })
    }

    fn write(&self, batch: &[ViewRows<'_>], _durable: bool) -> quiver_online::Result<()> {
        let now_ms = quiver_core::now_nanos().div_euclid(1_000_000);
        let mut buckets: HashMap<u32, Call> = HashMap::new();
        let mut ranges: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for part in batch {
            if part.rows.is_empty() {
                continue;
            }
            ranges
                .entry(part.view.project())
                .or_default()
                .insert(keys::range_member(part.view));
            let prefix = keys::range_prefix(part.view);
            let ttl_ms = self.ttl_of(part.view).map(|t| t.div_euclid(1_000_000));
            for (entity, row) in part.rows {
                let expires = match ttl_ms {
                    Some(ttl) => {
                        let event_ms = Row::parse(row)?.event_ts().div_euclid(1_000_000);
                        let at = event_ms.saturating_add(ttl.saturating_mul(2));
                        // Already past its expiry: the store would drop it at once.
                        if at <= now_ms {
                            continue;
                        }
                        at
                    }
                    None => 0,
                };
                let bucket = keys::bucket(entity);
                buckets.entry(bucket).or_default().push((
                    keys::row_key(&prefix, bucket, entity),
                    row.clone(),
                    expires,
                ));
            }
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let ranges: Vec<(String, Vec<String>)> = ranges
            .into_iter()
            .map(|(project, members)| (Meta::of(project).ranges(), members.into_iter().collect()))
            .collect();
        let calls: Vec<Call> = buckets
            .into_values()
            .flat_map(|rows| {
                let mut calls = Vec::new();
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    calls.push(rows.by_ref().take(KEYS_PER_CALL).collect());
                }
                calls
            })
            .collect();
        let scripts = Arc::clone(&self.scripts);
        Ok(self.run(|conn, store| async move {
            let err = redis_error(&store);
            // The ranges are known before their rows exist, so a deletion always finds them.
            for (key, members) in ranges {
                let _: i64 = conn.clone().sadd(key, members).await.map_err(&err)?;
            }
            futures::stream::iter(calls)
                .map(|call| {
                    let (mut conn, scripts, err) = (conn.clone(), Arc::clone(&scripts), &err);
                    async move {
                        let mut invocation = scripts.write.prepare_invoke();
                        for (key, row, expires) in &call {
                            invocation.key(key).arg(row).arg(expires);
                        }
                        invocation.invoke_async::<i64>(&mut conn).await.map_err(err)
                    }
                })
                .buffer_unordered(CALLS_IN_FLIGHT)
                .try_for_each(|_| async { Ok(()) })
                .await
        })?)
    }

    fn flush(&self) -> quiver_online::Result<()> {
        // Every write was acknowledged by its master when it returned; Redis's own
        // persistence settings decide what survives a crash of the server.
        Ok(())
    }

    fn commit_watermark(&self, view: &ViewId, watermark: i64) -> quiver_online::Result<()> {
        // Replicas acknowledge what they have every second unless asked.
        let (meta, member, timeout) = (
            Meta::of(view.project()),
            keys::range_member(view),
            self.timeout + Duration::from_secs(1),
        );
        Ok(self.run(|mut conn, store| async move {
            replicate(conn.clone(), &store, timeout).await?;
            let _: i64 = conn
                .hset(meta.watermarks(), member, watermark)
                .await
                .map_err(redis_error(&store))?;
            Ok(())
        })?)
    }

    fn watermark(&self, view: &ViewId) -> quiver_online::Result<Option<i64>> {
        let (meta, member) = (Meta::of(view.project()), keys::range_member(view));
        Ok(self.run(|mut conn, store| async move {
            conn.hget(meta.watermarks(), member)
                .await
                .map_err(redis_error(&store))
        })?)
    }

    fn retain(
        &self,
        project: &str,
        version: u64,
        live: &[LiveView],
    ) -> quiver_online::Result<Vec<ViewId>> {
        {
            let mut ttls = self
                .ttls
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ttls.retain(|id, _| id.project() != project);
            for v in live {
                if let Some(ttl) = v.ttl_nanos.filter(|t| *t > 0) {
                    ttls.insert(v.id.clone(), ttl);
                }
            }
        }
        let project = project.to_owned();
        let live: Vec<ViewId> = live.iter().map(|v| v.id.clone()).collect();
        Ok(self.run(|mut conn, store| async move {
            let err = redis_error(&store);
            let meta = Meta::of(&project);
            let mut members: BTreeSet<String> = conn.smembers(meta.ranges()).await.map_err(&err)?;
            let marked: Vec<String> = conn.hkeys(meta.watermarks()).await.map_err(&err)?;
            members.extend(marked);
            let mut deleted = Vec::new();
            for member in members {
                let Some(id) = keys::parse_range_member(&project, &member) else {
                    continue;
                };
                if id.generation() <= version && !live.contains(&id) {
                    delete_range(conn.clone(), &store, &id).await?;
                    deleted.push(id);
                }
            }
            Ok(deleted)
        })?)
    }

    fn record_run(&self, run: &RunRecord) -> quiver_online::Result<()> {
        let meta = Meta::of(&run.project);
        let json = serde_json::to_string(run).map_err(|e| OnlineError::Corrupt(e.to_string()))?;
        let (field, view) = (keys::run_field(run.id), run.view.clone());
        let scripts = Arc::clone(&self.scripts);
        Ok(self.run(|mut conn, store| async move {
            let _: i64 = scripts
                .record_run
                .key(meta.runs(&view))
                .key(meta.run_views())
                .arg(field)
                .arg(json)
                .arg(&view)
                .arg(RUNS_KEPT)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error(&store))?;
            Ok(())
        })?)
    }

    fn runs(
        &self,
        project: &str,
        view: Option<&str>,
        limit: usize,
    ) -> quiver_online::Result<Vec<RunRecord>> {
        let meta = Meta::of(project);
        let view = view.map(str::to_owned);
        let texts = self.run(|mut conn, store| async move {
            let err = redis_error(&store);
            let views: Vec<String> = match view {
                Some(v) => vec![v],
                None => conn.smembers(meta.run_views()).await.map_err(&err)?,
            };
            let mut texts = Vec::new();
            for v in views {
                let runs: HashMap<String, String> =
                    conn.hgetall(meta.runs(&v)).await.map_err(&err)?;
                texts.extend(runs.into_values());
            }
            Ok(texts)
        })?;
        let mut runs = texts
            .iter()
            .map(|t| {
                serde_json::from_str::<RunRecord>(t)
                    .map_err(|e| OnlineError::Corrupt(format!("run record: {e}")))
            })
            .collect::<quiver_online::Result<Vec<_>>>()?;
        runs.sort_by_key(|r| std::cmp::Reverse(r.id));
        runs.truncate(limit);
        Ok(runs)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> quiver_online::Result<bool> {
        let (key, holder) = (keys::lease(name), holder.to_owned());
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let scripts = Arc::clone(&self.scripts);
        Ok(self.run(|mut conn, store| async move {
            let held: i64 = scripts
                .acquire
                .key(key)
                .arg(holder)
                .arg(millis)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error(&store))?;
            Ok(held == 1)
        })?)
    }

    fn release_lease(&self, name: &str, holder: &str) -> quiver_online::Result<()> {
        let (key, holder) = (keys::lease(name), holder.to_owned());
        let scripts = Arc::clone(&self.scripts);
        Ok(self.run(|mut conn, store| async move {
            let _: i64 = scripts
                .release
                .key(key)
                .arg(holder)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error(&store))?;
            Ok(())
        })?)
    }

    fn lease_holder(&self, name: &str) -> quiver_online::Result<Option<String>> {
        let key = keys::lease(name);
        Ok(self.run(|mut conn, store| async move {
            conn.get(key).await.map_err(redis_error(&store))
        })?)
    }

    fn stats(&self) -> quiver_online::Result<StoreStats> {
        Ok(self.run(|mut conn, store| async move {
            let err = redis_error(&store);
            let mut stats = StoreStats::default();
            for node in conn.masters().await.map_err(&err)? {
                let keys: u64 = conn
                    .on_node(&node, &redis::cmd("DBSIZE"))
                    .await
                    .map_err(&err)?;
                let memory: String = conn
                    .on_node(&node, redis::cmd("INFO").arg("memory"))
                    .await
                    .map_err(&err)?;
                stats.estimated_rows += keys;
                stats.memory_bytes += info_field(&memory, "used_memory").unwrap_or(0);
            }
            Ok(stats)
        })?)
    }

    fn view_contents(&self, view: &ViewId) -> quiver_online::Result<ViewContents> {
        let pattern = keys::range_pattern(view);
        Ok(self.run(|mut conn, store| async move {
            let err = redis_error(&store);
            let mut contents = ViewContents::default();
            for node in conn.masters().await.map_err(&err)? {
                let mut cursor = "0".to_owned();
                loop {
                    let (next, found) = scan_step(&mut conn, &node, &cursor, &pattern)
                        .await
                        .map_err(&err)?;
                    if !found.is_empty() {
                        let rows: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                            .arg(&found)
                            .query_async(&mut conn)
                            .await
                            .map_err(&err)?;
                        // A row that expired between SCAN and MGET is gone.
                        for row in rows.iter().flatten() {
                            let event = Row::parse(row)
                                .map_err(|e| RedisStoreError::Unexpected {
                                    store: store.clone(),
                                    message: e.to_string(),
                                })?
                                .event_ts();
                            contents.rows += 1;
                            contents.newest_event_ts =
                                Some(contents.newest_event_ts.map_or(event, |n| n.max(event)));
                        }
                    }
                    if next == "0" {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(contents)
        })?)
    }

    fn backup(&self, _dir: &Path) -> quiver_online::Result<()> {
        Err(OnlineError::FailedPrecondition(format!(
            "online store {} is backed up by Redis itself (RDB or AOF persistence, replicas); `quiver online backup` copies embedded stores",
            self.location
        )))
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
