//! Wall-clock milliseconds, written once: the store, the breaker, the webhook
//! outbox and the vendors' token state all keep times as ms since the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch of `t` (0 before the epoch, saturating far after it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A duration in whole milliseconds (saturating).
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A time to live in whole milliseconds, at least 1: Redis refuses `PX 0`.
pub fn ttl_ms(d: Duration) -> u64 {
    duration_ms(d).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_saturate_and_ttls_are_never_zero() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
        assert_eq!(duration_ms(Duration::from_micros(999)), 0);
        assert_eq!(ttl_ms(Duration::from_micros(999)), 1);
    }
}
