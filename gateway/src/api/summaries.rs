//! `POST /v1/summaries` and `GET /v1/summaries/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use providers::{Conversation, Kind, Provider, Status, SummaryRequest};
use serde::Deserialize;
use url::form_urlencoded;
use utoipa::ToSchema;

use super::json::JsonBody;
use super::{BodyProblems, CallerProblems, VendorProblems};
use crate::error::{ApiError, AuthError, Problem, RequestError};
use crate::live::Live;
use crate::middleware::auth::Caller;
use crate::state::App;
use crate::store::{StoredSummary, WebhookTarget};
use crate::summaries::{CacheStatus, is_summary_id, summary_id};
use crate::webhooks::ssrf::check_webhook_url;

/// Longest `wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// Body of `POST /v1/summaries`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSummary {
    /// A configured provider's name (`GET /v1/providers`); another is 422 `unknown_provider`.
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub provider: String,
    /// `summary` (default), `details`, `action_items`, `coaching`, `topics` or `composition`.
    #[serde(default)]
    #[schema(value_type = Option<Kind>)]
    pub kind: Option<String>,
    /// BCP 47 tag (`en`, `pt-BR`) for vendors that produce summaries in a chosen language.
    #[serde(default)]
    pub language: Option<String>,
    /// `{"text"}` for text-in vendors, `{"id"}` (+ `party`, `extension_id` for Yeastar) otherwise.
    pub conversation: Conversation,
    /// Where to POST the resource when it becomes final (http/https, public addresses).
    #[serde(default)]
    pub callback_url: Option<String>,
}

