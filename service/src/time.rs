//! Wall-clock helpers. The service stores every instant as Unix milliseconds (one integer
//! type that SQLite and PostgreSQL both hold exactly) and renders RFC 3339 only at the edge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0 rather than failing.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// RFC 3339 UTC rendering with millisecond precision, e.g. `2026-11-22T15:55:00.123Z`.
/// Negative inputs clamp to the epoch: they only arise from corrupt rows.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_epoch_millis_as_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn negative_instants_clamp_to_epoch() {
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
    }
}
