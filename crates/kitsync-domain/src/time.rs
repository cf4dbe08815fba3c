//! Marketplace timestamps: `yyyyMMddHHmmssSSS` in UTC+8 (docs/protocol.md §5).
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// UTC+8 in milliseconds: the zone every Kit `timeStamp`/`currentSyncTime` is written in.
pub const UTC8_OFFSET_MS: i64 = 8 * 3600 * 1000;

/// A marketplace change time, kept as Unix milliseconds so versions compare as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KitTime(pub i64);

impl KitTime {
    /// Parses `yyyyMMddHHmmssSSS` (17 digits, UTC+8). Also accepts 14 digits (no millis).
    ///
    /// # Errors
    /// A message saying what the expected shape is, for the caller to attach to a field name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() != 17 && s.len() != 14) {
            return Err(format!(
                "must be a UTC+8 time written yyyyMMddHHmmssSSS (17 digits), got `{s}`"
            ));
        }
        let (secs_part, millis) = if s.len() == 17 {
            (&s[..14], s[14..].parse::<i64>().unwrap_or(0))
        } else {
            (s, 0)
        };
        let naive = NaiveDateTime::parse_from_str(secs_part, "%Y%m%d%H%M%S")
            .map_err(|_| format!("`{s}` is not a valid calendar date and time"))?;
        Ok(KitTime(
            naive.and_utc().timestamp_millis() - UTC8_OFFSET_MS + millis,
        ))
    }

    #[must_use]
    pub fn from_millis(ms: i64) -> Self {
        KitTime(ms)
    }

    #[must_use]
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The same instant in UTC.
    #[must_use]
    pub fn to_utc(self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// Back to the marketplace's own 17-digit UTC+8 form.
    #[must_use]
    pub fn to_kit_string(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0 + UTC8_OFFSET_MS)
            .unwrap_or_default()
            .format("%Y%m%d%H%M%S%3f")
            .to_string()
    }
}

/// Wall-clock Unix milliseconds, the unit every table's times are stored in (leases, retry
/// times, expiries, `created_at`); they are compared across processes, so it is never a
/// monotonic clock. The one clock read of this crate, shared by the crates above it: the rules
/// here take their times as arguments.
#[must_use]
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl fmt::Display for KitTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_kit_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let t = KitTime::parse("20220413093539534").unwrap();
        // 2022-04-13 09:35:39.534 at UTC+8 is 01:35:39.534 UTC.
        assert_eq!(t.to_utc().to_rfc3339(), "2022-04-13T01:35:39.534+00:00");
        assert_eq!(t.to_kit_string(), "20220413093539534");
    }

    #[test]
    fn orders_like_the_digits() {
        let a = KitTime::parse("20220413093539534").unwrap();
        let b = KitTime::parse("20220413093539535").unwrap();
        assert!(a < b);
    }

    #[test]
    fn rejects_malformed_times() {
        assert!(KitTime::parse("2022-04-13").is_err());
        assert!(KitTime::parse("20221313093539534")
            .unwrap_err()
            .contains("not a valid"));
        assert!(KitTime::parse("2022041309353953x").is_err());
        assert!(KitTime::parse("20220413093539").is_ok());
    }
}
