//! Getting a summary: the store first, else one vendor call however many
//! identical requests arrive at once (single flight), then the store.
//!
//! The id of a summary is derived from the request (provider, kind, language,
//! conversation), so the same request maps to the same id on any replica and
//! `GET /v1/summaries/{id}` needs no lookup table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use providers::{Completed, Provider, Status, Summary, SummaryRequest};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{Store, StoredSummary};

/// Whether an answer came from the store (`Cache-Status: summary-gateway; hit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

type Flight = Shared<BoxFuture<'static, Result<StoredSummary, ApiError>>>;

/// The summary service shared by all handlers.
pub struct Summaries {
    store: Arc<dyn Store>,
    inflight: Arc<Mutex<HashMap<String, Flight>>>,
    summary_ttl: Duration,
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

/// Whether `s` has the shape of a summary id.
pub fn is_summary_id(s: &str) -> bool {
    s.len() == 36 && s.starts_with("sum_") && s[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Summaries {
    pub fn new(store: Arc<dyn Store>, summary_ttl: Duration) -> Self {
        Self { store, inflight: Arc::new(Mutex::new(HashMap::new())), summary_ttl }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A stored summary by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredSummary>, ApiError> {
        Ok(self.store.get_summary(id).await?)
    }

    /// The summary for this request: from the store, or from the vendor once.
    pub async fn get_or_create(
        &self,
        provider: &Arc<Provider>,
        req: SummaryRequest,
    ) -> Result<(StoredSummary, CacheStatus), ApiError> {
        let id = summary_id(provider.name(), &req);
        if let Some(hit) = self.store.get_summary(&id).await? {
            return Ok((hit, CacheStatus::Hit));
        }
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(flight) = inflight.get(&id) {
                flight.clone()
            } else {
                let flight = self.start_flight(id.clone(), Arc::clone(provider), req);
                inflight.insert(id, flight.clone());
                flight
            }
        };
        flight.await.map(|s| (s, CacheStatus::Miss))
    }

    /// Runs the vendor call in its own task, so a caller that goes away does not
    /// cancel it for the others waiting on the same flight.
    fn start_flight(&self, id: String, provider: Arc<Provider>, req: SummaryRequest) -> Flight {
        let store = Arc::clone(&self.store);
        let inflight = Arc::clone(&self.inflight);
        let ttl = self.summary_ttl;
        let task = tokio::spawn(async move {
            // Another flight may have stored it between our store miss and taking the
            // in-flight lock: look once more before calling the vendor.
            let result = match store.get_summary(&id).await {
                Ok(Some(hit)) => Ok(hit),
                _ => fetch(&*store, &id, &provider, &req, ttl).await,
            };
            inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            result
        });
        async move { task.await.unwrap_or_else(|e| Err(ApiError::Internal(format!("summary task failed: {e}")))) }
            .boxed()
            .shared()
    }
}

async fn fetch(
    store: &dyn Store,
    id: &str,
    provider: &Arc<Provider>,
    req: &SummaryRequest,
    ttl: Duration,
) -> Result<StoredSummary, ApiError> {
    let name: Arc<str> = Arc::from(provider.name());
    let completed = provider.summarize(req).await.map_err(|e| ApiError::provider(&name, e))?;
    let resource = completed_resource(id, provider, req, completed, SystemTime::now(), ttl);
    let mut json = serde_json::to_vec(&resource).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Kept for hours in the store: do not keep the serializer's spare capacity too.
    json.shrink_to_fit();
    let body = Bytes::from(json);
    let stored = StoredSummary { provider: name, status: Status::Completed, body };
    if let Err(e) = store.put_summary(id, stored.clone(), ttl).await {
        // The caller still gets the summary; only the cache is lost.
        tracing::warn!(error = %e, summary_id = id, "could not store a completed summary");
    }
    Ok(stored)
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
