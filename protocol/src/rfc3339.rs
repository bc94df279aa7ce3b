//! RFC 3339 text for times, the one format every manifest, custody record and API answer uses.
//!
//! UTC always, with as many fractional digits as the time has (nanoseconds at most), so text
//! sorts as the times do within one second's precision and round-trips exactly.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A time as RFC 3339; empty only when it cannot be formatted (a year beyond 9999).
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// A Unix time in seconds, or `None` when out of range.
pub fn from_unix(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// A Unix time in nanoseconds, or `None` when out of range.
pub fn from_unix_ns(ns: i128) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// RFC 3339 text (any offset) as UTC nanoseconds since the Unix epoch.
pub fn parse_ns(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
}

/// RFC 3339 text as a time, with the parser's reason when it is not one.
pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nanoseconds_and_normalises_offsets() {
        let ns = parse_ns("2026-11-29T09:57:52.065472261Z").unwrap();
        assert_eq!(
            from_unix_ns(i128::from(ns)).unwrap(),
            "2026-11-29T09:57:52.065472261Z"
        );
        assert_eq!(
            parse_ns("2026-11-29T10:57:52+01:00"),
            parse_ns("2026-11-29T09:57:52Z")
        );
        assert_eq!(from_unix(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(from_unix(i64::MAX), None);
        assert_eq!(parse_ns("yesterday"), None);
        let t = parse("2026-11-29T10:57:52+01:00").unwrap();
        assert_eq!(format(t), "2026-11-29T09:57:52Z");
    }
}
