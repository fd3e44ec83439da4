//! `webhooks:` — deliveries to callers' `callback_url`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, join};
use crate::schema::Humantime;

/// Outgoing webhooks: deliveries to the `callback_url` a caller gave, signed with
/// its key's `webhook_secret` (Standard Webhooks), retried until they succeed or
/// `give_up_after`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Accept callback URLs that resolve to loopback, private, link-local or
    /// metadata addresses. Off by default: such URLs get 422 `invalid_callback_url`.
    pub allow_private_networks: bool,
    /// Deadline of one delivery attempt (connect + answer).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub timeout: Duration,
    /// Wait before the first retry; each further retry waits twice as long (±20 % jitter).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub retry_initial: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub retry_max: Duration,
    /// Give a delivery up (logged as an error) when it still fails this long after the summary became final.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub give_up_after: Duration,
    /// At most this many deliveries in flight at once (per replica).
    pub max_concurrency: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(10 * 60),
            give_up_after: Duration::from_secs(24 * 3600),
            max_concurrency: 32,
        }
    }
}

impl WebhooksConfig {
    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let path = "webhooks";
        for (field, value) in [("timeout", self.timeout), ("retry_initial", self.retry_initial)] {
            if value.is_zero() {
                errors.push(ConfigError::new(join(path, field), "must be longer than 0s"));
            }
        }
        if self.retry_max < self.retry_initial {
            errors.push(ConfigError::new(join(path, "retry_max"), "must be at least retry_initial"));
        }
        if self.give_up_after < self.retry_initial {
            errors.push(ConfigError::new(join(path, "give_up_after"), "must be at least retry_initial"));
        }
        if self.max_concurrency == 0 {
            errors.push(ConfigError::new(join(path, "max_concurrency"), "must be at least 1"));
        }
    }
}
