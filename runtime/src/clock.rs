//! The one wall clock. Everything that compares with timestamps written by
//! other processes (Lease renewals, `observedAt` on GpuNodes, autoscaler
//! status times) reads it here; durations inside a process use `Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero if the system clock is set before it.
pub fn unix_now() -> Duration {
    since_epoch(SystemTime::now())
}

/// [`unix_now`] in whole milliseconds, saturating.
pub fn unix_millis() -> u64 {
    u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX)
}

/// `at` as time since the Unix epoch; zero for a time before it.
pub fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_read_as_zero() {
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            since_epoch(UNIX_EPOCH + Duration::from_millis(1500)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn the_clock_is_past_2020() {
        assert!(unix_millis() > 1_577_836_800_000);
    }
}
