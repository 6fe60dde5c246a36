//! Feature statistics and drift, knowing nothing of where the data lives.
//!
//! - [`QuantileSketch`]: a KLL sketch, mergeable, with a bounded rank error
//!   ([`QuantileSketch::RANK_ERROR`]); exact while it has seen fewer than
//!   [`QuantileSketch::K`] values.
//! - [`DistinctSketch`]: HyperLogLog (4,096 registers, about 1.6% standard error).
//! - [`FrequentItems`]: Misra–Gries heavy hitters (exact counts while there are at most
//!   [`FrequentItems::CAPACITY`] distinct values).
//! - [`Profile`]: per feature, count, nulls, min/max/mean/stddev and the three sketches,
//!   updated batch by batch from Arrow arrays and merged across workers; [`FeatureSummary`] is
//!   what a person reads of one.
//! - [`drift`](mod@drift): a reference and a current profile compared per feature.

pub mod distinct;
pub mod drift;
pub mod frequent;
pub mod hash;
pub mod profile;
pub mod quantiles;

pub use distinct::DistinctSketch;
pub use drift::{Chart, DriftReport, FeatureDrift, Score, Statistic, Verdict, compare};
pub use frequent::FrequentItems;
pub use profile::{FeatureProfile, FeatureSummary, Histogram, NumericSummary, Profile};
pub use quantiles::{Cdf, QuantileSketch};