static HIT: HeaderValue = HeaderValue::from_static("summary-gateway; hit");
static MISS: HeaderValue = HeaderValue::from_static("summary-gateway; fwd=miss");
static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Get or start a summary.
#[utoipa::path(
    post,
    path = "/v1/summaries",
    tag = "summaries",
    request_body = CreateSummary,
    params(("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): hold up to N seconds for a final result. \
        A preference, so never an error: N over 60 is taken as 60 (less if `server.request_timeout` is shorter), \
        anything unreadable is ignored, and `Preference-Applied: wait=M` says how long the gateway held it.")),
    responses(
        (status = 200, description = "A final resource (`completed` or `failed`)", body = providers::Summary,
            headers(("Cache-Status" = String, description = "`summary-gateway; hit` or `summary-gateway; fwd=miss` (RFC 9211)")),
            links(("GetSummary" = (operation_id = "get_summary", parameters(("id" = "$response.body#/id")),
                description = "The same resource, later")))),
        (status = 202, description = "Pending (asynchronous vendors): poll `Location`, or wait for the webhook", body = providers::Summary,
            headers(
                ("Location" = String, description = "`/v1/summaries/{id}`"),
                ("Retry-After" = u64, description = "Seconds before polling again"),
                ("Preference-Applied" = String, description = "`wait=M` when `Prefer: wait` was given (RFC 7240)"),
            ),
            links(("GetSummary" = (operation_id = "get_summary", parameters(("id" = "$response.body#/id")),
                description = "Poll it (`?wait=N` to hold until it is final)")))),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the key may not use this provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown_provider, unsupported_kind, unsupported_language, text_too_short, invalid_callback_url", body = Problem, content_type = "application/problem+json"),
        BodyProblems,
        CallerProblems,
        VendorProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn create_summary(
    State(app): State<Arc<App>>,
    Extension(live): Extension<Arc<Live>>,
    Extension(caller): Extension<Arc<Caller>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateSummary>,
) -> Result<Response, ApiError> {
    let wait = prefer_wait(&headers);
    let provider = live.provider(&body.provider).ok_or_else(|| RequestError::UnknownProvider(body.provider.clone()))?;
    if !caller.may_use(provider.name()) {
        return Err(AuthError::Forbidden { provider: body.provider }.into());
    }
    let kind = match body.kind.as_deref() {
        None => Kind::Summary,
        Some(k) => Kind::parse(k).ok_or_else(|| {
            RequestError::UnsupportedKind(format!(
                "unknown kind `{k}`; kinds are {}",
                Kind::ALL.map(Kind::as_str).join(", ")
            ))
        })?,
    };
    let req = SummaryRequest {
        kind,
        language: provider.language(kind, body.language.as_deref()).map_err(RequestError::from)?,
        conversation: body.conversation,
    };
    provider.validate(&req).map_err(RequestError::from)?;
    let callback = match body.callback_url.as_deref() {
        None => None,
        Some(url) => Some(webhook_target(&app, &caller, url).await?),
    };
    let id = summary_id(provider.name(), &req);
    let charge = |cache| app.quotas.charge(&caller, provider.name(), cache);
    let (stored, cache, quota) = app.summaries.get_or_create(provider, &id, req, callback, charge).await?;
    let applied = wait.map(|wait| bounded_wait(&app, wait));
    let stored = match applied {
        Some(wait) => app.summaries.wait_final(&id, stored, wait).await?,
        None => stored,
    };
    let mut response = summary_response(&stored, cache);
    quota.apply(response.headers_mut());
    // RFC 7240 §3: the preference applied, with its value after the cap.
    if let Some(wait) = applied
        && let Ok(value) = HeaderValue::try_from(format!("wait={}", wait.as_secs()))
    {
        response.headers_mut().insert("preference-applied", value);
    }
    if stored.status == Status::Pending {
        *response.status_mut() = StatusCode::ACCEPTED;
        let location = format!("/v1/summaries/{id}");
        if let Ok(location) = HeaderValue::try_from(location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(provider));
    }
    Ok(response)
}

/// Checks a `callback_url` (SSRF rules) and that deliveries to this caller can be signed.
async fn webhook_target(app: &App, caller: &Caller, url: &str) -> Result<WebhookTarget, ApiError> {
    let checked = check_webhook_url(url, app.config.webhooks.allow_private_networks)
        .await
        .map_err(RequestError::InvalidCallbackUrl)?;
    if !app.webhooks.can_sign_for(&caller.name) {
        return Err(RequestError::InvalidCallbackUrl(format!(
            "the key `{}` has no webhook_secret configured; webhooks are signed with it",
            caller.name
        ))
        .into());
    }
    Ok(WebhookTarget { caller: caller.name.to_string(), url: checked.into() })
}

/// A wait that ends before `server.request_timeout` does, so a long-poll is
/// answered with the current state rather than cut off with a 504.
fn bounded_wait(app: &App, wait: Duration) -> Duration {
    wait.min(app.config.server.request_timeout.saturating_sub(Duration::from_secs(1)))
}

/// Seconds a caller should wait before polling a pending summary: the provider's poll interval.
fn retry_after(provider: &Provider) -> HeaderValue {
    let secs = provider.job_policy().map_or(1, |p| p.poll_interval.as_secs().max(1));
    HeaderValue::from(secs)
}

/// A summary by id.
#[utoipa::path(
    get,
    path = "/v1/summaries/{id}",
    tag = "summaries",
    params(
        ("id" = String, Path, pattern = "^sum_[0-9a-f]{32}$", description = "`sum_` + 32 lowercase hex digits"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
            description = "Hold up to N seconds (0-60; less if `server.request_timeout` is shorter) until the summary is final. \
            A parameter, so checked: outside 0-60 is 400 `invalid_request` (`Prefer: wait` on POST is a preference, capped instead)"),
    ),
    responses(
        (status = 200, description = "The resource (`pending` ones with `Retry-After`)", body = providers::Summary),
        (status = 400, description = "invalid_request: not a summary id, or a `wait` outside 0-60", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the key may not use this summary's provider", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such summary", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "provider_unavailable: the shared store cannot be read (with `Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "provider_timeout: no answer within `server.request_timeout`", body = Problem, content_type = "application/problem+json"),
        CallerProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn get_summary(
    State(app): State<Arc<App>>,
    Extension(live): Extension<Arc<Live>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !is_summary_id(&id) {
        return Err(
            RequestError::Invalid(format!("`{}` is not a summary id (sum_ + 32 hex digits)", truncate(&id))).into()
        );
    }
    let wait = parse_wait(query.as_deref())?;
    let stored = app.summaries.get(&id).await?.ok_or_else(|| RequestError::NotFound(format!("no summary `{id}`")))?;
    if !caller.may_use(&stored.provider) {
        return Err(AuthError::Forbidden { provider: stored.provider.to_string() }.into());
    }
    let stored = match wait {
        Some(secs) => app.summaries.wait_final(&id, stored, bounded_wait(&app, Duration::from_secs(secs))).await?,
        None => stored,
    };
    let mut response = summary_response(&stored, CacheStatus::Hit);
    if stored.status == Status::Pending
        && let Some(provider) = live.provider(&stored.provider)
    {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(provider));
    }
    Ok(response)
}

fn summary_response(stored: &StoredSummary, cache: CacheStatus) -> Response {
    let mut response = Response::new(Body::from(stored.body.clone()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, JSON.clone());
    headers.insert("cache-status", if cache == CacheStatus::Hit { HIT.clone() } else { MISS.clone() });
    response
}

/// How `wait` works, one rule for both forms: the gateway holds a request at
/// most [`MAX_WAIT_SECS`] (and less than `server.request_timeout`).
///
/// - `?wait=N` on `GET /v1/summaries/{id}` is a parameter of the API, declared
///   `minimum: 0, maximum: 60` in the OpenAPI document: a value outside it is
///   400 `invalid_request`, like every parameter outside its documented range
///   (a caller that asked for 120 s learns it will not get them).
/// - `Prefer: wait=N` on `POST /v1/summaries` is a preference (RFC 7240): a
///   server may honour it in part but must not fail a request over it, so N is
///   capped at 60, anything unreadable ignored, and `Preference-Applied:
///   wait=M` tells the caller the hold it got.
///
/// `?wait=N`: 0..=60 seconds.
fn parse_wait(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "wait" {
            return match value.parse::<u64>() {
                Ok(n) if n <= MAX_WAIT_SECS => Ok(Some(n)),
                _ => {
                    Err(RequestError::Invalid(format!("wait: an integer number of seconds from 0 to {MAX_WAIT_SECS}"))
                        .into())
                }
            };
        }
    }
    Ok(None)
}

/// `Prefer: wait=N` (RFC 7240), N capped at 60 however many digits it has;
/// anything unparseable is ignored, as RFC 7240 asks of preferences a server
/// does not understand (see [`parse_wait`] for the rule).
fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            let (name, value) = pref.split(';').next()?.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let digits = value.trim().trim_matches('"');
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Past u64 is still "more than 60".
            Some(digits.parse::<u64>().unwrap_or(u64::MAX))
        })
        .map(|secs| Duration::from_secs(secs.min(MAX_WAIT_SECS)))
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { s.chars().take(40).collect::<String>() + "…" } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefer_wait() {
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("prefer", HeaderValue::from_static(v));
            h
        };
        assert_eq!(prefer_wait(&headers("wait=5")), Some(Duration::from_secs(5)));
        assert_eq!(prefer_wait(&headers("respond-async, wait=10")), Some(Duration::from_secs(10)));
        assert_eq!(prefer_wait(&headers("wait=600")), Some(Duration::from_secs(60)));
        assert_eq!(prefer_wait(&headers("wait=99999999999999999999999")), Some(Duration::from_secs(60)));
        assert_eq!(prefer_wait(&headers("wait=-1")), None);
        assert_eq!(prefer_wait(&headers("return=minimal")), None);
        assert_eq!(prefer_wait(&headers("wait=soon")), None);
        assert_eq!(prefer_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn wait_is_bounded() {
        assert_eq!(parse_wait(Some("wait=5&access_token=REDACTED")).unwrap(), Some(5));
        assert!(parse_wait(Some("wait=61")).is_err());
        assert!(parse_wait(Some("wait=soon")).is_err());
        assert_eq!(parse_wait(None).unwrap(), None);
    }
}
