//! Profiles: what a stream of feature values looked like, in bounded memory, from one pass.
//!
//! Numbers (ints, floats, timestamps as seconds) get moments, min/max and a quantile sketch;
//! strings and bools get frequent items; every scalar gets a distinct-count sketch. A null or
//! a NaN counts as missing. Profiles of disjoint parts merge into the profile of the whole.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use quiver_core::ValueType;
use serde::{Deserialize, Serialize};

use crate::{DistinctSketch, FrequentItems, QuantileSketch, hash};

/// Count, mean and sum of squared deviations (merged with Chan et al.'s formula), min, max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: 0.0,
            max: 0.0,
        }
    }
}

impl Moments {
    /// The moments of `values` (none NaN), two passes over a slice in cache.
    fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let (mut m2, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            m2 += (v - mean) * (v - mean);
            min = min.min(v);
            max = max.max(v);
        }
        Self {
            count: values.len() as u64,
            mean,
            m2,
            min,
            max,
        }
    }

    fn merge(&mut self, o: &Self) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let (na, nb) = (self.count as f64, o.count as f64);
        let n = na + nb;
        let delta = o.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += o.m2 + delta * delta * na * nb / n;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// How a feature's values are summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// Numbers: moments and quantiles.
    Numeric {
        /// Count, mean, spread, range.
        moments: Moments,
        /// Quantiles.
        quantiles: QuantileSketch,
    },
    /// Strings and bools: the most frequent values.
    Categorical {
        /// Frequent values.
        frequent: FrequentItems,
    },
    /// Bytes and lists: only counts.
    Other,
}

/// The profile of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// The feature's name.
    pub name: String,
    /// Its declared type.
    pub value_type: ValueType,
    /// Rows seen.
    pub rows: u64,
    /// Rows with no value (null, or NaN).
    pub nulls: u64,
    /// The values' summary.
    pub values: Values,
    /// Distinct values.
    pub distinct: DistinctSketch,
}

impl FeatureProfile {
    /// An empty profile of a feature of type `value_type`.
    pub fn new(name: &str, value_type: ValueType) -> Self {
        use quiver_core::ScalarType as S;
        let values = match value_type {
            ValueType::Scalar(S::Int32 | S::Int64 | S::Float32 | S::Float64 | S::Timestamp) => {
                Values::Numeric {
                    moments: Moments::default(),
                    quantiles: QuantileSketch::default(),
                }
            }
            ValueType::Scalar(S::String | S::Bool) => Values::Categorical {
                frequent: FrequentItems::default(),
            },
            _ => Values::Other,
        };
        Self {
            name: name.to_owned(),
            value_type,
            rows: 0,
            nulls: 0,
            values,
            distinct: DistinctSketch::default(),
        }
    }

    /// Rows with a value.
    pub fn present(&self) -> u64 {
        self.rows - self.nulls
    }

    /// Adds a column of values (of the feature's Arrow type, or one that casts to it).
    pub fn update(&mut self, array: &dyn Array) {
        self.rows += array.len() as u64;
        match &mut self.values {
            Values::Numeric { moments, quantiles } => {
                let values = numbers(array);
                self.nulls += (array.len() - values.len()) as u64;
                for &v in &values {
                    quantiles.insert(v);
                    self.distinct.insert(hash::number(v));
                }
                moments.merge(&Moments::of(&values));
            }
            Values::Categorical { frequent } => {
                self.nulls += array.null_count() as u64;
                if let Some(strings) = array.as_string_opt::<i32>() {
                    for s in strings.iter().flatten() {
                        frequent.insert(s);
                        self.distinct.insert(hash::bytes(s.as_bytes()));
                    }
                } else if let Some(bools) = array.as_boolean_opt() {
                    for b in bools.iter().flatten() {
                        let s = if b { "true" } else { "false" };
                        frequent.insert(s);
                        self.distinct.insert(hash::bytes(s.as_bytes()));
                    }
                }
            }
            Values::Other => self.nulls += array.null_count() as u64,
        }
    }

