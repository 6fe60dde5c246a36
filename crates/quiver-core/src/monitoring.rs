//! What drift monitoring compares and when it calls a feature drifted: data selections
//! (a window of a view's source, or a training set or feature log file) and thresholds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::parse_duration;
use crate::error::{CoreError, Result};
use crate::time::parse_time_nanos;

/// One end of a window: an instant, or a distance before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeBound {
    /// Nanoseconds since the epoch.
    At(i64),
    /// This long before the time the selection is resolved (`now`, `now-7d`).
    BeforeNow(std::time::Duration),
}

impl TimeBound {
    fn parse(text: &str) -> Result<Self> {
        let s = text.trim();
        if s.eq_ignore_ascii_case("now") {
            return Ok(Self::BeforeNow(std::time::Duration::ZERO));
        }
        if let Some(period) = s.strip_prefix("now-") {
            return parse_duration(period).map(Self::BeforeNow);
        }
        parse_time_nanos(s).map(Self::At)
    }

    fn resolve(self, now: i64) -> i64 {
        match self {
            Self::At(t) => t,
            Self::BeforeNow(d) => {
                now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// What a profile is computed over.
///
/// Written as `START..END` (each RFC 3339, a date, `now` or `now-PERIOD`: the rows of a view's
/// source with an event time in `[START, END)`), a period (`7d`: the last seven days), or a
/// path under the data root (a training set or feature log: a file, folder or glob).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataSelection {
    /// Rows of the view's source by event time, start inclusive, end exclusive.
    Window {
        /// Start.
        start: TimeBound,
        /// End.
        end: TimeBound,
        /// The text it was written as.
        text: String,
    },
    /// The rows of Parquet files whose columns are named by the features (`feature` or
    /// `view__feature`): a training set, or a feature service's logged reads.
    Files(String),
}

impl DataSelection {
    /// The window as nanoseconds `[start, end)` at `now`; `None` for files.
    pub fn window(&self, now: i64) -> Option<(i64, i64)> {
        match self {
            Self::Window { start, end, .. } => Some((start.resolve(now), end.resolve(now))),
            Self::Files(_) => None,
        }
    }
}

impl FromStr for DataSelection {
    type Err = CoreError;

    fn from_str(text: &str) -> Result<Self> {
        let s = text.trim();
        let bad = || CoreError::InvalidSelection(text.to_owned());
        if s.is_empty() {
            return Err(bad());
        }
        if let Some((start, end)) = s.split_once("..")
            && !start.contains('/')
            && !end.contains('/')
        {
            let start = TimeBound::parse(start).map_err(|_| bad())?;
            let end = TimeBound::parse(end).map_err(|_| bad())?;
            return Ok(Self::Window {
                start,
                end,
                text: s.to_owned(),
            });
        }
        if let Ok(period) = parse_duration(s) {
            return Ok(Self::Window {
                start: TimeBound::BeforeNow(period),
                end: TimeBound::BeforeNow(std::time::Duration::ZERO),
                text: s.to_owned(),
            });
        }
        let relative = std::path::Path::new(s)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if relative {
            Ok(Self::Files(s.to_owned()))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for DataSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Window { text, .. } => f.write_str(text),
            Self::Files(path) => f.write_str(path),
        }
    }
}

impl Serialize for DataSelection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DataSelection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// When a feature counts as drifted: a score above its threshold (below, for the
/// chi-squared test's p-value). Unset fields fall back to the view's, then to
/// [`DriftThresholds::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftThresholds {
    /// Population stability index, every feature (null counted as its own bin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// Kolmogorov–Smirnov distance (largest gap between the two CDFs), numeric features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kolmogorov_smirnov: Option<f64>,
    /// Jensen–Shannon distance (base 2, 0 to 1), categorical features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jensen_shannon: Option<f64>,
    /// Chi-squared test of homogeneity, categorical features: drifted when the p-value is
    /// below this. Off unless declared: on millions of rows every difference is significant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_squared_p_value: Option<f64>,
}

/// Thresholds are validated numbers, never NaN, so equality is total.
impl Eq for DriftThresholds {}

impl DriftThresholds {
    /// What applies where nothing is declared: PSI 0.2 (the usual "significant shift"),
    /// KS 0.1, JS 0.1; no chi-squared test.
    pub const DEFAULT: Self = Self {
        psi: Some(0.2),
        kolmogorov_smirnov: Some(0.1),
        jensen_shannon: Some(0.1),
        chi_squared_p_value: None,
    };

    /// These, with `fallback`'s where these are unset.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            psi: self.psi.or(fallback.psi),
            kolmogorov_smirnov: self.kolmogorov_smirnov.or(fallback.kolmogorov_smirnov),
            jensen_shannon: self.jensen_shannon.or(fallback.jensen_shannon),
            chi_squared_p_value: self.chi_squared_p_value.or(fallback.chi_squared_p_value),
        }
    }

