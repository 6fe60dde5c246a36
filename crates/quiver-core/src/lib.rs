//! Quiver's object model, with no IO.
//!
//! - [`types`]: value types of features ([`ValueType`]) and join keys ([`KeyType`]), and their
//!   Arrow mapping and compatibility rules.
//! - [`duration`]: durations as written in definitions (`36h`, `1d12h`) and [`Ttl`].
//! - [`model`]: the objects: [`Entity`], [`Source`], [`FeatureView`], [`FeatureService`],
//!   [`FeatureRef`].
//! - [`definitions`]: [`Definitions`], every object of a project at one registry version, and
//!   feature resolution (`view:*`, output names).
//! - [`entity_key`]: the canonical, order-independent, typed entity-key encoding.
//! - [`time`]: times as written on the command line and in requests.
//!
//! ```
//! use quiver_core::{FeatureRef, ValueType};
//!
//! let r = FeatureRef::parse("driver_hourly_stats:conv_rate").unwrap();
//! assert_eq!(r.view, "driver_hourly_stats");
//! assert_eq!("list<int64>".parse::<ValueType>().unwrap().to_string(), "list<int64>");
//! ```

pub mod definitions;
pub mod duration;
pub mod engine;
pub mod entity_key;
pub mod error;
pub mod model;
pub mod monitoring;
pub mod time;
pub mod types;

pub use definitions::{Definitions, OnlineLayout, ResolvedFeature};
pub use duration::{Period, Ttl, format_duration, parse_duration};
pub use engine::{EngineKind, OfflineEngine, SparkSettings};
pub use entity_key::{
    KeyColumns, KeyValue, canonical_order, column_fits_key, encode_entity_key, is_single_int,
    push_bytes_key, push_int32_key, push_int64_key,
};
pub use error::{CoreError, ErrorKind, HasKind, Result};
pub use model::{
    Action, Entity, Feature, FeatureLogging, FeatureRef, FeatureService, FeatureView, JoinKey,
    ObjectKind, Permission, Policy, SampleRate, Schedule, Source, Tags,
};
pub use monitoring::{DataSelection, DriftThresholds, Monitoring, TimeBound};
pub use time::{TimestampUnit, format_nanos, now_nanos, parse_time, parse_time_nanos};
pub use types::{KeyType, ScalarType, ValueType};
