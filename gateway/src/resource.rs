//! The summary resource as the API serves it: built from a vendor's result
//! (or its job, or its failure) and serialized once for the store and every answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use providers::{Completed, Provider, Status, Summary, SummaryError, SummaryRequest};

use crate::error::ApiError;
use crate::store::StoredSummary;

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

/// The resource of a job that failed (at the vendor, or past its deadline).
pub fn failed_resource(
    id: &str,
    provider: &Provider,
    request: &SummaryRequest,
    created: SystemTime,
    error: SummaryError,
    now: SystemTime,
    ttl: Duration,
) -> Summary {
    let mut r = pending_resource(id, provider, request, created);
    r.status = Status::Failed;
    r.updated_at = rfc3339(now);
    r.expires_at = Some(rfc3339(now + ttl));
    r.error = Some(error);
    r
}
