//! `store:` — where completed summaries are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// The summary store. Without `redis_url` the gateway keeps everything in memory
/// (one replica only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://host:6379/0`: a store shared by all replicas. Omit for the embedded store.
    pub redis_url: Option<Secret<String>>,
    /// How long completed results are served from the store.
    #[serde(with = "humantime_serde")]
    pub summary_ttl: Duration,
    /// How long failed results are served from the store.
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// How long the questions asked about a conversation (and their answers) are
    /// kept. A question asked again within it is answered from the store without
    /// spending the vendor's per-interaction allowance.
    #[serde(with = "humantime_serde")]
    pub question_ttl: Duration,
    /// Embedded store only: the summaries kept take at most about this many bytes
    /// of memory (least recently used go first).
    pub max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            summary_ttl: Duration::from_secs(12 * 3600),
            failure_ttl: Duration::from_secs(60),
            question_ttl: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 32 * 1024 * 1024,
        }
    }
}
