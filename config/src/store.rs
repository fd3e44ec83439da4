//! `store:` — where completed summaries are kept.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::error::ConfigError;
use crate::schema::Humantime;

/// Where summaries, pending jobs, webhook deliveries and question ledgers are kept.
/// Without `redis_url`: in memory, for one replica only (a restart loses them).
/// With it: one Redis shared by every replica.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://[:password@]host:6379/0` (or `redis+unix://`, `unix://`): a store
    /// shared by every replica. Omit for the embedded in-memory store. As it may hold
    /// a password, it is best given by `SUMMARY_GATEWAY__STORE__REDIS_URL`.
    pub redis_url: Option<Secret<String>>,
    /// How long completed results are served from the store.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub summary_ttl: Duration,
    /// How long failed results are served from the store; the next request after
    /// that calls the vendor again.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub failure_ttl: Duration,
    /// How long the questions asked about a conversation (and their answers) are
    /// kept. A question asked again within it is answered from the store without
    /// spending the vendor's per-interaction allowance.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub question_ttl: Duration,
    /// Redis only: every key starts `<key_prefix>:` and the pub/sub channel is
    /// `<key_prefix>:events`, so several gateways (or tests) can share one Redis.
    pub key_prefix: String,
    /// Redis only: how long a replica holds a pending job's lease without
    /// renewing it. A replica that dies loses its jobs to another after this.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub job_lease: Duration,
    /// Redis only: the longest any store command may take. Past it the store
    /// counts as down for a moment (cache bypassed, local rate limits, jobs
    /// refused with 503) instead of slowing every request.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub timeout: Duration,
    /// Embedded store only: the summaries kept take at most about this many bytes
    /// of memory (least recently used go first; the default is 32 MiB).
    pub max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            summary_ttl: Duration::from_secs(12 * 3600),
            failure_ttl: Duration::from_secs(60),
            question_ttl: Duration::from_secs(7 * 24 * 3600),
            key_prefix: "sg".to_owned(),
            job_lease: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (field, value) in [
            ("summary_ttl", self.summary_ttl),
            ("failure_ttl", self.failure_ttl),
            ("question_ttl", self.question_ttl),
            ("timeout", self.timeout),
        ] {
            if value.is_zero() {
                errors.push(ConfigError::new(format!("store.{field}"), "must be longer than 0s"));
            }
        }
        if self.job_lease < Duration::from_secs(1) {
            errors.push(ConfigError::new("store.job_lease", "must be at least 1s"));
        }
        if self.key_prefix.is_empty()
            || !self.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
        {
            errors.push(ConfigError::new(
                "store.key_prefix",
                "must be 1 or more of a-z, A-Z, 0-9, `-`, `_`, `:` and `.` (no `{}`: hash tags are the gateway's)",
            ));
        }
        if let Some(url) = &self.redis_url {
            let scheme = url.expose().split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "redis+unix" | "unix")) {
                errors.push(ConfigError::new(
                    "store.redis_url",
                    "must be a redis://host:port/db (or redis+unix://, unix://) URL; \
                     rediss://, redis+cluster:// and Sentinel URLs are not supported by this build",
                ));
            }
        }
    }
}
