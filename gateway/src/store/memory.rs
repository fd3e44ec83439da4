//! The embedded store: a bounded in-memory cache (moka) with a TTL per entry.
//! One replica only; a restart loses everything.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::sync::Cache;

use super::{Store, StoreError, StoredSummary};

#[derive(Clone)]
struct Entry {
    summary: StoredSummary,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What one entry costs besides its key and body: the cache's own node, the
/// entry struct and allocator rounding (sg-bench measured ≈ 900 bytes of RSS per
/// entry beyond a 2.5 KB body).
const ENTRY_OVERHEAD: usize = 1024;

/// In-memory summaries taking at most about `max_bytes` (least recently used go first).
pub struct MemoryStore {
    summaries: Cache<String, Entry>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> Self {
        let summaries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.summary.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { summaries }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError> {
        Ok(self.summaries.get(id).map(|e| e.summary))
    }

    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        self.summaries.insert(id.to_owned(), Entry { summary, ttl });
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use providers::Status;

    use super::*;

    fn summary() -> StoredSummary {
        StoredSummary { provider: Arc::from("p"), status: Status::Completed, body: Bytes::from_static(b"{}") }
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let store = MemoryStore::new(1 << 20);
        store.put_summary("a", summary(), Duration::from_millis(50)).await.unwrap();
        store.put_summary("b", summary(), Duration::from_secs(60)).await.unwrap();
        assert!(store.get_summary("a").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.get_summary("a").await.unwrap().is_none());
        assert!(store.get_summary("b").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn memory_is_bounded_in_bytes() {
        let store = MemoryStore::new(64 * 1024);
        let big = StoredSummary { body: Bytes::from(vec![b'x'; 4096]), ..summary() };
        for i in 0..100 {
            store.put_summary(&format!("k{i}"), big.clone(), Duration::from_secs(60)).await.unwrap();
        }
        store.summaries.run_pending_tasks();
        assert!(store.summaries.weighted_size() <= 64 * 1024, "{}", store.summaries.weighted_size());
        assert!(store.summaries.entry_count() < 20, "{}", store.summaries.entry_count());
    }
}