    /// Adds what `other` (the same feature) has seen.
    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.distinct.merge(&other.distinct);
        match (&mut self.values, &other.values) {
            (
                Values::Numeric { moments, quantiles },
                Values::Numeric {
                    moments: m,
                    quantiles: q,
                },
            ) => {
                moments.merge(m);
                quantiles.merge(q);
            }
            (Values::Categorical { frequent }, Values::Categorical { frequent: f }) => {
                frequent.merge(f);
            }
            _ => {}
        }
    }

    /// What a person reads of this profile.
    pub fn summary(&self) -> FeatureSummary {
        let numeric = match &self.values {
            Values::Numeric { moments, quantiles } if moments.count > 0 => {
                let cdf = quantiles.cdf();
                Some(NumericSummary {
                    min: moments.min,
                    max: moments.max,
                    mean: moments.mean,
                    stddev: if moments.count > 1 {
                        (moments.m2 / (moments.count - 1) as f64).sqrt()
                    } else {
                        0.0
                    },
                    quantiles: QUANTILES
                        .iter()
                        .map(|&q| (q, cdf.quantile(q).unwrap_or(f64::NAN)))
                        .collect(),
                    histogram: Histogram::equal_width(
                        &cdf,
                        moments.min,
                        moments.max,
                        HISTOGRAM_BINS,
                    ),
                })
            }
            _ => None,
        };
        let top = match &self.values {
            Values::Categorical { frequent } => {
                frequent.top().into_iter().take(TOP_VALUES).collect()
            }
            _ => Vec::new(),
        };
        FeatureSummary {
            name: self.name.clone(),
            value_type: self.value_type,
            rows: self.rows,
            nulls: self.nulls,
            null_rate: if self.rows == 0 {
                0.0
            } else {
                self.nulls as f64 / self.rows as f64
            },
            distinct: match self.values {
                Values::Other => None,
                _ => Some(self.distinct.estimate().min(self.present())),
            },
            numeric,
            top,
        }
    }
}

/// The quantiles a summary reports.
pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
/// Bins of a summary's histogram.
pub const HISTOGRAM_BINS: usize = 20;
/// Values of a summary's top list.
pub const TOP_VALUES: usize = 10;

/// The present values of a numeric array as `f64` (timestamps in seconds since the epoch);
/// nulls and NaN left out.
fn numbers(array: &dyn Array) -> Vec<f64> {
    let scale = match array.data_type() {
        DataType::Timestamp(unit, _) => Some(match unit {
            TimeUnit::Second => 1.0,
            TimeUnit::Millisecond => 1e-3,
            TimeUnit::Microsecond => 1e-6,
            TimeUnit::Nanosecond => 1e-9,
        }),
        _ => None,
    };
    let floats = match scale {
        Some(scale) => cast(array, &DataType::Int64).ok().map(|a| {
            a.as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .map(|v| v as f64 * scale)
                .collect::<Vec<f64>>()
        }),
        None => cast(array, &DataType::Float64).ok().map(|a| {
            let a = a.as_primitive::<Float64Type>();
            match a.nulls() {
                None => a.values().iter().copied().filter(|v| !v.is_nan()).collect(),
                Some(_) => a.iter().flatten().filter(|v| !v.is_nan()).collect(),
            }
        }),
    };
    floats.unwrap_or_default()
}

/// Counts of values in bins `[edges[i], edges[i + 1])` (the last bin closed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `bins + 1` ascending edges.
    pub edges: Vec<f64>,
    /// The share of the present values in each bin (from the quantile sketch: within its rank
    /// error).
    pub shares: Vec<f64>,
}

impl Histogram {
    /// `bins` equal-width bins from `lo` to `hi` of the distribution `cdf`.
    pub fn equal_width(cdf: &crate::Cdf, lo: f64, hi: f64, bins: usize) -> Self {
        if hi <= lo || bins == 0 {
            return Self {
                edges: vec![lo, hi],
                shares: vec![1.0],
            };
        }
        let width = (hi - lo) / bins as f64;
        let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
        // The share below edge i: the CDF just below it (every value < edge).
        let below = |x: f64| cdf.at(x.next_down());
        let mut shares: Vec<f64> = edges
            .windows(2)
            .map(|e| below(e[1]) - below(e[0]))
            .collect();
        if let Some(last) = shares.last_mut() {
            *last = 1.0 - below(edges[bins - 1]);
        }
        Self { edges, shares }
    }
}

/// The numeric part of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub stddev: f64,
    /// `(q, value)` for each of [`QUANTILES`], within [`QuantileSketch::RANK_ERROR`].
    pub quantiles: Vec<(f64, f64)>,
    /// [`HISTOGRAM_BINS`] equal-width bins from min to max.
    pub histogram: Histogram,
}

/// One feature's statistics as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSummary {
    /// The feature.
    pub name: String,
    /// Its type.
    pub value_type: ValueType,
    /// Rows seen.
    pub rows: u64,
    /// Rows without a value.
    pub nulls: u64,
    /// `nulls / rows`.
    pub null_rate: f64,
    /// Estimated distinct values (within [`DistinctSketch::STANDARD_ERROR`]); none for bytes
    /// and lists.
    pub distinct: Option<u64>,
    /// Numbers: range, mean, spread, quantiles, histogram.
    pub numeric: Option<NumericSummary>,
    /// Strings and bools: the [`TOP_VALUES`] most frequent values with their counts.
    pub top: Vec<(String, u64)>,
}

/// Profiles of a set of features over the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Rows seen.
    pub rows: u64,
    /// Per feature, in the order given.
    pub features: Vec<FeatureProfile>,
}

