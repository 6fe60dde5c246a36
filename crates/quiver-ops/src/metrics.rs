//! What the operations of one process did, as Prometheus metrics: online values by view and
//! status, pushes, materialization runs, training sets, and (computed when scraped) each
//! online view's freshness and the online store's figures. Names are Feast's where Feast has
//! the metric (`feast_online_features_status_total`, `feast_feature_freshness_seconds`, ...),
//! Quiver's own under `quiver_`. Recording is atomic increments on counters resolved once per
//! read plan, run or push; nothing here does IO until a scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use quiver_core::now_nanos;
use quiver_online::{FieldStatus, OnlineFeatures, RUNS_KEPT, RunOutcome, StatusCounts};

use crate::FeatureStore;
use crate::push::PushTarget;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValueLabels {
    feature_view: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    push_source: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    feature_view: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    feature_view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    feature_service: String,
}

/// What the feature log wrote, failed to write and dropped, by feature service (entity rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct FeatureLogCounters {
    written: Family<ServiceLabels, Counter>,
    failed: Family<ServiceLabels, Counter>,
    dropped: Family<ServiceLabels, Counter>,
}

impl FeatureLogCounters {
    fn add(family: &Family<ServiceLabels, Counter>, service: &str, rows: usize) {
        family
            .get_or_create(&ServiceLabels {
                feature_service: service.to_owned(),
            })
            .inc_by(rows as u64);
    }

    /// Rows written to a file.
    pub(crate) fn written(&self, service: &str, rows: usize) {
        Self::add(&self.written, service, rows);
    }

    /// Rows whose file could not be written.
    pub(crate) fn failed(&self, service: &str, rows: usize) {
        Self::add(&self.failed, service, rows);
    }

    /// Rows dropped because the queue was full.
    pub(crate) fn dropped(&self, service: &str, rows: usize) {
        Self::add(&self.dropped, service, rows);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    feature_view: String,
    feature: String,
    statistic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    feature_view: String,
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfflineLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// The counters of one view's answered values, one per [`FieldStatus`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueCounters(Vec<[Counter; 4]>);

impl ValueCounters {
    /// Adds what `read` answered, view by view (in the plan's view order).
    pub(crate) fn add(&self, read: &OnlineFeatures<'_>) {
        for (counters, (_, answered)) in self.0.iter().zip(read.answered()) {
            add_counts(counters, answered);
        }
    }
}

fn add_counts(counters: &[Counter; 4], answered: StatusCounts) {
    for (counter, n) in counters.iter().zip(answered) {
        if n > 0 {
            counter.inc_by(n);
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A histogram whose observations are atomic increments, exposed as prometheus-client's own
/// (whose observations take a mutex: contended between the cores on every request).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds, ascending, the last +Inf.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative).
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with buckets up to each of `bounds` (ascending) and +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramCells {
            bounds,
            counts,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }))
    }

    /// Records `v`.
    pub fn observe(&self, v: f64) {
        let h = &self.0;
        let i = h.bounds.partition_point(|b| *b < v).min(h.counts.len() - 1);
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let _ = h
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .zip(&h.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            f64::from_bits(h.sum.load(Ordering::Relaxed)),
            h.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// 1 ms to about 2.3 h.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 24))
}

/// 1 to about 1.7e10 rows.
fn rows_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 35))
}

/// 1 to 16,384 entity rows.
fn entities_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// The metrics of one process's operations.
#[derive(Debug)]
pub struct Metrics {
    online_requests: Counter,
    online_entities: Histogram,
    online_values: Family<ValueLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
    pushed_rows: Family<PushLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<ViewLabels>,
    materialized_rows: Family<ViewLabels, Counter>,
    offline_requests: Family<OfflineLabels, Counter>,
    offline_duration: HistogramFamily<MethodLabels>,
    offline_rows: HistogramFamily<MethodLabels>,
    drift_scores: Family<DriftLabels, Gauge<f64, AtomicU64>>,
    drifted: Family<FeatureLabels, Gauge>,
    /// The newest event time (ns) pushed online to each view by this process.
    pushed_newest: RwLock<HashMap<String, i64>>,
    /// The feature log's rows.
    pub(crate) feature_log: FeatureLogCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            online_requests: Counter::default(),
            online_entities: entities_histogram(),
            online_values: Family::default(),
            pushes: Family::default(),
            pushed_rows: Family::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            materialized_rows: Family::default(),
            offline_requests: Family::default(),
            offline_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            offline_rows: Family::new_with_constructor(rows_histogram as fn() -> Histogram),
            drift_scores: Family::default(),
            drifted: Family::default(),
            pushed_newest: RwLock::default(),
            feature_log: FeatureLogCounters::default(),
        }
    }
}

