//! Where summaries, jobs and the webhook outbox are kept, behind one trait so
//! the embedded store and a shared Redis store are interchangeable without
//! touching handlers.
//!
//! Values are stored pre-serialized ([`StoredSummary::body`] is the exact JSON
//! the API returns), so a cache hit copies bytes instead of serializing.
//!
//! The store is cut along its roles ([`Stores`]), each a trait of its own that
//! its consumers take: [`SummaryStore`] (the cache and resources), [`JobStore`]
//! (pending vendor jobs), [`Outbox`] (webhooks), [`QuestionLedgers`] and
//! [`StoreHealth`].
//!
//! The operations that must not race are single trait methods, so each store
//! can make them atomic its own way (a mutex here, a script or transaction in
//! Redis): [`JobStore::add_webhook`] against [`JobStore::finish_job`] (a caller
//! that registers a webhook either is on the job when it finishes or sees it
//! finished), and [`JobStore::finish_job`] itself (final summary stored, job
//! removed, one delivery queued per webhook — all or nothing).
//!
//! With several replicas (a shared store) there is also a [`Fleet`]: a flight
//! lock per summary id (one vendor call for the fleet), a lease per pending job
//! (one poller for the fleet, taken over when its replica dies), events between
//! replicas ([`StoreEvent`]: a job ended, a flight ended, a vendor callback
//! arrived) and the callers' fleet-wide rate limits. The embedded store has
//! none: it is the only replica.
//!
//! - [`memory`]: the embedded store (one replica; bounded; per-entry TTL).
//! - [`redis`]: the shared store (many replicas; key layout in its module doc).

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gateway_config::StoreConfig;
use providers::{Question, SharedState, Status, SummaryRequest};
use serde::{Deserialize, Serialize};

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// A summary resource as stored: its JSON plus what the gateway needs without parsing it.
#[derive(Debug, Clone)]
pub struct StoredSummary {
    /// The provider's name, for scope checks on `GET /v1/summaries/{id}`.
    pub provider: Arc<str>,
    pub status: Status,
    /// The resource's JSON, exactly as served.
    pub body: Bytes,
}

/// An asynchronous summary the gateway is waiting for at a vendor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The summary's id.
    pub id: String,
    pub provider: String,
    pub request: SummaryRequest,
    /// The vendor's reference to poll (CommBox's `action_id`).
    pub vendor_ref: String,
    /// Milliseconds since the epoch.
    pub created_at_ms: u64,
    /// Past this (ms since the epoch) the job fails with `provider_timeout`.
    pub deadline_ms: u64,
    /// Callers to send the final resource to (their `callback_url`s). Stored as
    /// `callbacks`, as before the rename, so replicas of either version read it.
    #[serde(rename = "callbacks")]
    pub webhooks: Vec<WebhookTarget>,
}

/// A caller's webhook on a job: its `callback_url`. ("Callback" in the gateway's
/// code means a vendor calling the gateway back; the caller side is "webhook".)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// The caller (API key name) whose webhook secret signs the delivery.
    pub caller: String,
    pub url: String,
}

/// A webhook waiting in the outbox: stored before it is attempted, removed only after a 2xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `webhook-id`: the same on every attempt, so receivers can deduplicate.
    pub id: String,
    pub summary_id: String,
    pub caller: String,
    pub url: String,
    /// The final resource's JSON.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the summary became final (ms since the epoch).
    pub created_at_ms: u64,
    /// Not to be attempted before this (ms since the epoch).
    pub next_attempt_ms: u64,
}

impl Delivery {
    /// A new delivery of a job's final resource to one of its webhook targets, due at `now_ms`.
    pub fn new(summary_id: &str, target: WebhookTarget, body: String, now_ms: u64) -> Self {
        Self {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            summary_id: summary_id.to_owned(),
            caller: target.caller,
            url: target.url,
            body,
            attempts: 0,
            created_at_ms: now_ms,
            next_attempt_ms: now_ms,
        }
    }
}

/// What the gateway knows of the questions asked about one conversation: the
/// vendor allows only a few, so they are kept and a repeated one is answered from here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuestionLedger {
    /// In the order they were asked.
    pub questions: Vec<Question>,
}

/// The store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the summary store is unavailable: {0}")]
pub struct StoreError(pub String);

