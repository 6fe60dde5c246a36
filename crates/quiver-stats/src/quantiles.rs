//! A mergeable quantile sketch: KLL (Karnin, Lang and Liberty, "Optimal Quantile
//! Approximation in Streams", 2016).
//!
//! Values live in levels; a value at level `h` stands for `2^h` values of the stream. When a
//! level outgrows its capacity it is sorted and every other value (from a random offset) moves
//! up a level, so the total weight stays exactly the number of values seen. Capacities shrink
//! by 2/3 per level below the top, so the sketch holds about `3K` values however long the
//! stream. Two sketches merge by concatenating their levels and compacting.

use serde::{Deserialize, Serialize};

/// The KLL sketch of a stream of `f64` (NaN is ignored: callers count it as missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    /// Values seen.
    n: u64,
    /// `levels[h]` holds values of weight `2^h`.
    levels: Vec<Vec<f64>>,
    /// State of the coin that picks each compaction's offset (xorshift; deterministic).
    coin: u64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self {
            n: 0,
            levels: vec![Vec::new()],
            coin: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl QuantileSketch {
    /// The top level's capacity: the sketch is exact below this many values.
    pub const K: usize = 400;

    /// The largest rank error of a quantile, as a share of the values seen, that the tests
    /// hold the sketch to (measured: about 0.55% at `K` = 400 on 10^5 values).
    pub const RANK_ERROR: f64 = 0.01;

    /// Capacity of level `h` of `levels` levels.
    fn capacity(h: usize, levels: usize) -> usize {
        let depth = i32::try_from(levels - 1 - h).unwrap_or(i32::MAX);
        let cap = (Self::K as f64 * (2.0_f64 / 3.0).powi(depth)).ceil();
        (cap as usize).max(8)
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Adds a value (NaN is ignored).
    pub fn insert(&mut self, x: f64) {
        if x.is_nan() {
            return;
        }
        self.n += 1;
        self.levels[0].push(x);
        if self.levels[0].len() >= Self::capacity(0, self.levels.len()) {
            self.compress();
        }
    }

    /// Adds everything `other` has seen.
    pub fn merge(&mut self, other: &Self) {
        self.n += other.n;
        while self.levels.len() < other.levels.len() {
            self.levels.push(Vec::new());
        }
        for (h, level) in other.levels.iter().enumerate() {
            self.levels[h].extend_from_slice(level);
        }
        self.compress();
    }

    fn flip(&mut self) -> usize {
        let mut x = self.coin;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.coin = x;
        (x >> 63) as usize
    }

    /// Compacts the lowest level over capacity until none is.
    fn compress(&mut self) {
        while let Some(h) = (0..self.levels.len())
            .find(|&h| self.levels[h].len() >= Self::capacity(h, self.levels.len()))
        {
            if h + 1 == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let mut values = std::mem::take(&mut self.levels[h]);
            values.sort_unstable_by(f64::total_cmp);
            let odd = (values.len() % 2 == 1).then(|| values.remove(values.len() / 2));
            let offset = self.flip();
            let promoted: Vec<f64> = values.iter().skip(offset).step_by(2).copied().collect();
            self.levels[h + 1].extend(promoted);
            self.levels[h].extend(odd);
        }
    }

    /// The distribution the sketch stands for, for rank and quantile queries.
    pub fn cdf(&self) -> Cdf {
        let mut weighted: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, level)| level.iter().map(move |&v| (v, 1_u64 << h)))
            .collect();
        weighted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut values = Vec::with_capacity(weighted.len());
        let mut cumulative = Vec::with_capacity(weighted.len());
        let mut total = 0_u64;
        for (v, w) in weighted {
            total += w;
            if values.last() == Some(&v) {
                *cumulative.last_mut().unwrap_or(&mut 0) = total;
            } else {
                values.push(v);
                cumulative.push(total);
            }
        }
        Cdf {
            values,
            cumulative,
            total,
        }
    }
}

/// A step distribution function: distinct values, ascending, with the weight at or below each.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdf {
    values: Vec<f64>,
    cumulative: Vec<u64>,
    total: u64,
}

impl Cdf {
    /// The share of values at or below `x` (0 for an empty distribution).
    pub fn at(&self, x: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let i = self.values.partition_point(|&v| v <= x);
        if i == 0 {
            0.0
        } else {
            self.cumulative[i - 1] as f64 / self.total as f64
        }
    }

    /// The smallest value with at least a share `q` of the values at or below it; `None` for
    /// an empty distribution.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let last = *self.values.last()?;
        let target = q.clamp(0.0, 1.0) * self.total as f64;
        let i = self.cumulative.partition_point(|&c| (c as f64) < target);
        Some(self.values.get(i).copied().unwrap_or(last))
    }

    /// The distinct values the distribution steps at, ascending.
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The exact rank error of quantile `q` answered as `v` over sorted `data`: how far the
    /// share of values below `v`..at `v` is from `q`.
    fn rank_error(sorted: &[f64], q: f64, v: f64) -> f64 {
        let n = sorted.len() as f64;
        let below = sorted.partition_point(|&x| x < v) as f64 / n;
        let at_or_below = sorted.partition_point(|&x| x <= v) as f64 / n;
        if q < below {
            below - q
        } else if q > at_or_below {
            q - at_or_below
        } else {
            0.0
        }
    }

    #[test]
    fn exact_on_small_data() {
        let mut rng = StdRng::seed_from_u64(1);
        let data: Vec<f64> = (0..QuantileSketch::K - 1)
            .map(|_| rng.random_range(-50.0..50.0))
            .collect();
        let mut s = QuantileSketch::default();
        data.iter().for_each(|&x| s.insert(x));
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        let cdf = s.cdf();
        for i in 1..=100 {
            let q = f64::from(i) / 100.0;
            let exact = sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1];
            assert_eq!(cdf.quantile(q), Some(exact), "q={q}");
        }
        assert_eq!(cdf.at(sorted[9]), 10.0 / sorted.len() as f64);
    }

    #[test]
    fn rank_error_is_bounded_and_merging_keeps_it() {
        let mut rng = StdRng::seed_from_u64(7);
        for (n, parts) in [(100_000_usize, 1_usize), (300_000, 3)] {
            // A skewed, tied distribution: integers from a log-normal-ish shape.
            let data: Vec<f64> = (0..n)
                .map(|_| (rng.random::<f64>().powi(3) * 1000.0).floor())
                .collect();
            let mut sketches = vec![QuantileSketch::default(); parts];
            for (i, &x) in data.iter().enumerate() {
                sketches[i % parts].insert(x);
            }
            let mut s = sketches.pop().unwrap_or_default();
            for other in &sketches {
                s.merge(other);
            }
            assert_eq!(s.count(), n as u64);
            let mut sorted = data.clone();
            sorted.sort_by(f64::total_cmp);
            let cdf = s.cdf();
            let worst = (1..100)
                .map(|i| {
                    let q = f64::from(i) / 100.0;
                    rank_error(&sorted, q, cdf.quantile(q).unwrap_or(f64::NAN))
                })
                .fold(0.0, f64::max);
            assert!(worst <= QuantileSketch::RANK_ERROR, "n={n}: {worst}");
            let size: usize = s.levels.iter().map(Vec::len).sum();
            assert!(size < 4 * QuantileSketch::K, "{size} values kept");
        }
    }

    #[test]
    fn empty_and_nan() {
        let mut s = QuantileSketch::default();
        s.insert(f64::NAN);
        assert_eq!(s.count(), 0);
        assert_eq!(s.cdf().quantile(0.5), None);
        assert_eq!(s.cdf().at(1.0), 0.0);
    }
}