/// The name of a push mode in metrics, as Feast's.
fn mode_name(to: PushTarget) -> &'static str {
    match to {
        PushTarget::Online => "online",
        PushTarget::Offline => "offline",
        PushTarget::OnlineAndOffline => "online_and_offline",
    }
}

impl Metrics {
    /// The counters of the answered values of `views` (a read plan's views, in order).
    pub(crate) fn value_counters<'a>(&self, views: impl Iterator<Item = &'a str>) -> ValueCounters {
        ValueCounters(
            views
                .map(|view| {
                    FieldStatus::ALL.map(|status| {
                        self.online_values
                            .get_or_create(&ValueLabels {
                                feature_view: view.to_owned(),
                                status: status.metric_name(),
                            })
                            .clone()
                    })
                })
                .collect(),
        )
    }

    /// Records an online read of `entity_rows` rows.
    pub(crate) fn online_read(&self, entity_rows: usize) {
        self.online_requests.inc();
        self.online_entities.observe(entity_rows as f64);
    }

    /// Records a push of `rows` rows to `name` whose newest event time was `newest` for
    /// each of the online `views` it reached.
    pub(crate) fn pushed<'a>(
        &self,
        name: &str,
        to: PushTarget,
        rows: usize,
        newest: Option<i64>,
        views: impl Iterator<Item = &'a str>,
    ) {
        let labels = PushLabels {
            push_source: name.to_owned(),
            mode: mode_name(to),
        };
        self.pushes.get_or_create(&labels).inc();
        self.pushed_rows.get_or_create(&labels).inc_by(rows as u64);
        let Some(newest) = newest else { return };
        let mut pushed = self
            .pushed_newest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for view in views {
            let at = pushed.entry(view.to_owned()).or_insert(newest);
            *at = (*at).max(newest);
        }
    }

    /// Records the drift scores of a scheduled run's window.
    pub(crate) fn drift(&self, report: &quiver_stats::DriftReport) {
        for f in &report.features {
            let labels = FeatureLabels {
                feature_view: report.view.clone(),
                feature: f.feature.clone(),
            };
            self.drifted
                .get_or_create(&labels)
                .set(i64::from(f.verdict == quiver_stats::Verdict::Drifted));
            for s in &f.scores {
                self.drift_scores
                    .get_or_create(&DriftLabels {
                        feature_view: report.view.clone(),
                        feature: f.feature.clone(),
                        statistic: s.statistic.name(),
                    })
                    .set(s.value);
            }
        }
    }

    /// Records a finished materialization run of `view`.
    pub(crate) fn materialized(
        &self,
        view: &str,
        outcome: RunOutcome,
        rows: u64,
        duration: Duration,
    ) {
        let status = match outcome {
            RunOutcome::Succeeded => "success",
            RunOutcome::Cancelled => "cancelled",
            _ => "failure",
        };
        self.runs
            .get_or_create(&RunLabels {
                feature_view: view.to_owned(),
                status,
            })
            .inc();
        let labels = ViewLabels {
            feature_view: view.to_owned(),
        };
        self.run_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.materialized_rows.get_or_create(&labels).inc_by(rows);
    }

    /// Records a training set (Feast's `get_historical_features`) that ended after
    /// `duration` with `rows` rows sent, or failed.
    pub fn training_set(&self, succeeded: bool, rows: u64, duration: Duration) {
        let method = "get_historical_features";
        self.offline_requests
            .get_or_create(&OfflineLabels {
                method,
                status: if succeeded { "success" } else { "error" },
            })
            .inc();
        let labels = MethodLabels { method };
        self.offline_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.offline_rows
            .get_or_create(&labels)
            .observe(rows as f64);
    }

    /// The newest event time this process pushed online to `view`.
    pub(crate) fn pushed_newest(&self, view: &str) -> Option<i64> {
        self.pushed_newest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(view)
            .copied()
    }
}

