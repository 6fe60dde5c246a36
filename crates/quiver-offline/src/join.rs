//! [`PointInTimeJoin`]: the training-set engine.
//!
//! For each requested view, the entity rows are grouped by canonical key and sorted by event
//! time. The view's source is then streamed once (key and time columns only, row groups
//! outside `[min(T) - ttl, max(T)]` never decoded): each source row is offered to the first
//! entity row of its key whose time `T` is not before it (binary search), keeping the greatest
//! `(event_ts, created_ts, sequence)` there. A running maximum over each key's rows then gives
//! every entity row the newest source row at or before its `T` — an as-of join in time linear
//! in the source and `n log n` in the entity table, never a product. The ttl is checked on the
//! winner, and only winning rows have their features decoded (Parquet row selection).
//!
//! Memory is the per-entity-row state plus the result columns. When that would exceed
//! [`JoinOptions::memory_limit`], the entity rows of a view are split by key hash into
//! partitions processed one after another, each partition's result spilled to a temporary
//! Arrow IPC file and merged back in input order as the result is read.
//!
//! Tie-break: equal event and created times go to the later row in source order (files sorted
//! by path, then row position), as in materialization.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{cast, concat, concat_batches, filter_record_batch, take, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType};
use foldhash::fast::FixedState;
use quiver_core::{Definitions, Feature, FeatureView, JoinKey, ResolvedFeature};

use crate::entities::{EVENT_TIMESTAMP, event_timestamp_column};
use crate::error::{OfflineError, Result};
use quiver_core::{KeyColumns, canonical_order, column_fits_key, is_single_int};
use quiver_source::{KeyAndTimes, SourceScan, Sources, Task, in_parallel, nanos};

use crate::keys::KeyIndex;
use crate::spill::{SpillWriter, SpilledColumns};

/// How a join runs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Also require `created_ts <= T` of a candidate row (no backfill leakage).
    pub as_of_created: bool,
    /// Memory for the join state and result columns, in bytes (default 4 GiB); beyond it,
    /// partitions spill.
    pub memory_limit: usize,
    /// Where spill files go (the system's temporary folder by default).
    pub spill_dir: Option<PathBuf>,
    /// Worker threads (the number of cores by default).
    pub threads: usize,
    /// Rows per output batch.
    pub batch_rows: usize,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            as_of_created: false,
            memory_limit: 4 << 30,
            spill_dir: None,
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            batch_rows: 64 * 1024,
        }
    }
}

/// Progress of a join, for progress bars.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// A pass over this many more source rows is planned.
    Planned(u64),
    /// This many more source rows were scanned.
    Scanned(u64),
}

/// The features requested of one view, with their positions among all requested features.
struct ViewRequest<'a> {
    view: &'a FeatureView,
    features: Vec<(usize, &'a Feature)>,
}

/// A point-in-time join of requested features onto entity tables.
pub struct PointInTimeJoin<'a> {
    defs: &'a Definitions,
    sources: &'a Sources,
    features: Vec<ResolvedFeature>,
    views: Vec<ViewRequest<'a>>,
    options: JoinOptions,
}

/// The version of a source row: `(event_ts, created_ts, sequence)`, compared as a tuple.
type Version = (i64, i64, u64);
const NO_VERSION: Version = (i64::MIN, i64::MIN, 0);

impl<'a> PointInTimeJoin<'a> {
    /// Plans a join of `features` (resolved against `defs`, in output order). Every view must
    /// be `offline`.
    pub fn new(
        defs: &'a Definitions,
        sources: &'a Sources,
        features: Vec<ResolvedFeature>,
        options: JoinOptions,
    ) -> Result<Self> {
        if features.is_empty() {
            return Err(OfflineError::invalid("no features requested"));
        }
        let mut views: Vec<ViewRequest<'a>> = Vec::new();
        for (i, f) in features.iter().enumerate() {
            let view = defs.view(&f.view)?;
            if !view.offline {
                return Err(OfflineError::invalid(format!(
                    "feature view '{}' is not offline (offline: false)",
                    view.name
                )));
            }
            let feature = &view.features[f.index];
            match views.iter_mut().find(|v| v.view.name == view.name) {
                Some(v) => v.features.push((i, feature)),
                None => views.push(ViewRequest {
                    view,
                    features: vec![(i, feature)],
                }),
            }
        }
        Ok(Self {
            defs,
            sources,
            features,
            views,
            options,
        })
    }

