//! Injectable clock and the time formats Graph and Entra use.
//!
//! The core never reads the wall clock: it asks a [`Clock`] for milliseconds since the Unix epoch,
//! so the simulation host can drive it in virtual time and tests can move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Source of "now" in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// A clock that only moves when told to (tests, simulation).
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A manual clock starting at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }
    /// Move the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Set the clock to an absolute time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// 2026-01-15T09:00:00Z, a convenient deterministic start for tests.
pub const TEST_EPOCH_MS: i64 = 1_768_467_600_000;

fn dt(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-01-15T10:55:00Z` (subscription objects).
pub fn iso_z(ms: i64) -> String {
    let d = dt(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// `2026-01-15T10:55:00+00:00` (notification payloads).
pub fn iso_offset(ms: i64) -> String {
    let s = iso_z(ms);
    format!("{}+00:00", &s[..s.len() - 1])
}

/// `2026-01-15T10:55:00.0000000` without zone (Outlook dateTimeTimeZone values).
pub fn iso_naive7(ms: i64) -> String {
    let s = iso_z(ms);
    format!("{}.0000000", &s[..s.len() - 1])
}

/// `2025-04-30 09:46:18Z` (Entra error timestamps).
pub fn entra_timestamp(ms: i64) -> String {
    iso_z(ms).replace('T', " ")
}

/// RFC 1123 date for the `Date`-like fields in Graph's innerError.
pub fn inner_error_date(ms: i64) -> String {
    iso_z(ms)
}

/// Parse an ISO-8601 date-time. A value without offset is taken as UTC (Graph's rule for
/// `calendarView` bounds and dateTimeTimeZone values).
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some((d.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let with_z = format!("{s}Z");
    if let Ok(d) = OffsetDateTime::parse(&with_z, &Rfc3339) {
        return Some((d.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    // Date only.
    let with_t = format!("{s}T00:00:00Z");
    OffsetDateTime::parse(&with_t, &Rfc3339)
        .ok()
        .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Parse an ISO-8601 duration such as `PT5M`, `PT1H30M`, `P1D` into milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let rest = s.strip_prefix('P')?;
    let (date, timep) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut total = 0f64;
    let mut num = String::new();
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'D' => total += num.parse::<f64>().ok()? * 86_400_000.0,
            'W' => total += num.parse::<f64>().ok()? * 7.0 * 86_400_000.0,
            _ => return None,
        }
        if !c.is_ascii_digit() && c != '.' {
            num.clear();
        }
    }
    if !num.is_empty() {
        return None;
    }
    for c in timep.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' => total += num.parse::<f64>().ok()? * 3_600_000.0,
            'M' => total += num.parse::<f64>().ok()? * 60_000.0,
            'S' => total += num.parse::<f64>().ok()? * 1000.0,
            _ => return None,
        }
        if !c.is_ascii_digit() && c != '.' {
            num.clear();
        }
    }
    if !num.is_empty() || (date.is_empty() && timep.is_empty()) {
        return None;
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates_parse() {
        assert_eq!(parse_duration("PT5M"), Some(300_000));
        assert_eq!(parse_duration("PT4H"), Some(14_400_000));
        assert_eq!(parse_duration("P1D"), Some(86_400_000));
        assert_eq!(parse_duration("5M"), None);
        assert_eq!(iso_z(TEST_EPOCH_MS), "2026-01-15T09:00:00Z");
        assert_eq!(
            parse_iso("2026-01-15T09:00:00.0000000Z"),
            Some(TEST_EPOCH_MS)
        );
        assert_eq!(parse_iso("2026-01-15T09:00:00"), Some(TEST_EPOCH_MS));
        assert_eq!(parse_iso("2026-01-15T10:00:00+01:00"), Some(TEST_EPOCH_MS));
    }
}