impl FeatureStore {
    /// Registers this store's metrics in `registry`: the operations' counters, and a
    /// collector that works out each online view's freshness and the store's figures when
    /// scraped (it reads run records and the store's statistics: scrape from a thread that may
    /// block).
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "feast_online_features_request",
            "Online feature reads",
            m.online_requests.clone(),
        );
        registry.register(
            "feast_online_features_entity_count",
            "Entity rows per online read",
            m.online_entities.clone(),
        );
        registry.register(
            "feast_online_features_status",
            "Values answered by online reads, by feature view and status",
            m.online_values.clone(),
        );
        registry.register(
            "feast_push_request",
            "Pushes, by push source (the view or source named) and mode",
            m.pushes.clone(),
        );
        registry.register(
            "quiver_push_rows",
            "Rows pushed, by push source and mode",
            m.pushed_rows.clone(),
        );
        registry.register(
            "quiver_feature_drift_score",
            "Drift of the newest scheduled run's window against the view's monitoring.reference, by feature and statistic",
            m.drift_scores.clone(),
        );
        registry.register(
            "quiver_feature_drifted",
            "1 when a feature's newest scheduled run's window drifted from the view's monitoring.reference",
            m.drifted.clone(),
        );
        registry.register(
            "feast_materialization_result",
            "Materialization runs, by feature view and status",
            m.runs.clone(),
        );
        registry.register(
            "feast_materialization_duration_seconds",
            "Duration of materialization runs, by feature view",
            m.run_duration.clone(),
        );
        registry.register(
            "quiver_materialization_rows",
            "Rows written by materialization runs, by feature view",
            m.materialized_rows.clone(),
        );
        registry.register(
            "feast_offline_store_request",
            "Training sets, by method and status",
            m.offline_requests.clone(),
        );
        registry.register(
            "feast_offline_store_request_latency_seconds",
            "Duration of training sets, by method",
            m.offline_duration.clone(),
        );
        registry.register(
            "feast_offline_store_row_count",
            "Rows of training sets, by method",
            m.offline_rows.clone(),
        );
        registry.register(
            "quiver_feature_log_rows",
            "Entity rows of logged reads written to files, by feature service",
            m.feature_log.written.clone(),
        );
        registry.register(
            "quiver_feature_log_failed_rows",
            "Entity rows of logged reads whose file could not be written, by feature service",
            m.feature_log.failed.clone(),
        );
        registry.register(
            "quiver_feature_log_dropped_rows",
            "Entity rows of sampled reads dropped because the log's queue was full, by feature service",
            m.feature_log.dropped.clone(),
        );
        registry.register_collector(Box::new(ScrapeTime(Arc::clone(self))));
    }
}

/// What each scrape works out: freshness per online view and the store's figures.
#[derive(Debug)]
struct ScrapeTime(Arc<FeatureStore>);

/// Each online view's freshness figures at `now` (seconds), by view.
struct Freshness {
    view: String,
    /// Now minus the end of the newest successful run's window (Feast's freshness).
    since_window_end: Option<f64>,
    /// Now minus the newest event time written online (by a run, or pushed here).
    since_newest_event: Option<f64>,
    /// Now minus the end of the newest successful run.
    since_last_success: Option<f64>,
}

