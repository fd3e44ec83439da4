//! Where summaries are kept, behind one trait so the embedded store and a
//! shared Redis store are interchangeable without touching handlers.
//!
//! Values are stored pre-serialized ([`StoredSummary::body`] is the exact JSON
//! the API returns), so a cache hit copies bytes instead of serializing.
//!
//! - [`memory`]: the embedded store (one replica; bounded; per-entry TTL).

pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use providers::Status;

pub use self::memory::MemoryStore;

/// A summary resource as stored: its JSON plus what the gateway needs without parsing it.
#[derive(Debug, Clone)]
pub struct StoredSummary {
    /// The provider's name, for scope checks on `GET /v1/summaries/{id}`.
    pub provider: Arc<str>,
    pub status: Status,
    /// The resource's JSON, exactly as served.
    pub body: Bytes,
}

/// The store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the summary store is unavailable: {0}")]
pub struct StoreError(pub String);

/// A summary store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `memory` or `redis`, for `/readyz` and logs.
    fn kind(&self) -> &'static str;

    /// The summary with this id, if present and not expired.
    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError>;

    /// Stores (or replaces) a summary for `ttl`.
    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
