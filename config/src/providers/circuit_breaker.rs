//! `providers.<name>.circuit_breaker`: when the gateway stops calling a failing vendor.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, join};
use crate::schema::Humantime;

/// Longest `window` or `open_for`: past an hour a breaker hides an outage
/// rather than rides it out.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// A provider's circuit breaker (`providers.<name>.circuit_breaker`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// `false`: never open; every request goes to the vendor however it fails.
    pub enabled: bool,
    /// Opens after this many failed calls in a row.
    #[schemars(range(min = 1))]
    pub consecutive_failures: u32,
    /// Opens when at least this share of the calls within `window` failed (0 < ratio ≤ 1) ...
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))]
    pub failure_ratio: f64,
    /// ... once `window` holds at least this many calls.
    #[schemars(range(min = 1))]
    pub min_calls: u32,
    /// The sliding window `failure_ratio` is computed over (at most 1h).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub window: Duration,
    /// How long it stays open (no calls to the vendor) before trial calls (at most 1h).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub open_for: Duration,
    /// Trial calls let through at once after `open_for`; other requests still
    /// get 503 until a trial succeeds (closed) or fails (open again).
    #[schemars(range(min = 1))]
    pub half_open_calls: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            half_open_calls: 1,
        }
    }
}

impl CircuitBreakerConfig {
    pub(crate) fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.consecutive_failures == 0 {
            errors.push(ConfigError::new(join(path, "consecutive_failures"), "must be at least 1"));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            errors.push(ConfigError::new(join(path, "failure_ratio"), "must be a number above 0 and at most 1"));
        }
        if self.min_calls == 0 {
            errors.push(ConfigError::new(join(path, "min_calls"), "must be at least 1"));
        }
        for (key, period) in [("window", self.window), ("open_for", self.open_for)] {
            if period.is_zero() || period > MAX_PERIOD {
                errors.push(ConfigError::new(join(path, key), "must be longer than 0s and at most 1h"));
            }
        }
        if self.half_open_calls == 0 {
            errors.push(ConfigError::new(join(path, "half_open_calls"), "must be at least 1"));
        }
    }
}
