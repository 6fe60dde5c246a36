//! Drift: a current profile of a feature compared with a reference profile.
//!
//! - **PSI** (population stability index), every feature: `sum (c - r) ln(c / r)` over bins,
//!   shares floored at 1e-4. Numbers are binned at the reference's deciles, categories by
//!   value; missing values are a bin of their own, so a feature that starts arriving empty
//!   drifts.
//! - **Kolmogorov–Smirnov distance**, numbers: the largest gap between the two distribution
//!   functions (of present values), evaluated at every value either sketch holds.
//! - **Jensen–Shannon distance**, categories (and missing): the square root of the JS
//!   divergence in bits, 0 (same) to 1 (disjoint).
//! - **Chi-squared test** of homogeneity, categories (and missing): the p-value that both
//!   samples come from one distribution.
//!
//! Each score is checked against its threshold ([`quiver_core::DriftThresholds`]); a feature
//! with any breach is drifted.

use quiver_core::{DriftThresholds, ValueType};
use serde::{Deserialize, Serialize};

use crate::profile::{FeatureProfile, Values};
use crate::{Cdf, FrequentItems};

/// Shares are floored at this in PSI (an empty bin would make it infinite).
const FLOOR: f64 = 1e-4;
/// Bins of a numeric chart.
const CHART_BINS: usize = 30;
/// Categories of a categorical chart (the rest are "(other)").
const CHART_CATEGORIES: usize = 20;

/// A drift statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Population stability index.
    Psi,
    /// Kolmogorov–Smirnov distance.
    KolmogorovSmirnov,
    /// Jensen–Shannon distance.
    JensenShannon,
    /// Chi-squared test p-value.
    ChiSquaredPValue,
}

impl Statistic {
    /// The name in definitions, reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Psi => "psi",
            Self::KolmogorovSmirnov => "kolmogorov_smirnov",
            Self::JensenShannon => "jensen_shannon",
            Self::ChiSquaredPValue => "chi_squared_p_value",
        }
    }

    fn threshold(self, t: &DriftThresholds) -> Option<f64> {
        match self {
            Self::Psi => t.psi,
            Self::KolmogorovSmirnov => t.kolmogorov_smirnov,
            Self::JensenShannon => t.jensen_shannon,
            Self::ChiSquaredPValue => t.chi_squared_p_value,
        }
    }

    /// Whether `value` breaches `threshold` (p-values breach below it, the rest above).
    fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::ChiSquaredPValue => value < threshold,
            _ => value > threshold,
        }
    }
}

/// One score of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The statistic.
    pub statistic: Statistic,
    /// Its value.
    pub value: f64,
    /// The threshold that applied (none: reported, not checked).
    pub threshold: Option<f64>,
    /// Whether the value breaches the threshold.
    pub breached: bool,
}

/// `psi 0.0469 (within 0.2)`, `chi_squared_p_value 0.3 (not checked)`.
impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:.4}", self.statistic.name(), self.value)?;
        match self.threshold {
            Some(t) if self.breached => write!(f, " (breaches {t})"),
            Some(t) => write!(f, " (within {t})"),
            None => f.write_str(" (not checked)"),
        }
    }
}

impl FeatureDrift {
    /// Every score, `; ` between them.
    pub fn scores_text(&self) -> String {
        self.scores
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a comparison found for a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A score breached its threshold.
    Drifted,
    /// One side has no rows: nothing to compare (a stale or empty window).
    NoData,
    /// No score breached.
    Stable,
}

impl Verdict {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Drifted => "drifted",
            Self::NoData => "no_data",
            Self::Stable => "stable",
        }
    }
}

/// The two distributions side by side, for a chart: shares of the rows in each bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// Bin labels: categories, or `[lo, hi)` ranges of numbers.
    pub labels: Vec<String>,
    /// For numbers, the bins' edges (`labels.len() + 1`); empty for categories.
    pub edges: Vec<f64>,
    /// The reference's share of present values per bin.
    pub reference: Vec<f64>,
    /// The current share of present values per bin.
    pub current: Vec<f64>,
}

/// One feature compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// The feature.
    pub feature: String,
    /// Its type.
    pub value_type: ValueType,
    /// The verdict.
    pub verdict: Verdict,
    /// Rows of the reference and of the current data.
    pub rows: [u64; 2],
    /// Missing-value rates of the reference and of the current data.
    pub null_rates: [f64; 2],
    /// The scores, in [`Statistic`] order.
    pub scores: Vec<Score>,
    /// The distributions, for charts.
    pub chart: Chart,
}