impl ScrapeTime {
    fn freshness(&self) -> Vec<Freshness> {
        let store = &self.0;
        let now = now_nanos();
        let age = |t: i64| now.saturating_sub(t) as f64 / 1e9;
        let snapshot = store.snapshot();
        snapshot
            .online_views()
            .map(|v| {
                let runs = store
                    .store
                    .runs(&snapshot.defs.project, Some(&v.name), RUNS_KEPT)
                    .unwrap_or_default();
                let succeeded = || runs.iter().filter(|r| r.outcome == RunOutcome::Succeeded);
                let newest = succeeded()
                    .filter_map(|r| r.newest_event_ts)
                    .chain(store.metrics.pushed_newest(&v.name))
                    .max();
                Freshness {
                    view: v.name.clone(),
                    since_window_end: succeeded().map(|r| r.window_end).max().map(age),
                    since_newest_event: newest.map(age),
                    since_last_success: succeeded().filter_map(|r| r.finished_at).max().map(age),
                }
            })
            .collect()
    }
}

/// Encodes one gauge family of `(labels, value)` pairs.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectViewLabels {
    feature_view: String,
    project: String,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let freshness = self.freshness();
        let project = &self.0.config.project;
        let view = |f: &Freshness| ViewLabels {
            feature_view: f.view.clone(),
        };
        gauges(
            &mut encoder,
            "feast_feature_freshness_seconds",
            "Seconds since the end of the newest successful materialization window, per feature view",
            freshness.iter().filter_map(|f| {
                f.since_window_end.map(|s| {
                    (
                        ProjectViewLabels {
                            feature_view: f.view.clone(),
                            project: project.clone(),
                        },
                        s,
                    )
                })
            }),
        )?;
        gauges(
            &mut encoder,
            "quiver_feature_view_newest_event_age_seconds",
            "Seconds since the newest event time written online (materialized, or pushed to this process), per feature view",
            freshness
                .iter()
                .filter_map(|f| f.since_newest_event.map(|s| (view(f), s))),
        )?;
        gauges(
            &mut encoder,
            "quiver_materialization_last_success_age_seconds",
            "Seconds since the newest successful materialization run ended, per feature view",
            freshness
                .iter()
                .filter_map(|f| f.since_last_success.map(|s| (view(f), s))),
        )?;
        // A store that cannot answer now leaves its figures out of this scrape.
        if let Ok(stats) = self.0.store.stats() {
            let figures: [(&str, &str, u64); 5] = [
                (
                    "quiver_online_store_estimated_rows",
                    "The store's estimate of its stored keys",
                    stats.estimated_rows,
                ),
                (
                    "quiver_online_store_disk_bytes",
                    "Bytes on disk (RocksDB's SST files)",
                    stats.disk_bytes,
                ),
                (
                    "quiver_online_store_memory_bytes",
                    "Bytes in memory (RocksDB's memtables; Redis's used memory)",
                    stats.memory_bytes,
                ),
                (
                    "quiver_online_store_pending_compaction_bytes",
                    "Bytes compaction still has to rewrite",
                    stats.pending_compaction_bytes,
                ),
                (
                    "quiver_online_store_running_compactions",
                    "Compactions and flushes running now",
                    stats.running_compactions,
                ),
            ];
            for (name, help, value) in figures {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
            let cache: [(&str, &str, u64); 2] = [
                (
                    "quiver_online_store_block_cache_hits",
                    "Block reads the block cache answered since the store opened",
                    stats.block_cache_hits,
                ),
                (
                    "quiver_online_store_block_cache_misses",
                    "Block reads that missed the block cache since the store opened",
                    stats.block_cache_misses,
                ),
            ];
            for (name, help, value) in cache {
                let counter = ConstCounter::new(value);
                counter.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    counter.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atomic_histogram_is_exposed_as_a_histogram() {
        let h = Histogram::new([1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 3.0, 1e9] {
            h.observe(v);
        }
        let mut registry = Registry::default();
        registry.register("latency_seconds", "Test", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE latency_seconds histogram",
            "latency_seconds_sum 1000000004.5",
            "latency_seconds_count 4",
            "latency_seconds_bucket{le=\"1.0\"} 2",
            "latency_seconds_bucket{le=\"2.0\"} 2",
            "latency_seconds_bucket{le=\"4.0\"} 3",
            "latency_seconds_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
