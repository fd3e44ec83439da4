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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gateway_config::Config;
use providers::{Completed, Provider, Started, Status, Summary, SummaryRequest};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::error::ApiError;
use crate::single_flight::SingleFlight;
use crate::store::{CallbackTarget, FlightClaim, Job, Store, StoreEvent, StoredSummary, unix_ms};
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

/// The summary service shared by all handlers and background tasks.
pub struct Summaries {
    pub(crate) store: Arc<dyn Store>,
    flights: SingleFlight<StoredSummary>,
    pub(crate) summary_ttl: Duration,
    pub(crate) failure_ttl: Duration,
    /// Requests waiting for a pending summary.
    pub waiters: Waiters,
    /// Flights of other replicas this one waits on (shared store): summaries' and questions'.
    pub(crate) flight_ends: Arc<Waiters<()>>,
    /// How long a flight claim lasts: no vendor call outlives a request.
    pub(crate) flight_ttl: Duration,
    /// How long a replica holds a job without renewing its lease (shared store).
    pub(crate) job_lease: Duration,
    /// Jobs this process polls, with the handle that makes it poll at once (vendor callbacks).
    pub(crate) pollers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Wakes the webhook worker when deliveries were queued.
    pub(crate) outbox_wake: Arc<Notify>,
    /// `server.public_url`, for vendor callback URLs.
    public_url: Option<Url>,
    /// Cancelled when the process stops: everything in the background ends.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when pollers must stop (with a shared store, as soon as the
    /// replica stops accepting: its jobs' leases are released for another).
    pub(crate) jobs_stop: CancellationToken,
    /// Cancelled at SIGTERM: long-polls answer with the current state at once.
    pub(crate) waits_end: CancellationToken,
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
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Self {
        let shutdown = CancellationToken::new();
        Self {
            store,
            flights: SingleFlight::default(),
            summary_ttl: config.store.summary_ttl,
            failure_ttl: config.store.failure_ttl,
            waiters: Waiters::default(),
            flight_ends: Arc::default(),
            flight_ttl: config.server.request_timeout + Duration::from_secs(5),
            job_lease: config.store.job_lease,
            pollers: Mutex::new(HashMap::new()),
            outbox_wake: Arc::new(Notify::new()),
            public_url: config.server.public_url.clone(),
            jobs_stop: shutdown.child_token(),
            waits_end: shutdown.child_token(),
            shutdown,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A stored summary by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredSummary>, ApiError> {
        Ok(self.store.get_summary(id).await?)
    }

    /// The summary for this request: from the store, or started at the vendor
    /// once however many identical requests arrive. A pending summary gets the
    /// caller's `callback` added to its job.
    /// `id` is [`summary_id`] of the request.
    pub async fn get_or_create(
        self: &Arc<Self>,
        provider: &Arc<Provider>,
        id: &str,
        req: SummaryRequest,
        callback: Option<CallbackTarget>,
    ) -> Result<(StoredSummary, CacheStatus), ApiError> {
        // A store that fails is bypassed here (the flight decides what can still be served).
        let (stored, cache) = if let Some(hit) = self.store.get_summary(id).await.ok().flatten() {
            cache_lookup(provider, "hit");
            (hit, CacheStatus::Hit)
        } else {
            cache_lookup(provider, "miss");
            (crate::metrics::vendor_wait(self.flight(id, provider, req)).await?, CacheStatus::Miss)
        };
        if stored.status == Status::Pending
            && let Some(target) = callback
            && !self.store.add_callback(id, target).await?
        {
            // The job ended between our read and the registration: the final
            // summary is in the store, and this caller gets it in the response.
            if let Some(now) = self.store.get_summary(id).await? {
                return Ok((now, cache));
            }
        }
        Ok((stored, cache))
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

    /// One vendor start per id in this process; the others join it.
    async fn flight(
        self: &Arc<Self>,
        id: &str,
        provider: &Arc<Provider>,
        req: SummaryRequest,
    ) -> Result<StoredSummary, ApiError> {
        let (this, provider, owned_id) = (Arc::clone(self), Arc::clone(provider), id.to_owned());
        self.flights.run(id, move || async move { this.fleet_flight(&owned_id, &provider, req).await }).await
    }

    /// One vendor start per id in the fleet: claim the flight in the store (which
    /// also answers if another flight stored the summary since our miss), else
    /// wait for the replica that has it and look again.
    async fn fleet_flight(
        self: &Arc<Self>,
        id: &str,
        provider: &Arc<Provider>,
        req: SummaryRequest,
    ) -> Result<StoredSummary, ApiError> {
        loop {
            // Subscribe before claiming, so an end between the two is not missed.
            let mut ended = self.flight_ends.subscribe(id);
            match self.store.claim_flight(id, self.flight_ttl).await {
                Ok(FlightClaim::Stored(hit)) => return Ok(hit),
                Ok(FlightClaim::Won) => {
                    drop(ended);
                    let result = self.start(id, provider, req).await;
                    if let Err(e) = self.store.end_flight(id).await {
                        // Followers wait for the claim to expire instead.
                        tracing::debug!(summary_id = id, error = %e, "could not end a flight in the store");
                    }
                    return result;
                }
                Ok(FlightClaim::Held(left)) => {
                    tracing::debug!(summary_id = id, "another replica is calling the vendor; waiting for it");
                    let _ = tokio::time::timeout(left, ended.published()).await;
                }
                Err(e) if provider.job_policy().is_some() => {
                    // A job could not be kept: refuse before starting one at the vendor.
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::debug!(summary_id = id, error = %e, "store unavailable: calling the vendor without the fleet's single flight");
                    return self.start(id, provider, req).await;
                }
            }
        }
    }

    /// An event from another replica (shared store).
    pub fn on_event(self: &Arc<Self>, event: StoreEvent) {
        match event {
            StoreEvent::Final { id, summary } => {
                self.waiters.publish(&id, &summary);
                self.flight_ends.publish(&id, &());
            }
            StoreEvent::FlightEnded { id } => self.flight_ends.publish(&id, &()),
            StoreEvent::Nudge { id } => {
                self.nudge(&id);
            }
            StoreEvent::Resync => {
                // Events may have been missed: followers claim again, waiters read the store again.
                for id in self.flight_ends.ids() {
                    self.flight_ends.publish(&id, &());
                }
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    for id in this.waiters.ids() {
                        if let Ok(Some(now)) = this.store.get_summary(&id).await
                            && now.status != Status::Pending
                        {
                            this.waiters.publish(&id, &now);
                        }
                    }
                });
            }
        }
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
                    callbacks: Vec::new(),
                };
                self.store.create_job(job.clone(), stored.clone(), policy.job_timeout + PENDING_GRACE).await?;
                tracing::info!(summary_id = id, provider = %name, "job started at the vendor");
                self.spawn_poller(job, Arc::clone(provider));
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

/// A resource serialized once, for the store and every answer.
pub(crate) fn stored(provider: &Arc<str>, resource: &Summary) -> Result<StoredSummary, ApiError> {
    let mut json = serde_json::to_vec(resource).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Kept for hours in the store: do not keep the serializer's spare capacity too.
    json.shrink_to_fit();
    Ok(StoredSummary { provider: Arc::clone(provider), status: resource.status, body: Bytes::from(json) })
}

/// The resource of a job still running at the vendor.
pub fn pending_resource(id: &str, provider: &Provider, req: &SummaryRequest, now: SystemTime) -> Summary {
    Summary {
        id: id.to_owned(),
        status: Status::Pending,
        provider: provider.name().to_owned(),
        provider_type: provider.type_name().to_owned(),
        kind: req.kind,
        language: req.language.clone(),
        conversation: req.conversation.clone(),
        content: None,
        data: None,
        participants: Vec::new(),
        provider_ref: None,
        created_at: rfc3339(now),
        updated_at: rfc3339(now),
        expires_at: None,
        error: None,
    }
}

/// The canonical resource of a completed vendor result.
pub fn completed_resource(
    id: &str,
    provider: &Provider,
    req: &SummaryRequest,
    completed: Completed,
    now: SystemTime,
    ttl: Duration,
) -> Summary {
    let created = completed.created_at.unwrap_or(now);
    let updated = completed.updated_at.unwrap_or(created);
    Summary {
        id: id.to_owned(),
        status: Status::Completed,
        provider: provider.name().to_owned(),
        provider_type: provider.type_name().to_owned(),
        kind: req.kind,
        language: req.language.clone(),
        conversation: req.conversation.clone(),
        content: Some(completed.content),
        data: completed.data,
        participants: completed.participants,
        provider_ref: completed.provider_ref,
        created_at: rfc3339(created),
        updated_at: rfc3339(updated),
        expires_at: Some(rfc3339(now + ttl)),
        error: None,
    }
}

/// RFC 3339 with seconds, UTC (`2026-05-13T14:33:44Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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
