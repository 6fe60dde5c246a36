//! The most frequent values of a categorical feature: Misra–Gries (1982). With capacity `c`,
//! every count is low by at most `n / (c + 1)`, and exact while there have been at most `c`
//! distinct values; summaries merge (Agarwal et al., "Mergeable Summaries", 2012).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Counts of at most [`CAPACITY`](Self::CAPACITY) values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FrequentItems {
    counts: HashMap<String, u64>,
    /// The most any kept count is below the true one (0: every count is exact, and values not
    /// kept never occurred).
    error: u64,
}

impl FrequentItems {
    /// Values tracked.
    pub const CAPACITY: usize = 100;

    /// Counts one occurrence of `value`.
    pub fn insert(&mut self, value: &str) {
        if let Some(c) = self.counts.get_mut(value) {
            *c += 1;
        } else if self.counts.len() < Self::CAPACITY {
            self.counts.insert(value.to_owned(), 1);
        } else {
            // Decrement every count (and the new value's 1): amortized O(1), as each
            // decrement takes back an earlier increment.
            self.counts.retain(|_, c| {
                *c -= 1;
                *c > 0
            });
            self.error += 1;
        }
    }

    /// Adds what `other` has counted.
    pub fn merge(&mut self, other: &Self) {
        for (v, c) in &other.counts {
            *self.counts.entry(v.clone()).or_insert(0) += c;
        }
        self.error += other.error;
        if self.counts.len() > Self::CAPACITY {
            let mut counts: Vec<u64> = self.counts.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let cut = counts[Self::CAPACITY];
            self.counts.retain(|_, c| {
                *c = c.saturating_sub(cut);
                *c > 0
            });
            self.error += cut;
        }
    }

    /// The kept values with their counts, most frequent first (ties by value).
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut top: Vec<(String, u64)> =
            self.counts.iter().map(|(v, c)| (v.clone(), *c)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }

    /// The count kept for `value` (0 when not kept).
    pub fn count(&self, value: &str) -> u64 {
        self.counts.get(value).copied().unwrap_or(0)
    }

    /// Whether every count is exact.
    pub fn is_exact(&self) -> bool {
        self.error == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_with_few_values_and_bounded_with_many() {
        let mut f = FrequentItems::default();
        for i in 0..1000 {
            f.insert(["a", "b", "c"][i % 3]);
            if i % 10 == 0 {
                f.insert("d");
            }
        }
        assert!(f.is_exact());
        assert_eq!(f.top()[0], ("a".to_owned(), 334));
        assert_eq!(f.count("d"), 100);

        // One heavy value among 10,000 singletons: found, within n / (c + 1).
        let mut g = FrequentItems::default();
        let mut n = 0;
        for i in 0..10_000 {
            g.insert(&format!("x{i}"));
            g.insert("heavy");
            n += 2;
        }
        let bound = n / (FrequentItems::CAPACITY as u64 + 1);
        assert_eq!(g.top()[0].0, "heavy");
        assert!(10_000 - g.count("heavy") <= bound);
    }

    #[test]
    fn merging_keeps_the_bound() {
        let (mut a, mut b) = (FrequentItems::default(), FrequentItems::default());
        for i in 0..5_000 {
            a.insert(&format!("a{i}"));
            a.insert("heavy");
            b.insert(&format!("b{i}"));
            b.insert("heavy");
        }
        a.merge(&b);
        assert!(a.counts.len() <= FrequentItems::CAPACITY);
        assert_eq!(a.top()[0].0, "heavy");
        assert!(10_000 - a.count("heavy") <= 20_000 / (FrequentItems::CAPACITY as u64 + 1));
    }
}
