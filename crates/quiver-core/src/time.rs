//! Times on the command line and in requests: RFC 3339, a date (midnight UTC), or `now`.

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
}
