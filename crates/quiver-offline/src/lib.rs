//! Quiver's offline side: point-in-time-correct training sets from Parquet sources.
//!
//! [`PointInTimeJoin`] joins requested features onto an entity table (keys, an event time and
//! any label columns) following the rules of the product contract: for every entity row and
//! view, the source row of the same key with the greatest event time not after the row's time
//! (within the view's ttl, optionally created no later than it), nulls when there is none, one
//! output row per input row in input order. Sources are read through `quiver-source`'s scan
//! layer (the same one materialization uses). [`pull`] reads a source's rows in a window, all
//! of them or the newest per key, as Feast's offline stores do. The engine knows nothing of Flight or gRPC; the
//! server streams its [`TrainingSet`] batches.

mod entities;
mod error;
mod join;
mod keys;
mod pull;
mod spill;

pub use entities::{EVENT_TIMESTAMP, event_timestamp_column, read_entity_file};
pub use error::{OfflineError, Result};
pub use join::{JoinOptions, PointInTimeJoin, Progress, TrainingSet, data_bytes};
pub use pull::{PullMode, PullRequest, PulledRows, pull};