/// Every feature of a view compared, drifted first, then those without data, then stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The view.
    pub view: String,
    /// What the reference was (a window or a file).
    pub reference: String,
    /// What the current data was.
    pub current: String,
    /// Per feature.
    pub features: Vec<FeatureDrift>,
}

impl DriftReport {
    /// Whether any feature drifted.
    pub fn drifted(&self) -> bool {
        self.features.iter().any(|f| f.verdict == Verdict::Drifted)
    }
}

/// Compares two profiles of one feature under `thresholds`.
pub fn compare(
    reference: &FeatureProfile,
    current: &FeatureProfile,
    thresholds: &DriftThresholds,
) -> FeatureDrift {
    let mut scores = Vec::new();
    let mut score = |statistic: Statistic, value: f64| {
        let threshold = statistic.threshold(thresholds);
        scores.push(Score {
            statistic,
            value,
            threshold,
            breached: threshold.is_some_and(|t| statistic.breaches(value, t)),
        });
    };
    let empty = reference.rows == 0 || current.rows == 0;
    let chart = match (&reference.values, &current.values) {
        _ if empty => Chart {
            labels: Vec::new(),
            edges: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        },
        (Values::Numeric { quantiles: rq, .. }, Values::Numeric { quantiles: cq, .. }) => {
            let (r, c) = (rq.cdf(), cq.cdf());
            let (rb, cb) = decile_bins(reference, current, &r, &c);
            score(Statistic::Psi, psi(&rb, &cb));
            if rq.count() > 0 && cq.count() > 0 {
                score(Statistic::KolmogorovSmirnov, ks_distance(&r, &c));
            }
            numeric_chart(&r, &c)
        }
        (Values::Categorical { frequent: rf }, Values::Categorical { frequent: cf }) => {
            let (labels, rc, cc) = category_counts(reference, current, rf, cf);
            let (rs, cs) = (shares(&rc), shares(&cc));
            score(Statistic::Psi, psi(&rs, &cs));
            score(Statistic::JensenShannon, js_distance(&rs, &cs));
            score(Statistic::ChiSquaredPValue, chi_squared_p_value(&rc, &cc));
            categorical_chart(labels, &rc, &cc)
        }
        _ => {
            let bins = |p: &FeatureProfile| shares(&[p.present() as f64, p.nulls as f64]);
            score(Statistic::Psi, psi(&bins(reference), &bins(current)));
            Chart {
                labels: vec!["present".into(), "missing".into()],
                edges: Vec::new(),
                reference: bins(reference),
                current: bins(current),
            }
        }
    };
    let verdict = if empty {
        Verdict::NoData
    } else if scores.iter().any(|s| s.breached) {
        Verdict::Drifted
    } else {
        Verdict::Stable
    };
    let null_rate = |p: &FeatureProfile| {
        if p.rows == 0 {
            0.0
        } else {
            p.nulls as f64 / p.rows as f64
        }
    };
    FeatureDrift {
        feature: reference.name.clone(),
        value_type: reference.value_type,
        verdict,
        rows: [reference.rows, current.rows],
        null_rates: [null_rate(reference), null_rate(current)],
        scores,
        chart,
    }
}

/// Shares of all rows in bins at the reference's deciles, then a missing-value bin.
fn decile_bins(
    reference: &FeatureProfile,
    current: &FeatureProfile,
    r: &Cdf,
    c: &Cdf,
) -> (Vec<f64>, Vec<f64>) {
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|i| r.quantile(f64::from(i) / 10.0))
        .collect();
    edges.dedup();
    let bins = |p: &FeatureProfile, cdf: &Cdf| {
        let present = p.present() as f64 / p.rows as f64;
        let mut out = Vec::with_capacity(edges.len() + 2);
        let mut below = 0.0;
        for &e in &edges {
            let at = cdf.at(e);
            out.push((at - below) * present);
            below = at;
        }
        out.push((1.0 - below) * present);
        out.push(p.nulls as f64 / p.rows as f64);
        out
    };
    (bins(reference, r), bins(current, c))
}

/// Counts per category (the union of both sides' frequent values, by reference count), then
/// "(other)" and "(missing)".
fn category_counts(
    reference: &FeatureProfile,
    current: &FeatureProfile,
    rf: &FrequentItems,
    cf: &FrequentItems,
) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let mut labels: Vec<String> = rf.top().into_iter().map(|(v, _)| v).collect();
    for (v, _) in cf.top() {
        if rf.count(&v) == 0 {
            labels.push(v);
        }
    }
    let counts = |p: &FeatureProfile, f: &FrequentItems| {
        let mut out: Vec<f64> = labels.iter().map(|l| f.count(l) as f64).collect();
        let kept: f64 = out.iter().sum();
        out.push((p.present() as f64 - kept).max(0.0));
        out.push(p.nulls as f64);
        out
    };
    let (rc, cc) = (counts(reference, rf), counts(current, cf));
    labels.push("(other)".into());
    labels.push("(missing)".into());
    (labels, rc, cc)
}

fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts
        .iter()
        .map(|c| if total > 0.0 { c / total } else { 0.0 })
        .collect()
}

/// Population stability index of two share vectors over the same bins.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (r.max(FLOOR), c.max(FLOOR));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Kolmogorov–Smirnov distance of two distributions.
pub fn ks_distance(r: &Cdf, c: &Cdf) -> f64 {
    r.values()
        .iter()
        .chain(c.values())
        .map(|&x| (r.at(x) - c.at(x)).abs())
        .fold(0.0, f64::max)
}

/// Jensen–Shannon distance (base 2) of two share vectors over the same bins.
pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: f64, m: f64| if a > 0.0 { a * (a / m).log2() } else { 0.0 };
    let divergence: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let m = (a + b) / 2.0;
            (kl(a, m) + kl(b, m)) / 2.0
        })
        .sum();
    divergence.clamp(0.0, 1.0).sqrt()
}

/// The p-value of the chi-squared test of homogeneity of two count vectors over the same
/// categories (categories empty on both sides left out); 1 with fewer than two categories.
pub fn chi_squared_p_value(a: &[f64], b: &[f64]) -> f64 {
    let (ta, tb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    let n = ta + tb;
    if ta == 0.0 || tb == 0.0 {
        return 1.0;
    }
    let mut statistic = 0.0;
    let mut categories = 0;
    for (&x, &y) in a.iter().zip(b) {
        let total = x + y;
        if total == 0.0 {
            continue;
        }
        categories += 1;
        let (ea, eb) = (total * ta / n, total * tb / n);
        statistic += (x - ea).powi(2) / ea + (y - eb).powi(2) / eb;
    }
    if categories < 2 {
        return 1.0;
    }
    upper_gamma_regularized(f64::from(categories - 1) / 2.0, statistic / 2.0)
}

/// `Q(a, x)`, the regularized upper incomplete gamma function (the chi-squared survival
/// function is `Q(dof / 2, x / 2)`): a series below `a + 1`, a continued fraction above
/// (Numerical Recipes, 6.2).
fn upper_gamma_regularized(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * front).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (front * h).clamp(0.0, 1.0)
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, &g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn numeric_chart(r: &Cdf, c: &Cdf) -> Chart {
    let ends = |cdf: &Cdf| {
        let v = cdf.values();
        v.first().copied().zip(v.last().copied())
    };
    let (lo, hi) = match (ends(r), ends(c)) {
        (Some((a, b)), Some((x, y))) => (a.min(x), b.max(y)),
        (Some(e), None) | (None, Some(e)) => e,
        (None, None) => (0.0, 0.0),
    };
    let bins = if hi > lo { CHART_BINS } else { 1 };
    let hr = crate::Histogram::equal_width(r, lo, hi, bins);
    let hc = crate::Histogram::equal_width(c, lo, hi, bins);
    let labels = hr
        .edges
        .windows(2)
        .map(|e| format!("[{}, {})", short(e[0]), short(e[1])))
        .collect();
    Chart {
        labels,
        edges: hr.edges,
        reference: hr.shares,
        current: hc.shares,
    }
}

fn categorical_chart(mut labels: Vec<String>, rc: &[f64], cc: &[f64]) -> Chart {
    let (mut r, mut c) = (shares(rc), shares(cc));
    let categories = labels.len() - 2;
    if categories > CHART_CATEGORIES {
        // Fold the tail into "(other)", keeping "(missing)" last.
        let fold = |v: &mut Vec<f64>| {
            let missing = v.pop().unwrap_or(0.0);
            let tail: f64 = v.drain(CHART_CATEGORIES..).sum();
            v.push(tail);
            v.push(missing);
        };
        fold(&mut r);
        fold(&mut c);
        labels.drain(CHART_CATEGORIES..categories);
    }
    Chart {
        labels,
        edges: Vec::new(),
        reference: r,
        current: c,
    }
}

/// A number in at most four significant digits.
fn short(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use quiver_core::ScalarType;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn hand_computed_scores() {
        // PSI of 50/50 against 25/75: 0.25 ln 0.5 + ... = (0.25-0.5)ln(.5) + (0.75-0.5)ln(1.5).
        let p = psi(&[0.5, 0.5], &[0.25, 0.75]);
        assert!((p - (-0.25 * 0.5_f64.ln() + 0.25 * 1.5_f64.ln())).abs() < 1e-12);
        assert_eq!(psi(&[0.3, 0.7], &[0.3, 0.7]), 0.0);
        assert!((js_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        assert_eq!(js_distance(&[0.4, 0.6], &[0.4, 0.6]), 0.0);
        // Chi-squared: [10, 20] vs [20, 10]: statistic 6.667 on 1 dof, p = 0.00982.
        let pv = chi_squared_p_value(&[10.0, 20.0], &[20.0, 10.0]);
        assert!((pv - 0.009_823).abs() < 1e-5, "{pv}");
        // 3 dof at statistic 7.815 is the 5% critical value.
        assert!((upper_gamma_regularized(1.5, 7.815 / 2.0) - 0.05).abs() < 1e-4);
        assert!((ln_gamma(5.0) - 24_f64.ln()).abs() < 1e-12);
    }

    fn numeric(values: impl Iterator<Item = f64>) -> FeatureProfile {
        let mut p = FeatureProfile::new("x", ValueType::Scalar(ScalarType::Float64));
        let a: ArrayRef = Arc::new(Float64Array::from_iter_values(values));
        p.update(a.as_ref());
        p
    }

    fn categorical(values: impl Iterator<Item = &'static str>) -> FeatureProfile {
        let mut p = FeatureProfile::new("c", ValueType::Scalar(ScalarType::String));
        p.update(&StringArray::from_iter_values(values));
        p
    }

    #[test]
    fn a_shift_is_flagged_by_every_statistic_and_noise_by_none() {
        let mut rng = StdRng::seed_from_u64(11);
        let t = DriftThresholds {
            chi_squared_p_value: Some(0.001),
            ..DriftThresholds::DEFAULT
        };
        let normal = |rng: &mut StdRng, mean: f64| {
            // Box–Muller.
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            mean + (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let reference = numeric((0..20_000).map(|_| normal(&mut rng, 0.0)));
        let same = numeric((0..20_000).map(|_| normal(&mut rng, 0.0)));
        let shifted = numeric((0..20_000).map(|_| normal(&mut rng, 1.0)));
        let stable = compare(&reference, &same, &t);
        assert_eq!(stable.verdict, Verdict::Stable, "{stable:?}");
        let drifted = compare(&reference, &shifted, &t);
        assert_eq!(drifted.verdict, Verdict::Drifted);
        assert!(drifted.scores.iter().all(|s| s.breached), "{drifted:?}");
        // A one-sigma shift: KS distance is 2 Phi(0.5) - 1 = 0.383.
        let ks = drifted.scores[1].value;
        assert!((ks - 0.383).abs() < 0.02, "{ks}");

        let pick = |rng: &mut StdRng, weights: [f64; 3]| {
            let u: f64 = rng.random();
            if u < weights[0] {
                "a"
            } else if u < weights[0] + weights[1] {
                "b"
            } else {
                "c"
            }
        };
        let mut draws =
            |w: [f64; 3]| -> Vec<&'static str> { (0..20_000).map(|_| pick(&mut rng, w)).collect() };
        let (r, s, d) = (
            draws([0.5, 0.3, 0.2]),
            draws([0.5, 0.3, 0.2]),
            draws([0.2, 0.3, 0.5]),
        );
        let reference = categorical(r.into_iter());
        let stable = compare(&reference, &categorical(s.into_iter()), &t);
        assert_eq!(stable.verdict, Verdict::Stable, "{stable:?}");
        let drifted = compare(&reference, &categorical(d.into_iter()), &t);
        assert!(drifted.scores.iter().all(|s| s.breached), "{drifted:?}");
        assert_eq!(
            drifted.chart.labels,
            ["a", "b", "c", "(other)", "(missing)"]
        );
    }

    #[test]
    fn missing_values_drift_and_empty_sides_have_no_data() {
        let reference = numeric((0..1000).map(f64::from));
        let mut half_missing = numeric((0..500).map(f64::from));
        half_missing.update(&Float64Array::from(vec![None::<f64>; 500]));
        let d = compare(&reference, &half_missing, &DriftThresholds::DEFAULT);
        assert_eq!(d.verdict, Verdict::Drifted);
        assert_eq!(d.null_rates, [0.0, 0.5]);
        let empty = numeric(std::iter::empty());
        let d = compare(&reference, &empty, &DriftThresholds::DEFAULT);
        assert_eq!(d.verdict, Verdict::NoData);
    }
}
