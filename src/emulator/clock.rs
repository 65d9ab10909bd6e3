//! The emulator's clock: real time plus an offset that tests move forward.
//!
//! Token expiry, quota windows, score drift and the `time` field all read this clock, so a test
//! can make an hour pass in a microsecond. It never goes backwards on request; it does not touch
//! tokio's clock (latency and hangs are real time).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// Real UTC time plus an adjustable offset.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// Nanoseconds added to the system clock (i64 covers ±292 years).
    offset_nanos: AtomicI64,
}

impl Clock {
    /// The emulated "now".
    pub fn now(&self) -> OffsetDateTime {
        let offset = self.offset_nanos.load(Ordering::Relaxed);
        OffsetDateTime::now_utc() + time::Duration::nanoseconds(offset)
    }

    /// Milliseconds since the Unix epoch on the emulated clock.
    pub fn now_millis(&self) -> i64 {
        let nanos = self.now().unix_timestamp_nanos();
        i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Moves the clock forward by `by` (saturating far in the future).
    pub fn advance(&self, by: Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(current.saturating_add(nanos))
            });
    }

    /// How far the clock is ahead of real time.
    pub fn offset(&self) -> Duration {
        let nanos = self.offset_nanos.load(Ordering::Relaxed);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

/// `YYYY-MM-DD{separator}hh:mm:ss` of `at` in UTC: the part that Defender's, Entra's and Graph's
/// timestamp formats share (they differ in the separator, the fraction and the zone).
fn utc_to_the_second(at: OffsetDateTime, separator: char) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// RFC 3339 UTC with exactly seven fractional digits, as Defender writes `time`
/// (`2019-12-03T09:15:58.1665846Z`).
pub(crate) fn defender_time(at: OffsetDateTime) -> String {
    // The offset changes no fraction of a second.
    format!(
        "{}.{:07}Z",
        utc_to_the_second(at, 'T'),
        at.nanosecond() / 100
    )
}

/// Entra's error `timestamp` format (`2024-05-01 10:00:00Z`).
pub(crate) fn entra_timestamp(at: OffsetDateTime) -> String {
    format!("{}Z", utc_to_the_second(at, ' '))
}

/// Graph's `innerError.date` format: UTC without fraction or zone (`2024-05-01T10:00:00`).
pub(crate) fn graph_date(at: OffsetDateTime) -> String {
    utc_to_the_second(at, 'T')
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn defender_time_has_seven_fractional_digits() {
        let at = datetime!(2019-12-03 09:15:58.166584612 UTC);
        assert_eq!(defender_time(at), "2019-12-03T09:15:58.1665846Z");
        let whole = datetime!(2019-12-03 09:15:58 UTC);
        assert_eq!(defender_time(whole), "2019-12-03T09:15:58.0000000Z");
    }

    #[test]
    fn entra_and_graph_timestamps_are_utc_to_the_second() {
        let at = datetime!(2024-05-01 12:00:00.5 +02:00);
        assert_eq!(entra_timestamp(at), "2024-05-01 10:00:00Z");
        assert_eq!(graph_date(at), "2024-05-01T10:00:00");
        assert_eq!(defender_time(at), "2024-05-01T10:00:00.5000000Z");
    }

    #[test]
    fn advancing_moves_now_forward() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3_600));
        assert!(clock.now() - before >= time::Duration::seconds(3_600));
        assert_eq!(clock.offset(), Duration::from_secs(3_600));
    }
}
