//! `POST /callbacks/{provider}/{token}`: a vendor says a job ended.
//!
//! Open (vendors have no API key); guarded by the provider's unguessable
//! callback token, compared in constant time, and answering 404 to a wrong one
//! as to an unknown provider. The body is never trusted: it only makes the
//! job's poller poll now, and the poll — the vendor's own GET — decides.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use subtle::ConstantTimeEq;
use url::form_urlencoded;

use crate::error::{ApiError, Problem, RequestError};
use crate::middleware::redact::PathCredential;
use crate::state::App;
use crate::summaries::is_summary_id;

/// A vendor's job-ended notification (for vendors that call back, such as CommBox's `callback_url`).
#[utoipa::path(
    post,
    path = "/callbacks/{provider}/{token}",
    tag = "callbacks",
    params(
        ("provider" = String, Path, min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The provider's name"),
        ("token" = String, Path, description = "The provider's callback token (from its config)"),
        ("id" = String, Query, description = "The summary id the gateway put in the callback URL"),
    ),
    request_body(content = Object, description = "The vendor's status body (used only for the vendor job it names, such as CommBox's `action_id`)"),
    responses(
        (status = 204, description = "Noted: the job is polled now (or had already ended)"),
        (status = 400, description = "invalid_request: no summary id, or a job of another vendor action", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: unknown provider or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "request_timeout: the request (head or body) arrived too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large: the body is over `server.max_body_bytes`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn vendor_callback(
    State(app): State<Arc<App>>,
    // The token segment reads `REDACTED` here: the redaction layer moved it into `PathCredential`.
    Path((provider, _redacted)): Path<(String, String)>,
    token: Option<Extension<PathCredential>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let not_found = || RequestError::NotFound("no such callback".into());
    // Outside `/v1`: the live configuration now (a provider a reload removed has no callbacks).
    let live = app.live();
    let provider = live.provider(&provider).ok_or_else(not_found)?;
    let expected = provider.callback_token().ok_or_else(not_found)?;
    let given = token.map(|Extension(PathCredential(t))| t).ok_or_else(not_found)?;
    if !bool::from(expected.expose().as_bytes().ct_eq(given.expose().as_bytes())) {
        tracing::warn!(provider = provider.name(), "vendor callback with a wrong token");
        return Err(not_found().into());
    }
    let id = query
        .as_deref()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "id").map(|(_, v)| v.into_owned()))
        .filter(|id| is_summary_id(id))
        .ok_or_else(|| RequestError::Invalid("the callback URL lacks its summary id (`?id=sum_...`)".into()))?;
    let Some(job) = app.stores.jobs.get_job(&id).await? else {
        // Already ended (polling got there first), or expired: nothing to do.
        return Ok(StatusCode::NO_CONTENT);
    };
    if let Some(job_ref) = provider.callback_job_ref(&body)
        && job_ref != job.vendor_ref
    {
        tracing::warn!(provider = provider.name(), summary_id = %id, "vendor callback for another vendor job than this one's");
        return Err(RequestError::Invalid("the callback names another vendor job than this one's".into()).into());
    }
    let local = app.jobs.nudge(&id);
    if !local
        && let Some(fleet) = &app.stores.fleet
        && let Err(e) = fleet.nudge(&id).await
    {
        // The poll confirms the end anyway, on its schedule.
        tracing::warn!(summary_id = %id, error = %e, "could not pass a vendor callback to the replica polling the job");
    }
    tracing::info!(provider = provider.name(), summary_id = %id, polled_here = local, "vendor callback: job polled now");
    Ok(StatusCode::NO_CONTENT)
}