    /// Every threshold set, by name, for checks.
    pub fn declared(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("psi", self.psi),
            ("kolmogorov_smirnov", self.kolmogorov_smirnov),
            ("jensen_shannon", self.jensen_shannon),
            ("chi_squared_p_value", self.chi_squared_p_value),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
    }
}

/// `monitoring:` of a feature view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// What `quiver monitor drift` compares with when no `--reference` is given; with it set,
    /// `quiver serve` scores each scheduled run's window against it and exports the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<DataSelection>,
    /// The view's thresholds.
    #[serde(default)]
    pub thresholds: DriftThresholds,
    /// Per feature, thresholds over the view's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, DriftThresholds>,
}

impl Monitoring {
    /// The thresholds that apply to `feature`.
    pub fn thresholds_for(&self, feature: &str) -> DriftThresholds {
        self.features
            .get(feature)
            .copied()
            .unwrap_or_default()
            .or(self.thresholds)
            .or(DriftThresholds::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        let w: DataSelection = "2024-01-01..2024-01-08".parse().unwrap();
        assert_eq!(
            w.window(0),
            Some((1_704_067_200_000_000_000, 1_704_672_000_000_000_000))
        );
        let now = 10 * 86_400 * 1_000_000_000;
        let last: DataSelection = "7d".parse().unwrap();
        assert_eq!(last.window(now), Some((3 * 86_400 * 1_000_000_000, now)));
        let relative: DataSelection = "now-2d..now-1d".parse().unwrap();
        assert_eq!(
            relative.window(now),
            Some((8 * 86_400 * 1_000_000_000, 9 * 86_400 * 1_000_000_000))
        );
        assert_eq!(
            "training/set.parquet".parse::<DataSelection>().unwrap(),
            DataSelection::Files("training/set.parquet".into())
        );
        assert_eq!(last.to_string(), "7d");
        for bad in ["", "/etc/passwd", "../up", "2024-13-01..now", "x..now"] {
            assert!(bad.parse::<DataSelection>().is_err(), "{bad}");
        }
    }

    #[test]
    fn thresholds_fall_back_feature_then_view_then_default() {
        let m = Monitoring {
            reference: None,
            thresholds: DriftThresholds {
                psi: Some(0.1),
                ..DriftThresholds::default()
            },
            features: [(
                "a".to_owned(),
                DriftThresholds {
                    psi: Some(0.05),
                    chi_squared_p_value: Some(0.01),
                    ..DriftThresholds::default()
                },
            )]
            .into(),
        };
        let a = m.thresholds_for("a");
        assert_eq!(
            (a.psi, a.chi_squared_p_value, a.kolmogorov_smirnov),
            (Some(0.05), Some(0.01), Some(0.1))
        );
        let b = m.thresholds_for("b");
        assert_eq!((b.psi, b.chi_squared_p_value), (Some(0.1), None));
    }
}
