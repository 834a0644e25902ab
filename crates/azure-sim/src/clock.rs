//! Time in the simulator. State changes are decided on the monotonic clock (`tokio::time::Instant`, so
//! tests may pause time); the timestamps clients see are derived from it through one anchor taken at
//! start-up, so every displayed time is consistent with every other one. Timestamps are written the way
//! ADF writes them: RFC 3339, UTC, seven fractional digits (`2024-01-01T00:00:00.1234567Z`).

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;
use tokio::time::Instant;

/// Maps monotonic instants to wall-clock times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    anchor: Instant,
    anchor_wall: DateTime<Utc>,
}

impl SimClock {
    pub fn new() -> Self {
        Self {
            anchor: Instant::now(),
            anchor_wall: Utc::now(),
        }
    }

    /// When the simulator started.
    pub fn started(&self) -> DateTime<Utc> {
        self.anchor_wall
    }

    /// The wall-clock time of `instant`.
    pub fn wall(&self, instant: Instant) -> DateTime<Utc> {
        let since = instant.saturating_duration_since(self.anchor);
        self.wall_after_anchor(since)
    }

    /// The wall-clock time `offset` after `instant`.
    pub fn wall_after(&self, instant: Instant, offset: Duration) -> DateTime<Utc> {
        let since = instant
            .saturating_duration_since(self.anchor)
            .saturating_add(offset);
        self.wall_after_anchor(since)
    }

    fn wall_after_anchor(&self, since: Duration) -> DateTime<Utc> {
        TimeDelta::from_std(since)
            .ok()
            .and_then(|delta| self.anchor_wall.checked_add_signed(delta))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// `2024-01-01T00:00:00.1234567Z`.
pub(crate) fn format_timestamp(time: DateTime<Utc>) -> String {
    // Leap seconds report up to 1_999_999_999 ns; keep seven digits.
    let ticks = (time.timestamp_subsec_nanos() / 100).min(9_999_999);
    format!("{}.{ticks:07}Z", time.format("%Y-%m-%dT%H:%M:%S"))
}

/// Seconds scaled by the time scale, as a duration; absurdly large values are capped at ~100 years
/// instead of overflowing.
pub(crate) fn scaled(secs: f64, time_scale: f64) -> Duration {
    const CAP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let value = secs.max(0.0) * time_scale;
    Duration::try_from_secs_f64(value).map_or(CAP, |d| d.min(CAP))
}

/// Whole milliseconds of a duration, for `durationInMs`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_seven_digits_and_parse_as_rfc3339() {
        let t = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .and_then(|t| t.checked_add_signed(TimeDelta::nanoseconds(123_456_789)))
            .expect("valid time");
        let text = format_timestamp(t);
        assert_eq!(text, "2024-01-01T00:00:00.1234567Z");
        let parsed =
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok());
    }

    #[test]
    fn scaling_caps_instead_of_overflowing() {
        assert_eq!(scaled(10.0, 0.01), Duration::from_millis(100));
        assert_eq!(scaled(-1.0, 1.0), Duration::ZERO);
        assert!(scaled(1e300, 1.0) > Duration::from_secs(3_000_000_000));
    }

    #[test]
    fn wall_times_follow_the_monotonic_clock() {
        let clock = SimClock::new();
        let now = Instant::now();
        let later = clock.wall_after(now, Duration::from_secs(2));
        let delta = later - clock.wall(now);
        assert_eq!(delta.num_milliseconds(), 2000);
    }
}
