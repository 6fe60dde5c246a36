//! The online store: the latest value of every feature per entity key.
//!
//! - [`store`]: the [`OnlineStore`] trait and [`RocksDbStore`]: key layout (one key range per
//!   view generation, [`ViewId`]), newest-wins merge, ttl purge by compaction filter,
//!   watermarks and run records beside the data, [`OnlineStore::retain`], backup and
//!   restore.
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
pub mod materialize;
pub mod read;
pub mod row;
pub mod runs;
pub mod store;

pub use error::{OnlineError, Result};
pub use materialize::{
    MaterializeOptions, Progress, ViewReport, ViewTarget, Window, materialize_view, resolve_window,
};
pub use read::{Cell, FieldStatus, OnlineFeatures, ReadPlan, read_online_features};
pub use row::{FeatureValue, Row, RowVersion, RowWriter, encode_row, layout_fingerprint};
pub use runs::{RunOutcome, RunRecord, RunTrigger};
pub use store::{
    KeyedRows, LiveView, OnlineStore, RUNS_KEPT, RocksDbOptions, RocksDbStore, StoreStats, ViewId,
    ViewRows,
};
