//! Getting a summary: the store first, else one vendor call however many
//! identical requests arrive at once (single flight), then the store.
//!
//! With a shared store the single flight spans the fleet: in each replica one
//! task claims the id's flight in the store; the winner calls the vendor, the
//! others wait for its end ([`StoreEvent::FlightEnded`], published through the
//! store) and then read the store. While the store is down, summaries that need
//! no job are still served (cache bypassed, one vendor call per replica);
//! asynchronous ones are refused with 503, since their job could not be kept.
//!
//! The id of a summary is derived from the request (provider, kind, language,
//! conversation), so the same request maps to the same id on any replica and
//! `GET /v1/summaries/{id}` needs no lookup table.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway_config::Config;
use providers::time::unix_ms;
use providers::{Provider, Started, Status, SummaryRequest};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::resource::{completed_resource, pending_resource, stored};
use crate::single_flight::{FlightWork, Flights};
use crate::store::{Job, StoreError, StoredSummary, Stores, SummaryStore, WebhookTarget};
use crate::waiters::Waiters;

/// Whether an answer came from the store (`Cache-Status: summary-gateway; hit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// How long a pending resource outlives its job's deadline in the store, so a
/// job whose poller vanished is eventually forgotten rather than pending forever.
const PENDING_GRACE: Duration = Duration::from_secs(10 * 60);

/// The summary service shared by all handlers.
pub struct Summaries {
    store: Arc<dyn SummaryStore>,
    /// Where asynchronous summaries go on.
    jobs: Arc<Jobs>,
    flights: Flights<StoredSummary>,
    /// Whether a flight reads the store before it calls the vendor (without a
    /// fleet; with one, the flight's claim reads it).
    flight_looks: bool,
    summary_ttl: Duration,
    /// Requests waiting for a pending summary (woken by the job's end, here or
    /// on another replica).
    pub waiters: Arc<Waiters>,
    /// `server.public_url`, for vendor callback URLs.
    public_url: Option<Url>,
    /// Cancelled at SIGTERM: long-polls answer with the current state at once.
    waits_end: CancellationToken,
}

/// `sum_` + 32 hex digits of SHA-256 over the request's identity. Each field is
/// fed with a tag and its length, so no two different requests hash the same input.
pub fn summary_id(provider: &str, req: &SummaryRequest) -> String {
    fn field(h: &mut Sha256, tag: u8, value: Option<&[u8]>) {
        if let Some(v) = value {
            h.update([tag]);
            h.update((v.len() as u64).to_le_bytes());
            h.update(v);
        }
    }
    let c = &req.conversation;
    let mut h = Sha256::new();
    h.update(b"summary-gateway/v1");
    field(&mut h, b'p', Some(provider.as_bytes()));
    field(&mut h, b'k', Some(req.kind.as_str().as_bytes()));
    field(&mut h, b'l', req.language.as_deref().map(str::as_bytes));
    field(&mut h, b'i', c.id.as_deref().map(str::as_bytes));
    field(&mut h, b't', c.text.as_deref().map(str::as_bytes));
    field(&mut h, b'r', c.party.map(|p| p.as_str().as_bytes()));
    field(&mut h, b'e', c.extension_id.map(u64::to_le_bytes).as_ref().map(<[u8; 8]>::as_slice));
    let digest = h.finalize();
    let mut id = String::with_capacity(36);
    id.push_str("sum_");
    id.push_str(&hex::encode(&digest[..16]));
    id
}

/// Counts a summary request answered from the store (`hit`) or sent on (`miss`).
fn cache_lookup(provider: &Provider, result: &'static str) {
    let name = metrics::SharedString::from(Arc::clone(provider.name_arc()));
    metrics::counter!(crate::metrics::CACHE_LOOKUPS, "provider" => name, "result" => result).increment(1);
}

