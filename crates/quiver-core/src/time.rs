//! Times on the command line and in requests: RFC 3339, a date (midnight UTC), or `now`; and
//! the unit of an integer time.
//!
//! Quiver compares instants as nanoseconds since the Unix epoch (`i64`: 1677 to 2262)
//! everywhere: in training sets, in materialization and in the online store, so online and
//! offline agree to the nanosecond.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::error::{CoreError, Result};

/// Parses `2024-01-01T00:00:00Z` (any RFC 3339 offset), `2024-01-01T00:00:00` (read as UTC),
/// `2024-01-01` (midnight UTC) or `now`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    let s = text.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(Utc::now());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default());
    }
    Err(CoreError::InvalidTime(text.to_owned()))
}

/// [`parse_time`] as nanoseconds since the epoch; times outside 1677–2262 are an error.
pub fn parse_time_nanos(text: &str) -> Result<i64> {
    parse_time(text)?
        .timestamp_nanos_opt()
        .ok_or_else(|| CoreError::TimeOutOfRange(text.to_owned()))
}

/// The current time in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// RFC 3339 text of an instant in nanoseconds (`Z`, and only the sub-second digits it has).
pub fn format_nanos(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The unit of a time given as an integer (a push's `event_timestamp: 1704067200`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampUnit {
    /// Seconds since the epoch.
    Seconds,
    /// Milliseconds since the epoch.
    Millis,
    /// Microseconds since the epoch.
    Micros,
    /// Nanoseconds since the epoch.
    Nanos,
}

impl TimestampUnit {
    /// `value` in this unit as nanoseconds, or `None` if it does not fit (before 1677 or
    /// after 2262).
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        let factor = match self {
            Self::Seconds => 1_000_000_000,
            Self::Millis => 1_000_000,
            Self::Micros => 1_000,
            Self::Nanos => 1,
        };
        value.checked_mul(factor)
    }

    /// The unit's name: `s`, `ms`, `us` or `ns`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Seconds => "s",
            Self::Millis => "ms",
            Self::Micros => "us",
            Self::Nanos => "ns",
        }
    }
}

impl fmt::Display for TimestampUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimestampUnit {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "s" => Ok(Self::Seconds),
            "ms" => Ok(Self::Millis),
            "us" => Ok(Self::Micros),
            "ns" => Ok(Self::Nanos),
            other => Err(CoreError::InvalidTimestampUnit(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_dates_and_naive_times_as_utc() {
        let t = parse_time("2024-01-01T01:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-01T00:00:00+00:00");
        assert_eq!(parse_time("2024-01-01").unwrap(), t);
        assert_eq!(parse_time("2024-01-01T00:00:00").unwrap(), t);
        assert!(parse_time("now").is_ok());
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.to_string().contains("'yesterday'"), "{err}");
        assert!(parse_time("2024-13-01").is_err());
    }

    #[test]
    fn nanosecond_times_have_a_range_and_round_trip() {
        let t = parse_time_nanos("2024-01-01T00:00:00.000000001Z").unwrap();
        assert_eq!(t, 1_704_067_200_000_000_001);
        assert_eq!(format_nanos(t), "2024-01-01T00:00:00.000000001Z");
        assert_eq!(
            format_nanos(1_704_067_200_000_000_000),
            "2024-01-01T00:00:00Z"
        );
        assert!(parse_time_nanos("9999-12-31T00:00:00Z").is_err());
    }

    #[test]
    fn integer_units_are_explicit() {
        assert_eq!(
            "s".parse::<TimestampUnit>().unwrap().to_nanos(2),
            Some(2_000_000_000)
        );
        assert_eq!(TimestampUnit::Millis.to_nanos(3), Some(3_000_000));
        assert_eq!(TimestampUnit::Seconds.to_nanos(i64::MAX / 10), None);
        let err = "sec".parse::<TimestampUnit>().unwrap_err();
        assert!(err.to_string().contains("'sec'"), "{err}");
    }
}
