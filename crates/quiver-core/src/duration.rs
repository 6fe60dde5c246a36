//! Durations as written in definition files and on the command line: `0`, `90s`, `36h`, `1d12h`, `2w`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A feature view's time to live. Zero means "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ttl(Duration);

impl Ttl {
    /// No limit.
    pub const UNLIMITED: Ttl = Ttl(Duration::ZERO);

    /// A ttl of the given duration (zero means no limit).
    pub fn new(d: Duration) -> Self {
        Self(d)
    }

    /// The limit, or `None` when the ttl is zero (no limit).
    pub fn limit(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// The ttl as a duration (zero for no limit).
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

/// A duration written as in definition files (`90s`, `1h`, `1d12h`), e.g. how often a view
/// is materialized. Serialized as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Period(pub Duration);

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl FromStr for Period {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration such as `0`, `500ms`, `90s`, `15m`, `36h`, `1d`, `2w` or `1d12h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || CoreError::InvalidDuration(text.to_owned());
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut millis: u64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (_, factor) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
        millis = n
            .checked_mul(*factor)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(millis))
}

/// Formats a duration as [`parse_duration`] reads it back, in days and smaller units
/// (`7d`, `1d12h`, `0`).
pub fn format_duration(d: Duration) -> String {
    let mut millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (unit, factor) in UNITS.into_iter().skip(1) {
        if millis >= factor {
            out.push_str(&format!("{}{unit}", millis / factor));
            millis %= factor;
        }
    }
    out
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl FromStr for Ttl {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("36h").unwrap(), 36 * h);
        assert_eq!(parse_duration("1d").unwrap(), 24 * h);
        assert_eq!(parse_duration("1d12h").unwrap(), 36 * h);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 24 * h);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "d",
            "1",
            "1x",
            "-1d",
            "1.5h",
            "1 d",
            "h1",
            "99999999999999999999w",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["0", "36h", "1d12h", "2w", "1m30s", "1s500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(36 * 3600)), "1d12h");
        assert_eq!(format_duration(parse_duration("1w").unwrap()), "7d");
    }
}