/// The answer to [`Fleet::claim_flight`].
#[derive(Debug, Clone)]
pub enum FlightClaim {
    /// The summary is already stored: no vendor call.
    Stored(StoredSummary),
    /// This replica makes the vendor call; it ends with [`Fleet::end_flight`].
    Won,
    /// Another replica is making it; its end is announced with
    /// [`StoreEvent::FlightEnded`], or the claim expires after this long.
    Held(Duration),
}

/// What one replica tells the others through a shared store.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A job ended: its final resource (wakes long-polls everywhere).
    Final { id: String, summary: StoredSummary },
    /// A flight ended (result stored, or the vendor call failed): followers look again.
    FlightEnded { id: String },
    /// A vendor callback for a job: whichever replica polls it polls now.
    Nudge { id: String },
    /// The event stream was interrupted and is back: events may have been
    /// missed, so everyone waiting should look at the store again.
    Resync,
}

/// The verdict of a shared rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Allowed; this many more would be allowed right now.
    Allowed { remaining: u64 },
    /// Refused; allowed again after this long.
    Limited { retry_after: Duration },
}

/// One quota counter of a request ([`Fleet::charge_quota`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCounter {
    /// The counter's name within the caller's, period included (`all:d2026-12-04`).
    pub name: String,
    /// Requests allowed in the period.
    pub limit: u64,
    /// When the period ends (unix ms): the counter is forgotten then.
    pub reset_ms: i64,
}

/// The verdict of a shared quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// Counted against every counter: each one's count now.
    Counted { used: Vec<u64> },
    /// The counter at `index` is spent; nothing was counted.
    Spent { index: usize },
}

/// Receives the events of other replicas.
pub type EventSink = Arc<dyn Fn(StoreEvent) + Send + Sync>;

/// Summaries by id: the cache and every resource the API serves.
#[async_trait]
pub trait SummaryStore: Send + Sync + 'static {
    /// The summary with this id, if present and not expired.
    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError>;

    /// Stores (or replaces) a summary for `ttl`.
    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError>;
}

/// Asynchronous summaries pending at a vendor, and the callers' webhooks on them.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Records a new job with its pending resource (kept for `ttl`). With a
    /// shared store this replica holds the job's lease from then on.
    async fn create_job(&self, job: Job, pending: StoredSummary, ttl: Duration) -> Result<(), StoreError>;

    /// A job still pending.
    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Pending jobs no replica polls: every pending job for the embedded store
    /// (after a restart), those without a live lease for a shared one.
    async fn unclaimed_jobs(&self) -> Result<Vec<Job>, StoreError>;

    /// Adds a caller's webhook to a pending job (once per caller and URL).
    /// `false`: the job is no longer pending — its final summary is in the store.
    async fn add_webhook(&self, id: &str, target: WebhookTarget) -> Result<bool, StoreError>;

    /// Ends a job, all at once: stores its final summary for `ttl`, removes the
    /// job and queues one delivery per webhook (each with a fresh id, due now).
    /// Returns the deliveries queued; none if the job had already ended.
    async fn finish_job(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<Vec<Delivery>, StoreError>;
}

/// The webhook outbox: deliveries kept until a 2xx or given up.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Deliveries due by `now_ms`, at most `limit`; each is leased until
    /// `lease_until_ms` (not handed out again before then, so an attempt that
    /// dies with its process is retried after the lease).
    async fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Puts a delivery back with its new `attempts` and `next_attempt_ms`.
    async fn retry_delivery(&self, delivery: Delivery) -> Result<(), StoreError>;

    /// Removes a delivery (delivered, or given up).
    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError>;

    /// When the earliest delivery is due (ms since the epoch), if any.
    async fn next_delivery_ms(&self) -> Result<Option<u64>, StoreError>;
}

/// What was asked about each conversation ([`QuestionLedger`]).
#[async_trait]
pub trait QuestionLedgers: Send + Sync + 'static {
    /// The question ledger of a conversation at a provider, if the store has one.
    async fn question_ledger(&self, provider: &str, conversation: &str) -> Result<Option<QuestionLedger>, StoreError>;

    /// Adds questions to a conversation's ledger (creating it, even with none):
    /// one with the id of a question already there replaces it, others are
    /// appended. The ledger is kept `ttl` from now.
    async fn merge_questions(
        &self,
        provider: &str,
        conversation: &str,
        questions: Vec<Question>,
        ttl: Duration,
    ) -> Result<(), StoreError>;
}

/// Whether the store works, for `/readyz`, `/metrics` and logs.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// `Some(why)` while the store is failing (readiness reports `degraded`).
    fn degraded(&self) -> Option<String>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How the replicas sharing a store coordinate. Only a shared store has it
