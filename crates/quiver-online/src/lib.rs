//! The online store: the latest value of every feature per entity key, in RocksDB.
//!
//! - [`store`]: the [`OnlineStore`] trait and [`RocksDbStore`]: key layout, newest-wins merge,
//!   ttl purge by compaction filter, watermarks, view deletion, backup and restore.
//! - [`row`]: the stored row format (every feature of a view's row plus its timestamps),
//!   decoded without allocating per feature.
//! - [`read`]: online reads with per-value statuses ([`FieldStatus`]).
//! - [`materialize`](mod@materialize): Parquet sources into the store, latest row per key.
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
pub mod store;

pub use error::{OnlineError, Result};
pub use materialize::{Progress, ViewReport, Window, materialize};
pub use read::{Cell, FieldStatus, OnlineFeatures, ReadPlan, read_online_features};
pub use row::{FeatureValue, Row, RowWriter, encode_row, layout_fingerprint};
pub use store::{OnlineStore, RocksDbOptions, RocksDbStore, StoreStats, now_micros};
