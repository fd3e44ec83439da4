//! The embedded store: a bounded in-memory cache (moka, least recently used
//! evicted first, every new entry admitted) with a TTL per entry for summaries; jobs and the webhook outbox in maps under one mutex (never
//! held across an await). One replica only; a restart loses everything,
//! pending jobs and undelivered webhooks included.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use providers::Question;
use providers::time::now_ms;

use super::{
    Delivery, Job, JobStore, Outbox, QuestionLedger, QuestionLedgers, StoreError, StoreHealth, StoredSummary,
    SummaryStore, WebhookTarget,
};

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
    state: Mutex<State>,
}

/// Jobs and outbox: small (bounded by pending work, not by traffic), kept exactly.
#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    outbox: HashMap<String, Delivery>,
    /// Question ledgers by (provider, conversation), each with when it expires.
    ledgers: HashMap<(String, String), (QuestionLedger, Instant)>,
    /// When expired ledgers were last dropped.
    ledgers_swept: Option<Instant>,
}

/// How often expired question ledgers are dropped (they are also ignored when read).
const LEDGER_SWEEP: Duration = Duration::from_secs(60);

impl MemoryStore {
    pub fn new(max_bytes: u64) -> Self {
        let summaries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.summary.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            // Least recently used goes first, and every new entry is admitted.
            // moka's default, TinyLFU, refuses a newcomer less popular than the
            // entries it would evict: when full, a pending job's resource (the
            // `Location` of a 202) or a summary just paid for at the vendor would
            // not be stored at all — the GET would be a 404 or a second vendor call.
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self { summaries, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn degraded(&self) -> Option<String> {
        None
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SummaryStore for MemoryStore {
    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError> {
        Ok(self.summaries.get(id).map(|e| e.summary))
    }

    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        self.summaries.insert(id.to_owned(), Entry { summary, ttl });
        Ok(())
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn create_job(&self, job: Job, pending: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.state();
        self.summaries.insert(job.id.clone(), Entry { summary: pending, ttl });
        state.jobs.insert(job.id.clone(), job);
        Ok(())
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.state().jobs.get(id).cloned())
    }

    async fn unclaimed_jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(self.state().jobs.values().cloned().collect())
    }

    async fn add_webhook(&self, id: &str, target: WebhookTarget) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(id) else { return Ok(false) };
        if !job.webhooks.contains(&target) {
            job.webhooks.push(target);
        }
        Ok(true)
    }

    async fn finish_job(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<Vec<Delivery>, StoreError> {
        let mut state = self.state();
        let Some(job) = state.jobs.remove(id) else { return Ok(Vec::new()) };
        let now = now_ms();
        let body = String::from_utf8_lossy(&summary.body).into_owned();
        let deliveries: Vec<Delivery> =
            job.webhooks.into_iter().map(|target| Delivery::new(id, target, body.clone(), now)).collect();
        for d in &deliveries {
            state.outbox.insert(d.id.clone(), d.clone());
        }
        self.summaries.insert(id.to_owned(), Entry { summary, ttl });
        Ok(deliveries)
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut state = self.state();
        let mut due: Vec<&mut Delivery> = state.outbox.values_mut().filter(|d| d.next_attempt_ms <= now_ms).collect();
        due.sort_by_key(|d| d.next_attempt_ms);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|d| {
                let claimed = d.clone();
                d.next_attempt_ms = lease_until_ms;
                claimed
            })
            .collect())
    }

    async fn retry_delivery(&self, delivery: Delivery) -> Result<(), StoreError> {
        let mut state = self.state();
        // Only if still queued: a delivery removed meanwhile stays removed.
        if let Some(queued) = state.outbox.get_mut(&delivery.id) {
            *queued = delivery;
        }
        Ok(())
    }

    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        self.state().outbox.remove(id);
        Ok(())
    }

    async fn next_delivery_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.state().outbox.values().map(|d| d.next_attempt_ms).min())
    }
}

#[async_trait]
impl QuestionLedgers for MemoryStore {
    async fn question_ledger(&self, provider: &str, conversation: &str) -> Result<Option<QuestionLedger>, StoreError> {
        let state = self.state();
        let now = Instant::now();
        Ok(state
            .ledgers
            .get(&(provider.to_owned(), conversation.to_owned()))
            .filter(|(_, expires)| *expires > now)
            .map(|(ledger, _)| ledger.clone()))
    }

    async fn merge_questions(
        &self,
        provider: &str,
        conversation: &str,
        questions: Vec<Question>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let now = Instant::now();
        if state.ledgers_swept.is_none_or(|at| now.duration_since(at) >= LEDGER_SWEEP) {
            state.ledgers.retain(|_, (_, expires)| *expires > now);
            state.ledgers_swept = Some(now);
        }
        let (ledger, expires) = state
            .ledgers
            .entry((provider.to_owned(), conversation.to_owned()))
            .or_insert_with(|| (QuestionLedger::default(), now));
        if *expires <= now {
            *ledger = QuestionLedger::default();
        }
        *expires = now + ttl;
        for question in questions {
            match ledger.questions.iter_mut().find(|q| q.id == question.id) {
                Some(known) => *known = question,
                None => ledger.questions.push(question),
            }
        }
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

    /// A new entry is always admitted, evicting the least recently used: a
    /// pending job's resource (the `Location` a 202 just gave) or a summary just
    /// paid for at the vendor must be readable at once, however popular the
    /// entries already cached are. (moka's default TinyLFU admission refused
    /// such one-hit newcomers when the cache was full: the GET answered 404.)
    #[tokio::test]
    async fn a_new_entry_is_admitted_when_the_cache_is_full_of_popular_ones() {
        let store = MemoryStore::new(64 * 1024);
        let big = StoredSummary { body: Bytes::from(vec![b'x'; 4096]), ..summary() };
        for i in 0..30 {
            store.put_summary(&format!("hot{i}"), big.clone(), Duration::from_secs(60)).await.unwrap();
            for _ in 0..5 {
                store.get_summary(&format!("hot{i}")).await.unwrap();
            }
        }
        store.summaries.run_pending_tasks();
        let job = Job {
            id: "sum_new".into(),
            provider: "cb".into(),
            request: providers::SummaryRequest {
                kind: providers::Kind::Summary,
                language: None,
                conversation: providers::Conversation::default(),
            },
            vendor_ref: "action-1".into(),
            created_at_ms: 0,
            deadline_ms: u64::MAX,
            webhooks: Vec::new(),
        };
        store
            .create_job(job, StoredSummary { status: Status::Pending, ..big.clone() }, Duration::from_secs(60))
            .await
            .unwrap();
        store.put_summary("fresh", big.clone(), Duration::from_secs(60)).await.unwrap();
        store.summaries.run_pending_tasks();
        assert!(store.get_summary("sum_new").await.unwrap().is_some(), "the pending job's resource was not admitted");
        assert!(store.get_summary("fresh").await.unwrap().is_some(), "a new summary was not admitted");
        // The least recently used went instead, and the bound still holds.
        assert!(store.get_summary("hot0").await.unwrap().is_none());
        assert!(store.summaries.weighted_size() <= 64 * 1024, "{}", store.summaries.weighted_size());
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