/// ([`Stores::fleet`]): a lone replica has nobody to coordinate with.
#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Claims the vendor call for `id` for at most `ttl`, unless the summary
    /// `id` is already stored or another replica has claimed it.
    async fn claim_flight(&self, id: &str, ttl: Duration) -> Result<FlightClaim, StoreError>;

    /// Ends this replica's flight and tells the followers ([`StoreEvent::FlightEnded`]).
    async fn end_flight(&self, id: &str) -> Result<(), StoreError>;

    /// Takes the lease of a pending job for this replica (`job_lease`), unless
    /// another replica holds it. False: held elsewhere, or the job ended.
    async fn acquire_lease(&self, id: &str) -> Result<bool, StoreError>;

    /// Extends this replica's lease of a job. False: the lease is lost (another
    /// replica took the job over, or it ended) and this replica stops polling it.
    async fn renew_lease(&self, id: &str) -> Result<bool, StoreError>;

    /// Gives a job's lease up (shutting down) so another replica takes it at once.
    async fn release_lease(&self, id: &str) -> Result<(), StoreError>;

    /// Tells the replica polling job `id` to poll now ([`StoreEvent::Nudge`]).
    async fn nudge(&self, id: &str) -> Result<(), StoreError>;

    /// Delivers other replicas' events to `sink` until `shutdown` (a background task).
    fn subscribe(&self, sink: EventSink, shutdown: tokio_util::sync::CancellationToken);

    /// Checks and consumes one request of `key`'s fleet-wide limit (GCRA:
    /// `per_second`, `burst`).
    async fn rate_limit(&self, key: &str, per_second: f64, burst: u32) -> Result<RateVerdict, StoreError>;

    /// Counts one request of `caller` against each of `counters`, fleet-wide
    /// and atomically: against all of them, or (one is spent) against none.
    async fn charge_quota(&self, caller: &str, counters: &[QuotaCounter]) -> Result<QuotaVerdict, StoreError>;
}

/// The store, cut along its roles: each consumer takes the parts it uses.
#[derive(Clone)]
pub struct Stores {
    pub summaries: Arc<dyn SummaryStore>,
    pub jobs: Arc<dyn JobStore>,
    pub outbox: Arc<dyn Outbox>,
    pub ledgers: Arc<dyn QuestionLedgers>,
    pub health: Arc<dyn StoreHealth>,
    /// Coordination with the other replicas: only with a shared store.
    pub fleet: Option<Arc<dyn Fleet>>,
    /// State the providers share with the other replicas (a vendor token, its
    /// concurrency slots): only with a shared store.
    pub vendor_state: Option<Arc<dyn SharedState>>,
}

/// What only building the store can check without connecting (the TLS files
/// readable and in PEM): for `check-config`, which must not need the store up.
pub fn check(config: &StoreConfig) -> Result<(), String> {
    if config.is_shared() { RedisStore::check(config) } else { Ok(()) }
}

impl Stores {
    /// The store `config` names: Redis with `store.redis_url` or `store.sentinel`,
    /// else the embedded one.
    /// `replica` is this process's name in leases and flights.
    pub fn from_config(config: &StoreConfig, replica: &str) -> Result<Self, String> {
        if config.is_shared() {
            let redis = Arc::new(RedisStore::new(config, replica)?);
            let mut stores = Self::of(&redis);
            stores.fleet = Some(Arc::clone(&redis) as Arc<dyn Fleet>);
            stores.vendor_state = Some(redis);
            Ok(stores)
        } else {
            Ok(Self::of(&Arc::new(MemoryStore::new(config.max_bytes))))
        }
    }

    /// Every role but the fleet's from one store.
    fn of<S>(store: &Arc<S>) -> Self
    where
        S: SummaryStore + JobStore + Outbox + QuestionLedgers + StoreHealth,
    {
        Self {
            summaries: Arc::clone(store) as Arc<dyn SummaryStore>,
            jobs: Arc::clone(store) as Arc<dyn JobStore>,
            outbox: Arc::clone(store) as Arc<dyn Outbox>,
            ledgers: Arc::clone(store) as Arc<dyn QuestionLedgers>,
            health: Arc::clone(store) as Arc<dyn StoreHealth>,
            fleet: None,
            vendor_state: None,
        }
    }

    /// Whether other replicas share this store.
    pub fn shared(&self) -> bool {
        self.fleet.is_some()
    }
}
