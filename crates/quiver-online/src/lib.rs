//! The online store: the latest value of every feature per entity key.
//!
//! - [`store`]: the [`OnlineStore`] trait, the contract of every backend: one key range per
//!   view generation ([`ViewId`]), newest wins inside the store, watermarks, run records and
//!   leases beside the data, [`OnlineStore::retain`].
//! - [`rocksdb_store`]: [`RocksDbStore`], the embedded backend: newest-wins merge operator,
//!   ttl purge by compaction filter, backup and restore.
//! - [`lease`]: in-memory leases for a store that one process holds.
//! - [`row`]: the stored row format (every feature of a view's row plus its timestamps),
//!   decoded without allocating per feature.
//! - [`read`]: online reads with per-value statuses ([`FieldStatus`]).
//! - [`materialize`](mod@materialize): one view's Parquet source into the store, latest row
//!   per key.
//! - [`runs`]: records of materialization runs ([`RunRecord`]).
//!
//! This is the only crate of the workspace that depends on `rocksdb`.
//!
//! ```no_run
//! use quiver_online::{OnlineStore, RocksDbOptions, RocksDbStore};
//!
//! let store = RocksDbStore::open("online_store".as_ref(), &RocksDbOptions::default())?;
//! println!("{:?}", store.stats()?);
//! # Ok::<_, quiver_online::OnlineError>(())
//! ```

pub mod error;
pub mod lease;
pub mod materialize;
pub mod read;
pub mod rocksdb_store;
pub mod row;
pub mod runs;
pub mod store;

pub use error::{OnlineError, Result};
pub use lease::LocalLeases;
pub use materialize::{
    ComputedRun, MaterializeOptions, Progress, ScanFacts, ViewReport, ViewTarget, Window,
    materialize_view, resolve_window,
};
pub use read::{
    Cell, FieldStatus, FoundRows, OnlineFeatures, ReadPlan, StatusCounts, read_online_features,
};
pub use rocksdb_store::{RocksDbOptions, RocksDbStore};
pub use row::{FeatureValue, Row, RowVersion, RowWriter, encode_row, layout_fingerprint};
pub use runs::{RunOutcome, RunRecord, RunTrigger};
pub use store::{
    KeyedRows, LiveView, OnlineStore, RUNS_KEPT, ReadFuture, StoreStats, StoredRows, ViewContents,
    ViewId, ViewKeys, ViewRows,
};