impl Profile {
    /// An empty profile of `features` (name, type).
    pub fn new<'a>(features: impl IntoIterator<Item = (&'a str, ValueType)>) -> Self {
        Self {
            rows: 0,
            features: features
                .into_iter()
                .map(|(n, t)| FeatureProfile::new(n, t))
                .collect(),
        }
    }

    /// Adds a batch: one column per feature, in order, all of one length.
    pub fn update(&mut self, columns: &[ArrayRef]) {
        self.rows += columns.first().map_or(0, |c| c.len() as u64);
        for (f, c) in self.features.iter_mut().zip(columns) {
            f.update(c.as_ref());
        }
    }

    /// Adds what `other` (a profile of the same features) has seen.
    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
    }

    /// The profile of feature `name`.
    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use quiver_core::ScalarType;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Statistics against a simple reference: exact values computed from the whole data.
    #[test]
    fn statistics_agree_with_a_reference_on_random_data() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [1_usize, 57, 5_000, 60_000] {
            let values: Vec<Option<f64>> = (0..n)
                .map(|_| rng.random_bool(0.9).then(|| rng.random_range(-10.0..90.0)))
                .collect();
            // Two workers' halves, merged: as the scan computes them.
            let mut parts = [
                FeatureProfile::new("x", ValueType::Scalar(ScalarType::Float64)),
                FeatureProfile::new("x", ValueType::Scalar(ScalarType::Float64)),
            ];
            for (i, chunk) in values.chunks(1000).enumerate() {
                parts[i % 2].update(&Float64Array::from(chunk.to_vec()));
            }
            let [mut p, q] = parts;
            p.merge(&q);
            let s = p.summary();

            let mut present: Vec<f64> = values.iter().flatten().copied().collect();
            present.sort_by(f64::total_cmp);
            let m = present.len() as f64;
            assert_eq!(s.rows, n as u64);
            assert_eq!(s.nulls, (n - present.len()) as u64);
            let Some(num) = s.numeric else {
                assert!(present.is_empty());
                continue;
            };
            let mean = present.iter().sum::<f64>() / m;
            let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
            assert_eq!((num.min, num.max), (present[0], present[present.len() - 1]));
            assert!((num.mean - mean).abs() < 1e-9 * mean.abs().max(1.0));
            assert!((num.stddev - var.sqrt()).abs() < 1e-9 * var.sqrt().max(1.0));
            for (q, v) in num.quantiles {
                let rank = present.partition_point(|&x| x <= v) as f64 / m;
                let below = present.partition_point(|&x| x < v) as f64 / m;
                let error = if q > rank {
                    q - rank
                } else if q < below {
                    below - q
                } else {
                    0.0
                };
                assert!(error <= QuantileSketch::RANK_ERROR, "n={n} q={q}: {error}");
                if present.len() < QuantileSketch::K {
                    assert_eq!(error, 0.0, "exact on small data");
                }
            }
            let shares: f64 = num.histogram.shares.iter().sum();
            assert!((shares - 1.0).abs() < 1e-9);
            let exact_distinct = present.windows(2).filter(|w| w[0] != w[1]).count() + 1;
            let d = s.distinct.unwrap_or(0) as f64;
            assert!(
                (d - exact_distinct as f64).abs()
                    <= 4.0 * DistinctSketch::STANDARD_ERROR * exact_distinct as f64 + 1.0,
                "{d} vs {exact_distinct}"
            );
        }
    }

    #[test]
    fn categorical_timestamps_and_nans() {
        let mut p = Profile::new([
            ("s", ValueType::Scalar(ScalarType::String)),
            ("b", ValueType::Scalar(ScalarType::Bool)),
            ("f", ValueType::Scalar(ScalarType::Float64)),
            ("i", ValueType::Scalar(ScalarType::Int64)),
        ]);
        p.update(&[
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                Some("a"),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(true),
                Some(false),
            ])),
            Arc::new(Float64Array::from(vec![1.0, f64::NAN, 3.0, 5.0])),
            Arc::new(Int64Array::from(vec![7, 7, 7, 9])),
        ]);
        let s: Vec<FeatureSummary> = p.features.iter().map(FeatureProfile::summary).collect();
        assert_eq!(p.rows, 4);
        assert_eq!(s[0].top, vec![("a".into(), 2), ("b".into(), 1)]);
        assert_eq!((s[0].nulls, s[0].distinct), (1, Some(2)));
        assert_eq!(s[1].top, vec![("true".into(), 2), ("false".into(), 1)]);
        assert_eq!(s[2].nulls, 1, "NaN is missing");
        assert_eq!(s[2].numeric.as_ref().map(|n| n.mean), Some(3.0));
        assert_eq!(s[3].distinct, Some(2));
        let back: Profile = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