    /// The definitions the join resolves against.
    pub fn definitions(&self) -> &'a Definitions {
        self.defs
    }

    /// The sources the join reads.
    pub fn sources(&self) -> &'a Sources {
        self.sources
    }

    /// How the join runs.
    pub fn options(&self) -> &JoinOptions {
        &self.options
    }

    /// The requested views in first-use order, each with its requested features and their
    /// positions among all requested features.
    pub fn views(&self) -> impl Iterator<Item = (&'a FeatureView, &[(usize, &'a Feature)])> {
        self.views.iter().map(|v| (v.view, v.features.as_slice()))
    }

    /// A training set of features another engine joined onto `entities`: for each view of
    /// [`Self::views`], in that order, one column per requested feature with one value per
    /// entity row, in input order, of the feature's declared Arrow type.
    pub fn assemble(
        &self,
        entities: RecordBatch,
        columns: Vec<Vec<ArrayRef>>,
    ) -> Result<TrainingSet> {
        let schema = self.output_schema(entities.schema_ref())?;
        if columns.len() != self.views.len() {
            return Err(OfflineError::invalid(format!(
                "{} views were joined, {} requested",
                columns.len(),
                self.views.len()
            )));
        }
        let mut views = Vec::with_capacity(columns.len());
        for (request, arrays) in self.views.iter().zip(columns) {
            if arrays.len() != request.features.len() {
                return Err(OfflineError::invalid(format!(
                    "feature view '{}': {} columns joined, {} features requested",
                    request.view.name,
                    arrays.len(),
                    request.features.len()
                )));
            }
            for ((_, feature), array) in request.features.iter().zip(&arrays) {
                let expected = feature.value_type.to_arrow();
                if array.len() != entities.num_rows() || array.data_type() != &expected {
                    return Err(OfflineError::invalid(format!(
                        "feature '{}:{}' was joined as {} values of type {}, not {} of {expected}",
                        request.view.name,
                        feature.name,
                        array.len(),
                        array.data_type(),
                        entities.num_rows()
                    )));
                }
            }
            let positions = request.features.iter().map(|(i, _)| *i).collect();
            views.push((positions, ViewColumns::Memory(arrays)));
        }
        Ok(self.training_set(schema, entities, views))
    }

    /// The training set of `entities` with each view's feature positions and columns.
    fn training_set(
        &self,
        schema: SchemaRef,
        entities: RecordBatch,
        views: Vec<(Vec<usize>, ViewColumns)>,
    ) -> TrainingSet {
        TrainingSet {
            schema,
            entities,
            views,
            offset: 0,
            batch_rows: self.options.batch_rows.max(1),
        }
    }

    /// Every join key the entity table must have, by name, in first-use order.
    pub fn join_keys(&self) -> Result<Vec<JoinKey>> {
        let mut keys: Vec<JoinKey> = Vec::new();
        for v in &self.views {
            for k in self.defs.join_keys(v.view)? {
                if !keys.iter().any(|x| x.name == k.name) {
                    keys.push(k);
                }
            }
        }
        Ok(keys)
    }

    /// The schema of the training set for an entity table of schema `entities`: its columns,
    /// then the features. Checks the entity table without reading any data.
    pub fn output_schema(&self, entities: &Schema) -> Result<SchemaRef> {
        for (i, field) in entities.fields().iter().enumerate() {
            if entities.fields()[..i]
                .iter()
                .any(|f| f.name() == field.name())
            {
                return Err(OfflineError::invalid(format!(
                    "entity table has two columns named '{}'",
                    field.name()
                )));
            }
        }
        event_timestamp_column(entities)?;
        for v in &self.views {
            for k in self.defs.join_keys(v.view)? {
                let field = entities.field_with_name(&k.name).map_err(|_| {
                    OfflineError::invalid(format!(
                        "entity table has no column '{}' (a join key of feature view '{}')",
                        k.name, v.view.name
                    ))
                })?;
                if !column_fits_key(k.key_type, field.data_type()) {
                    return Err(OfflineError::invalid(format!(
                        "entity table column '{}' has type {}, but join key '{}' of feature view '{}' is {}",
                        k.name,
                        field.data_type(),
                        k.name,
                        v.view.name,
                        k.key_type
                    )));
                }
            }
        }
        let mut fields: Vec<Arc<Field>> = entities.fields().iter().cloned().collect();
        for f in &self.features {
            if entities.field_with_name(&f.output_name).is_ok() {
                return Err(OfflineError::invalid(format!(
                    "feature '{}:{}' would be output as '{}', which is already a column of the entity table; request full feature names or rename the column",
                    f.view, f.feature.name, f.output_name
                )));
            }
            fields.push(Arc::new(Field::new(
                &f.output_name,
                f.feature.value_type.to_arrow(),
                true,
            )));
        }
        Ok(Arc::new(Schema::new_with_metadata(
            fields,
            entities.metadata().clone(),
        )))
    }

    /// Joins the features onto `entities`; the result streams in input order.
    pub fn run(
        &self,
        entities: RecordBatch,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<TrainingSet> {
        let schema = self.output_schema(entities.schema_ref())?;
        if u32::try_from(entities.num_rows()).is_err() {
            return Err(OfflineError::invalid(
                "entity table has more than 4 billion rows; split it",
            ));
        }
        let times = nanos(entities.column(event_timestamp_column(entities.schema_ref())?))
            .ok_or_else(|| OfflineError::invalid("event timestamp is not a timestamp"))?;
        let mut views = Vec::with_capacity(self.views.len());
        for v in &self.views {
            let columns = self.join_view(v, &entities, &times, progress)?;
            views.push((v.features.iter().map(|(i, _)| *i).collect(), columns));
        }
        Ok(self.training_set(schema, entities, views))
    }

    /// The training set of a time range (the entity rows of
    /// [`PointInTimeJoin::entity_rows_in_range`]), joined slice by slice in time order: a
    /// slice whose entity rows would need more than a third of the memory limit is halved, so
    /// memory stays bounded however long the range. Each batch (of [`Self::range_schema`]) goes
    /// to `emit`, which returns `false` to stop.
    pub fn run_range(
        &self,
        start: i64,
        end: i64,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        // A stack of slices, the next one last.
        let mut slices = vec![(start, end)];
        while let Some((from, to)) = slices.pop() {
            match self.entity_rows_in_range(from, to) {
                Ok(rows) => {
                    for batch in self.run(rows, &|_| {})? {
                        if !emit(batch?) {
                            return Ok(());
                        }
                    }
                }
                Err(OfflineError::LimitExceeded(_)) if from < to => {
                    let mid = from + (to - from) / 2;
                    slices.push((mid + 1, to));
                    slices.push((from, mid));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The schema of [`Self::run_range`]'s batches.
    pub fn range_schema(&self) -> Result<SchemaRef> {
        self.output_schema(&self.range_entity_schema()?.1)
    }

    /// The join keys (canonical order) and schema of a time range's entity rows: the keys,
    /// then `event_timestamp`. The views must share their join keys.
    fn range_entity_schema(&self) -> Result<(Vec<JoinKey>, SchemaRef)> {
        let first = self.views[0].view;
        let keys = canonical_order(self.defs.join_keys(first)?);
        for v in &self.views[1..] {
            if canonical_order(self.defs.join_keys(v.view)?) != keys {
                return Err(OfflineError::invalid(format!(
                    "a training set without an entity table needs views with the same join keys; '{}' and '{}' differ",
                    first.name, v.view.name
                )));
            }
        }
        let mut fields: Vec<Field> = keys
            .iter()
            .map(|k| Field::new(&k.name, k.key_type.value_type().to_arrow(), true))
            .collect();
        fields.push(Field::new(
            EVENT_TIMESTAMP,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ));
        Ok((keys, Arc::new(Schema::new(fields))))
    }

    /// The entity rows of a training set with no entity table: every distinct `(keys, event
    /// time)` of the requested views' sources with `start <= event_ts <= end` (ns), sorted by
    /// time. The views must share their join keys. Refused beyond a third of the memory limit
    /// ([`Self::run_range`] splits the range instead).
    pub fn entity_rows_in_range(&self, start: i64, end: i64) -> Result<RecordBatch> {
        let (keys, schema) = self.range_entity_schema()?;
        let mut batches = Vec::new();
        let mut sources = HashSet::new();
        // The rows are held (then sorted and deduplicated) in memory: at most a third of the
        // memory limit, so the whole stays within it.
        let budget = self.options.memory_limit / 3;
        let held = std::sync::atomic::AtomicUsize::new(0);
        for v in &self.views {
            if !sources.insert(&v.view.source) {
                continue;
            }
            let scan = self.open_scan(v.view, &[])?;
            let tasks = scan.tasks(start, end);
            let columns = scan.key_and_time_columns();
            let found = in_parallel(tasks.len(), self.options.threads, Vec::new, |t, out| {
                let task = &tasks[t];
                for batch in scan.reader(task, &columns, None)? {
                    let batch = batch.map_err(|e| scan.error(task.file, e.to_string()))?;
                    let ts = scan.key_and_times(&batch, task.file)?.event;
                    let keep: arrow::array::BooleanArray = (0..batch.num_rows())
                        .map(|i| Some(ts.is_valid(i) && (start..=end).contains(&ts.value(i))))
                        .collect();
                    let mut cols: Vec<ArrayRef> = Vec::with_capacity(keys.len() + 1);
                    for (k, c) in scan.keys().zip(scan.key_columns()) {
                        let a = batch.column_by_name(c).ok_or_else(|| {
                            scan.error(task.file, format!("column '{c}' is missing"))
                        })?;
                        cols.push(cast(a, &k.key_type.value_type().to_arrow())?);
                    }
                    cols.push(Arc::new(
                        ts.reinterpret_cast::<TimestampNanosecondType>()
                            .with_timezone("UTC"),
                    ));
                    let rows =
                        filter_record_batch(&RecordBatch::try_new(schema.clone(), cols)?, &keep)?;
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    let size = data_bytes(&rows);
                    if held.fetch_add(size, std::sync::atomic::Ordering::Relaxed) + size > budget {
                        return Err(OfflineError::LimitExceeded(format!(
                            "the entity rows at {start}..{end} (ns) need more than a third of the join's memory limit ({} MiB); raise --memory-limit-mb, or send the entity rows as a table (which spills)",
                            self.options.memory_limit >> 20
                        )));
                    }
                    out.push(rows);
                }
                Ok::<_, OfflineError>(())
            })?;
            batches.extend(found.into_iter().flatten());
        }
        let all = concat_batches(&schema, &batches)?;
        // Distinct rows with non-null keys, sorted by (time, key).
        let key_refs: Vec<&ArrayRef> = all.columns()[..keys.len()].iter().collect();
        let key_columns = KeyColumns::new(&keys, &key_refs)?;
        let times =
            nanos(all.column(keys.len())).unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        let mut rows: Vec<(i64, Vec<u8>, u32)> = Vec::with_capacity(all.num_rows());
        for i in 0..all.num_rows() {
            let mut key = Vec::new();
            if key_columns.encode(i, &mut key) {
                rows.push((times.value(i), key, u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        rows.sort_unstable();
        rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let indices = UInt32Array::from_iter_values(rows.into_iter().map(|r| r.2));
        let columns = all
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<arrow::error::Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Opens the source of `view` for reading its keys, times and `features`.
    fn open_scan(&self, view: &FeatureView, features: &[&Feature]) -> Result<SourceScan> {
        let source = self.defs.sources.get(&view.source).ok_or_else(|| {
            OfflineError::invalid(format!(
                "feature view '{}' names unknown source '{}'",
                view.name, view.source
            ))
        })?;
        Ok(self
            .sources
            .scan(source, self.defs.join_keys(view)?, features)?)
    }

    /// Joins one view: its requested features for every entity row, in input order.
    fn join_view(
        &self,
        request: &ViewRequest<'a>,
        entities: &RecordBatch,
        times: &Int64Array,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ViewColumns> {
        let view = request.view;
        let features: Vec<&Feature> = request.features.iter().map(|(_, f)| *f).collect();
        let scan = self.open_scan(view, &features)?;
        let join_keys: Vec<JoinKey> = scan.keys().cloned().collect();
        let key_columns: Vec<&ArrayRef> = join_keys
            .iter()
            .map(|k| {
                entities.column_by_name(&k.name).ok_or_else(|| {
                    OfflineError::invalid(format!("entity table has no column '{}'", k.name))
                })
            })
            .collect::<Result<_>>()?;
        let key_columns = KeyColumns::new(&join_keys, &key_columns)?;

        // Every entity row's key group, each distinct canonical key stored once.
        let n = entities.num_rows();
        let keys = EntityKeys::build(n, &key_columns, times);
        let int_of = |i: usize| key_columns.int(i);
        let int_key_at: Option<&dyn Fn(usize) -> Option<i64>> =
            is_single_int(&join_keys).then_some(&int_of);
        let partitions = self.partitions(n, keys.index.bytes(), &features);
        let ttl = view
            .ttl
            .limit()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));

        if partitions == 1 {
            let side = EntitySide::build(&keys, int_key_at, times, |_| true);
            let winners = self.find_winners(&scan, &side, ttl, progress)?;
            let rows: Vec<u32> = (0..u32::try_from(n).unwrap_or(u32::MAX)).collect();
            let columns = self.fetch(&scan, &features, &side, &winners, &rows)?;
            return Ok(ViewColumns::Memory(columns));
        }
        let dir = self
            .options
            .spill_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        // A key's rows all go to the partition of its hash; rows without a key to the first.
        let hasher = FixedState::with_seed(0x5155_4956_4552);
        let partition_of_group: Vec<u32> = (0..keys.index.len())
            .map(|g| (hasher.hash_one(keys.index.key(g as u32)) % partitions as u64) as u32)
            .collect();
        let partition_of_row: Vec<u32> = keys
            .group
            .iter()
            .map(|&g| {
                if g == NO_GROUP {
                    0
                } else {
                    partition_of_group[g as usize]
                }
            })
            .collect();
        drop(partition_of_group);
        let mut spilled = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let mine = |i: usize| partition_of_row[i] as usize == p;
            let side = EntitySide::build(&keys, int_key_at, times, mine);
            let winners = self.find_winners(&scan, &side, ttl, progress)?;
            let rows: Vec<u32> = (0..n)
                .filter(|&i| mine(i))
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect();
            let columns = self.fetch(&scan, &features, &side, &winners, &rows)?;
            let mut writer = SpillWriter::create(&dir)?;
            writer.write(&rows, &columns, self.options.batch_rows)?;
            spilled.push(writer.finish()?);
        }
        Ok(ViewColumns::Spilled(SpilledColumns::new(
            spilled,
            partition_of_row,
        )))
    }

    /// How many partitions keep one view's join state and result within the memory limit.
    fn partitions(&self, rows: usize, key_bytes: usize, features: &[&Feature]) -> usize {
        let width: usize = features
            .iter()
            .map(|f| match f.value_type.to_arrow().primitive_width() {
                Some(w) => w + 1,
                None => 40,
            })
            .sum();
        // Sorted entity state, one version per worker, winner, take index; the result and the
        // decoded winning rows.
        let per_row = 48 + 24 * self.options.threads.max(1) + 2 * width;
        let total = rows * per_row + key_bytes;
        total.div_ceil(self.options.memory_limit.max(1)).max(1)
    }

    /// Pass 1: the winning source row (its sequence) of every entity row of `side`, by sorted
    /// position.
    fn find_winners(
        &self,
        scan: &SourceScan,
        side: &EntitySide<'_>,
        ttl: Option<i64>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<Option<u64>>> {
        if side.rows.is_empty() {
            return Ok(Vec::new());
        }
        let lo = ttl.map_or(i64::MIN, |l| side.min_t.saturating_sub(l));
        let hi = side.max_t;
        let tasks = scan.tasks(lo, hi);
        progress(Progress::Planned(tasks.iter().map(|t| t.rows).sum()));
        let columns = scan.key_and_time_columns();
        let as_of_created = self.options.as_of_created;
        // Each worker's best version offered to each position; a probe searches the key's run
        // of the shared entity times and updates one slot.
        let states = in_parallel(
            tasks.len(),
            self.options.threads,
            || vec![NO_VERSION; side.times.len()],
            |t, best| {
                let task = &tasks[t];
                let mut row = 0u64;
                let mut probe = Probe::default();
                for batch in scan.reader(task, &columns, None)? {
                    let batch = batch.map_err(|e| scan.error(task.file, e.to_string()))?;
                    let times = scan.key_and_times(&batch, task.file)?;
                    let ts = &times.event;
                    probe.find_runs(side, &times, lo, hi);
                    // Each source row's position: the first of its key's entity rows not
                    // before it.
                    probe.offers.clear();
                    for &(i, from, to) in &probe.runs {
                        let i = i as usize;
                        let event = ts.value(i);
                        let effective = if as_of_created {
                            event.max(times.created_at(i))
                        } else {
                            event
                        };
                        let (from, to) = (from as usize, to as usize);
                        let at = from + side.times[from..to].partition_point(|&t| t < effective);
                        if at < to {
                            probe.offers.push((at as u32, i as u32));
                        }
                    }
                    for &(at, i) in &probe.offers {
                        let i = i as usize;
                        let version = (
                            ts.value(i),
                            times.created_at(i),
                            task.sequence(row + i as u64),
                        );
                        let slot = &mut best[at as usize];
                        if *slot < version {
                            *slot = version;
                        }
                    }
                    row += batch.num_rows() as u64;
                    progress(Progress::Scanned(batch.num_rows() as u64));
                }
                Ok::<_, OfflineError>(())
            },
        )?;
        // Every worker's best offer to each position, merged into the first worker's.
        let mut states = states.into_iter();
        let mut best = states.next().unwrap_or_default();
        for other in states {
            for (b, o) in best.iter_mut().zip(other) {
                if *b < o {
                    *b = o;
                }
            }
        }
        // The running maximum over each key's rows in time order is the newest candidate.
        let mut winners = vec![None; side.rows.len()];
        for g in 0..side.group_count() {
            let (from, to) = side.group(g);
            let (from, to) = (from as usize, to as usize);
            let mut newest = NO_VERSION;
            for s in from..to {
                newest = newest.max(best[s]);
                let fresh = newest != NO_VERSION
                    && ttl.is_none_or(|l| newest.0 >= side.times[s].saturating_sub(l));
                winners[s] = fresh.then_some(newest.2);
            }
        }
        Ok(winners)
    }

    /// Pass 2: decodes the winning source rows and lays their features out for `rows`
    /// (ascending entity row numbers; every row of `side` is among them).
    fn fetch(
        &self,
        scan: &SourceScan,
        features: &[&Feature],
        side: &EntitySide<'_>,
        winners: &[Option<u64>],
        rows: &[u32],
    ) -> Result<Vec<ArrayRef>> {
        // (winner, entity row) sorted by winner: distinct winners get consecutive positions
        // in `seqs`, without a search per row.
        let mut pairs: Vec<(u64, u32)> = winners
            .iter()
            .zip(&side.rows)
            .filter_map(|(w, &row)| w.map(|seq| (seq, row)))
            .collect();
        pairs.sort_unstable();
        let mut seqs: Vec<u64> = Vec::with_capacity(pairs.len());
        // Which output row gets which winner; `rows` is ascending, and is every row when the
        // view is not partitioned.
        let mut index: Vec<Option<u32>> = vec![None; rows.len()];
        let whole = rows.len() == rows.last().map_or(0, |&r| r as usize + 1);
        for (seq, row) in pairs {
            if seqs.last() != Some(&seq) {
                seqs.push(seq);
            }
            let at = u32::try_from(seqs.len() - 1).ok();
            let pos = if whole {
                Ok(row as usize)
            } else {
                rows.binary_search(&row)
            };
            if let Ok(pos) = pos {
                index[pos] = at;
            }
        }
        let indices = UInt32Array::from(index);
        let decoded = self.decode_rows(scan, features, &seqs)?;
        features
            .iter()
            .zip(decoded)
            .map(|(f, values)| match values {
                Some(values) => Ok(take(&values, &indices, None)?),
                None => Ok(new_null_array(&f.value_type.to_arrow(), rows.len())),
            })
            .collect()
    }

    /// The features of the source rows `seqs` (ascending), one array per feature in `seqs`
    /// order (`None` when there are no rows).
    fn decode_rows(
        &self,
        scan: &SourceScan,
        features: &[&Feature],
        seqs: &[u64],
    ) -> Result<Vec<Option<ArrayRef>>> {
        if seqs.is_empty() {
            return Ok(vec![None; features.len()]);
        }
        let tasks: Vec<(Task, Vec<u32>)> = scan
            .tasks(i64::MIN, i64::MAX)
            .into_iter()
            .filter_map(|task| {
                let first = task.sequence(0);
                let from = seqs.partition_point(|&s| s < first);
                let to = seqs.partition_point(|&s| s < first + task.rows);
                let rows: Vec<u32> = seqs[from..to]
                    .iter()
                    .map(|s| u32::try_from(s - first).unwrap_or(u32::MAX))
                    .collect();
                (!rows.is_empty()).then_some((task, rows))
            })
            .collect();
        let columns: Vec<&str> = features.iter().map(|f| scan.feature_column(f)).collect();
        let parts = in_parallel(tasks.len(), self.options.threads, Vec::new, |t, out| {
            let (task, rows) = &tasks[t];
            // Many winners in a row group: decoding it whole and picking rows beats a
            // selection of scattered single rows.
            let dense = rows.len() as u64 * 8 >= task.rows;
            let (mut offset, mut next) = (0u32, 0usize);
            for batch in scan.reader(task, &columns, (!dense).then_some(rows))? {
                let mut batch = batch.map_err(|e| scan.error(task.file, e.to_string()))?;
                if dense {
                    let end = offset + u32::try_from(batch.num_rows()).unwrap_or(u32::MAX);
                    let from = next;
                    while next < rows.len() && rows[next] < end {
                        next += 1;
                    }
                    let picks =
                        UInt32Array::from_iter_values(rows[from..next].iter().map(|r| r - offset));
                    batch = take_record_batch(&batch, &picks)?;
                    offset = end;
                }
                let arrays = features
                    .iter()
                    .map(|f| scan.feature_array(&batch, task.file, f))
                    .collect::<quiver_source::Result<Vec<_>>>()?;
                out.push((t, arrays));
            }
            Ok::<_, OfflineError>(())
        })?;
        let mut parts: Vec<(usize, Vec<ArrayRef>)> = parts.into_iter().flatten().collect();
        // Tasks are in sequence order; a task's batches were pushed in order (stable sort).
        parts.sort_by_key(|(t, _)| *t);
        let mut by_feature: Vec<Vec<ArrayRef>> =
            vec![Vec::with_capacity(parts.len()); features.len()];
        for (_, arrays) in parts {
            for (column, array) in by_feature.iter_mut().zip(arrays) {
                column.push(array);
            }
        }
        // Each feature's parts are freed as soon as they are concatenated.
        by_feature
            .into_iter()
            .map(|column| {
                let arrays: Vec<&dyn Array> = column.iter().map(AsRef::as_ref).collect();
                Ok(Some(concat(&arrays)?))
            })
            .collect()
    }
}

/// One worker's buffers for probing a source batch against an [`EntitySide`] in stages.
/// Each stage is a loop of independent steps over the batch, so the cache misses of many rows
/// (hash table, key arena, group runs, entity times, best versions) are in flight at once
/// instead of one row's chain of them at a time.
#[derive(Default)]
struct Probe {
    /// Encoded keys of the batch's candidate rows, back to back; row `rows[j]`'s key ends at
    /// `key_ends[j]`.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    hashes: Vec<u64>,
    /// Candidate rows (key and time in the window), then their groups.
    rows: Vec<u32>,
    groups: Vec<(u32, u32)>,
    /// (row, first position, end position) of each candidate row whose key has entity rows.
    runs: Vec<(u32, u32, u32)>,
    /// (position, row): the position each row is offered to.
    offers: Vec<(u32, u32)>,
}

impl Probe {
    /// Fills `runs` with the batch rows whose event time is in `[lo, hi]` and whose key has
    /// entity rows in `side`.
    fn find_runs(&mut self, side: &EntitySide<'_>, times: &KeyAndTimes, lo: i64, hi: i64) {
        let (keys, ts) = (&times.keys, &times.event);
        let in_window = |i: usize| {
            ts.is_valid(i) && {
                let event = ts.value(i);
                event >= lo && event <= hi && event != i64::MIN
            }
        };
        self.runs.clear();
        let n = u32::try_from(ts.len()).unwrap_or(u32::MAX);
        if let Some(map) = &side.int_groups {
            for i in 0..n {
                if in_window(i as usize)
                    && let Some(&(from, to)) = keys.int(i as usize).and_then(|k| map.get(&k))
                {
                    self.runs.push((i, from, to));
                }
            }
            return;
        }
        self.keys.clear();
        self.key_ends.clear();
        self.rows.clear();
        for i in 0..n {
            if in_window(i as usize) && keys.encode(i as usize, &mut self.keys) {
                self.key_ends.push(self.keys.len());
                self.rows.push(i);
            }
        }
        let key = |j: usize| {
            let start = if j == 0 { 0 } else { self.key_ends[j - 1] };
            &self.keys[start..self.key_ends[j]]
        };
        self.hashes.clear();
        self.hashes
            .extend((0..self.rows.len()).map(|j| side.index.hash(key(j))));
        self.groups.clear();
        for (j, &hash) in self.hashes.iter().enumerate() {
            if let Some(g) = side.index.get_hashed(hash, key(j)) {
                self.groups.push((self.rows[j], g));
            }
        }
        for &(i, g) in &self.groups {
            let (from, to) = side.group(g);
            if from < to {
                self.runs.push((i, from, to));
            }
        }
    }
}

/// No group: the row's key or event time is null, so it matches nothing.
const NO_GROUP: u32 = u32::MAX;

/// The entity table's keys for one view: each distinct canonical key once, and each row's.
struct EntityKeys {
    /// Canonical key → group number.
    index: KeyIndex,
    /// The group of each entity row ([`NO_GROUP`] without a key).
    group: Vec<u32>,
}

impl EntityKeys {
    /// Rows are keyed a chunk at a time: every key of the chunk is encoded and hashed before
    /// any is inserted, so the table's cache misses of consecutive rows overlap.
    fn build(n: usize, key_columns: &KeyColumns, times: &Int64Array) -> Self {
        const CHUNK: usize = 16 * 1024;
        let mut index = KeyIndex::new();
        let mut group = Vec::with_capacity(n);
        let (mut keys, mut spans, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(CHUNK) {
            keys.clear();
            // Each row's key as a range of `keys` (`None` without a key).
            spans.clear();
            for i in start..(start + CHUNK).min(n) {
                let from = keys.len();
                let keyed = times.is_valid(i) && key_columns.encode(i, &mut keys);
                spans.push(keyed.then_some(from..keys.len()));
            }
            hashes.clear();
            hashes.extend(spans.iter().map(|s| match s {
                Some(r) => index.hash(&keys[r.clone()]),
                None => 0,
            }));
            group.extend(spans.iter().zip(&hashes).map(|(s, &hash)| match s {
                Some(r) => index.insert_hashed(hash, &keys[r.clone()]),
                None => NO_GROUP,
            }));
        }
        Self { index, group }
    }
}

/// The entity rows of one view (and partition), grouped by key and sorted by time.
struct EntitySide<'k> {
    /// Canonical key → group number (groups of other partitions have no positions).
    index: &'k KeyIndex,
    /// For views keyed by one integer: key → its group's positions, probed by value.
    int_groups: Option<HashMap<i64, (u32, u32), FixedState>>,
    /// Group `g` is positions `group_start[g]..group_start[g + 1]`.
    group_start: Vec<u32>,
    /// Entity row number at each position.
    rows: Vec<u32>,
    /// Event time (ns) at each position.
    times: Vec<i64>,
    min_t: i64,
    max_t: i64,
}

impl<'k> EntitySide<'k> {
    fn build(
        keys: &'k EntityKeys,
        int_key_at: Option<&dyn Fn(usize) -> Option<i64>>,
        times: &Int64Array,
        mine: impl Fn(usize) -> bool,
    ) -> Self {
        let count = (0..keys.group.len())
            .filter(|&i| keys.group[i] != NO_GROUP && mine(i))
            .count();
        let mut entries: Vec<(u32, i64, u32)> = Vec::with_capacity(count);
        for (i, &g) in keys.group.iter().enumerate() {
            if g != NO_GROUP && mine(i) {
                entries.push((g, times.value(i), u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        entries.sort_unstable();
        let groups = keys.index.len();
        let mut group_start = vec![0u32; groups + 1];
        for (g, _, _) in &entries {
            group_start[*g as usize + 1] += 1;
        }
        for g in 0..groups {
            group_start[g + 1] += group_start[g];
        }
        let (min_t, max_t) = entries.iter().fold((i64::MAX, i64::MIN), |(lo, hi), e| {
            (lo.min(e.1), hi.max(e.1))
        });
        // One entry per group with rows here: its first row's integer key.
        let int_groups = int_key_at.map(|int_of| {
            let here = group_start.windows(2).filter(|w| w[0] < w[1]).count();
            let mut map = HashMap::with_capacity_and_hasher(here, FixedState::default());
            for g in 0..groups {
                let (from, to) = (group_start[g], group_start[g + 1]);
                if from < to
                    && let Some(k) = int_of(entries[from as usize].2 as usize)
                {
                    map.insert(k, (from, to));
                }
            }
            map
        });
        Self {
            index: &keys.index,
            int_groups,
            group_start,
            rows: entries.iter().map(|e| e.2).collect(),
            times: entries.iter().map(|e| e.1).collect(),
            min_t,
            max_t,
        }
    }

    fn group_count(&self) -> usize {
        self.group_start.len() - 1
    }

    fn group(&self, g: impl TryInto<usize>) -> (u32, u32) {
        let g = g.try_into().unwrap_or(usize::MAX);
        (self.group_start[g], self.group_start[g + 1])
    }
}

/// One view's result columns: in memory, or spilled by partition.
enum ViewColumns {
    Memory(Vec<ArrayRef>),
    Spilled(SpilledColumns),
}

/// Bytes of a batch's data: its slices counted once, however their buffers are shared or
/// over-allocated.
pub fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// A training set: the entity table's columns and the joined features, streamed in input
/// order as record batches.
pub struct TrainingSet {
    schema: SchemaRef,
    entities: RecordBatch,
    /// Each view's output feature positions and columns.
    views: Vec<(Vec<usize>, ViewColumns)>,
    offset: usize,
    batch_rows: usize,
}

impl TrainingSet {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows in the whole training set.
    pub fn num_rows(&self) -> usize {
        self.entities.num_rows()
    }

    fn batch(&mut self, from: usize, len: usize) -> Result<RecordBatch> {
        let inputs = self.entities.num_columns();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        for (i, c) in self.entities.columns().iter().enumerate() {
            columns[i] = Some(c.slice(from, len));
        }
        for (positions, view) in &mut self.views {
            let arrays = match view {
                ViewColumns::Memory(all) => all.iter().map(|a| a.slice(from, len)).collect(),
                ViewColumns::Spilled(s) => s.next_rows(from, len)?,
            };
            for (p, a) in positions.iter().zip(arrays) {
                columns[inputs + p] = Some(a);
            }
        }
        let columns = columns.into_iter().flatten().collect();
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl Iterator for TrainingSet {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.entities.num_rows();
        if self.offset >= n {
            return None;
        }
        let len = self.batch_rows.min(n - self.offset);
        let from = self.offset;
        self.offset += len;
        Some(self.batch(from, len))
    }
}