/// Whether `s` has the shape of a summary id.
pub fn is_summary_id(s: &str) -> bool {
    s.len() == 36 && s.starts_with("sum_") && s[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Summaries {
    /// `flight_ends`: the ends of other replicas' flights (fed by the store's
    /// events); `waits_end`: cancelled when long-polls must answer at once.
    pub fn new(
        stores: &Stores,
        jobs: Arc<Jobs>,
        waiters: Arc<Waiters>,
        flight_ends: Arc<Waiters<()>>,
        waits_end: CancellationToken,
        config: &Config,
    ) -> Self {
        Self {
            store: Arc::clone(&stores.summaries),
            jobs,
            flights: Flights::new(stores.fleet.clone(), flight_ends, flight_ttl(config)),
            flight_looks: stores.fleet.is_none(),
            summary_ttl: config.store.summary_ttl,
            waiters,
            public_url: config.server.public_url.clone(),
            waits_end,
        }
    }

    /// A stored summary by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredSummary>, ApiError> {
        Ok(self.store.get_summary(id).await?)
    }

    /// The summary for this request: from the store, or started at the vendor
    /// once however many identical requests arrive. A pending summary gets the
    /// caller's `callback` added to its job.
    /// `id` is [`summary_id`] of the request. `admit` is asked once the store
    /// has answered, before any vendor call (the caller's quota); its refusal is
    /// the answer, its value is returned with the summary.
    pub async fn get_or_create<A, F, T>(
        self: &Arc<Self>,
        provider: &Arc<Provider>,
        id: &str,
        req: SummaryRequest,
        callback: Option<WebhookTarget>,
        admit: A,
    ) -> Result<(StoredSummary, CacheStatus, T), ApiError>
    where
        A: FnOnce(CacheStatus) -> F,
        F: Future<Output = Result<T, ApiError>>,
    {
        // A store that fails is bypassed here (the flight decides what can still be served).
        let (stored, cache, admitted) = if let Some(hit) = self.store.get_summary(id).await.ok().flatten() {
            cache_lookup(provider, "hit");
            let admitted = admit(CacheStatus::Hit).await?;
            (hit, CacheStatus::Hit, admitted)
        } else {
            cache_lookup(provider, "miss");
            let admitted = admit(CacheStatus::Miss).await?;
            (crate::metrics::vendor_wait(self.flight(id, provider, req)).await?, CacheStatus::Miss, admitted)
        };
        if stored.status == Status::Pending
            && let Some(target) = callback
            && !self.jobs.add_webhook(id, target).await?
        {
            // The job ended between our read and the registration: the final
            // summary is in the store, and this caller gets it in the response.
            if let Some(now) = self.store.get_summary(id).await? {
                return Ok((now, cache, admitted));
            }
        }
        Ok((stored, cache, admitted))
    }

    /// Holds a pending summary until it is final, `wait` passes or the gateway
    /// shuts down; then answers with the summary as it is.
    pub async fn wait_final(&self, id: &str, stored: StoredSummary, wait: Duration) -> Result<StoredSummary, ApiError> {
        if stored.status != Status::Pending || wait.is_zero() {
            return Ok(stored);
        }
        let mut subscription = self.waiters.subscribe(id);
        // Read again after subscribing: it may have ended in between.
        let current = self.store.get_summary(id).await.ok().flatten().unwrap_or(stored);
        if current.status != Status::Pending {
            return Ok(current);
        }
        let waited = crate::metrics::vendor_wait(async {
            tokio::select! {
                published = tokio::time::timeout(wait, subscription.published()) => published.ok().flatten(),
                () = self.waits_end.cancelled() => None,
            }
        });
        if let Some(done) = waited.await {
            return Ok(done);
        }
        drop(subscription);
        Ok(self.store.get_summary(id).await.ok().flatten().unwrap_or(current))
    }

    /// One vendor start per id in the fleet; the others join it.
    async fn flight(
        self: &Arc<Self>,
        id: &str,
        provider: &Arc<Provider>,
        req: SummaryRequest,
    ) -> Result<StoredSummary, ApiError> {
        let work =
            SummaryFlight { summaries: Arc::clone(self), provider: Arc::clone(provider), id: id.to_owned(), req };
        self.flights.run(id, work).await
    }

    /// Starts the summary at the vendor: stores a synchronous result, or records
    /// the vendor's job with its pending resource and starts polling it.
    async fn start(
        self: &Arc<Self>,
        id: &str,
        provider: &Arc<Provider>,
        req: SummaryRequest,
    ) -> Result<StoredSummary, ApiError> {
        let name: Arc<str> = Arc::from(provider.name());
        let callback = self.vendor_callback_url(provider, id);
        let started = provider.start(&req, callback.as_ref()).await.map_err(|e| ApiError::provider(&name, e))?;
        let now = SystemTime::now();
        match started {
            Started::Done(completed) => {
                let resource = completed_resource(id, provider, &req, completed, now, self.summary_ttl);
                let stored = stored(&name, &resource)?;
                if let Err(e) = self.store.put_summary(id, stored.clone(), self.summary_ttl).await {
                    // The caller still gets the summary; only the cache is lost. (The
                    // store logs its outage once; this would repeat it per request.)
                    tracing::debug!(error = %e, summary_id = id, "could not store a completed summary");
                }
                Ok(stored)
            }
            Started::Job(vendor_ref) => {
                let policy = provider.job_policy().ok_or_else(|| {
                    ApiError::Internal(format!("provider `{name}` answered with a job but has no job policy"))
                })?;
                let resource = pending_resource(id, provider, &req, now);
                let stored = stored(&name, &resource)?;
                let job = Job {
                    id: id.to_owned(),
                    provider: name.to_string(),
                    request: req,
                    vendor_ref,
                    created_at_ms: unix_ms(now),
                    deadline_ms: unix_ms(now + policy.job_timeout),
                    webhooks: Vec::new(),
                };
                self.jobs.start(job, stored.clone(), policy.job_timeout + PENDING_GRACE, provider).await?;
                Ok(stored)
            }
        }
    }

    /// `{public_url}/callbacks/{provider}/{token}?id={summary id}` for vendors that
    /// call back, when the gateway is reachable and the provider has a token.
    fn vendor_callback_url(&self, provider: &Provider, id: &str) -> Option<Url> {
        let base = self.public_url.as_ref()?;
        let token = provider.callback_token()?;
        let mut url = base.clone();
        url.path_segments_mut().ok()?.pop_if_empty().extend(["callbacks", provider.name(), token.expose()]);
        url.query_pairs_mut().append_pair("id", id);
        Some(url)
    }
}

/// How long a flight claim lasts: no vendor call outlives a request.
pub fn flight_ttl(config: &Config) -> Duration {
    config.server.request_timeout + Duration::from_secs(5)
}

/// A summary's vendor start, run once for the fleet.
struct SummaryFlight {
    summaries: Arc<Summaries>,
    provider: Arc<Provider>,
    id: String,
    req: SummaryRequest,
}

impl FlightWork for SummaryFlight {
    type Output = StoredSummary;

    async fn look(&self) -> Result<Option<StoredSummary>, ApiError> {
        // Another flight may have stored it since our miss. (With a fleet the
        // claim reads it, in the same round trip.) A failing store is bypassed.
        if !self.summaries.flight_looks {
            return Ok(None);
        }
        Ok(self.summaries.store.get_summary(&self.id).await.ok().flatten())
    }

    fn stored(&self, summary: StoredSummary) -> Option<StoredSummary> {
        Some(summary)
    }

    async fn run(self) -> Result<StoredSummary, ApiError> {
        self.summaries.start(&self.id, &self.provider, self.req).await
    }

    fn without_fleet(&self, error: StoreError) -> Result<(), ApiError> {
        if self.provider.job_policy().is_some() {
            // A job could not be kept: refuse before starting one at the vendor.
            return Err(error.into());
        }
        tracing::debug!(summary_id = %self.id, error = %error, "store unavailable: calling the vendor without the fleet's single flight");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use providers::{Conversation, Kind, Party};

    use super::*;

    fn req(ext: u64) -> SummaryRequest {
        SummaryRequest {
            kind: Kind::Summary,
            language: None,
            conversation: Conversation {
                id: Some("20260513223234-3EE9E".into()),
                party: Some(Party::Callee),
                extension_id: Some(ext),
                ..Conversation::default()
            },
        }
    }

    #[test]
    fn ids_are_stable_and_distinguish_requests() {
        let a = summary_id("pbx", &req(3202));
        assert!(is_summary_id(&a), "{a}");
        assert_eq!(a, summary_id("pbx", &req(3202)));
        assert_ne!(a, summary_id("pbx", &req(3203)));
        assert_ne!(a, summary_id("pbx2", &req(3202)));
        assert!(!is_summary_id("sum_XYZ"));
    }
}
