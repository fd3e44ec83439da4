//! `POST /v1/summaries` and `GET /v1/summaries/{id}`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use providers::{Conversation, Kind, SummaryRequest};
use serde::Deserialize;
use url::form_urlencoded;
use utoipa::ToSchema;

use super::json::JsonBody;
use super::{CallerProblems, VendorProblems};
use crate::app::App;
use crate::callback::check_callback_url;
use crate::error::{ApiError, AuthError, Problem, RequestError};
use crate::middleware::auth::Caller;
use crate::store::StoredSummary;
use crate::summaries::{CacheStatus, is_summary_id};

/// Longest `wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// Body of `POST /v1/summaries`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSummary {
    /// A configured provider's name (`GET /v1/providers`).
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
    params(("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): hold up to N seconds (≤ 60) for a final result")),
    responses(
        (status = 200, description = "A final resource (`completed` or `failed`)", body = providers::Summary,
            headers(("Cache-Status" = String, description = "`summary-gateway; hit` or `summary-gateway; fwd=miss` (RFC 9211)"))),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the key may not use this provider", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown_provider, unsupported_kind, text_too_short, invalid_callback_url", body = Problem, content_type = "application/problem+json"),
        CallerProblems,
        VendorProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn create_summary(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Arc<Caller>>,
    JsonBody(body): JsonBody<CreateSummary>,
) -> Result<Response, ApiError> {
    let provider = app.provider(&body.provider).ok_or_else(|| RequestError::UnknownProvider(body.provider.clone()))?;
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
    let language = match body.language.as_deref() {
        None => None,
        Some(tag) => Some(
            canonical_language(tag)
                .ok_or_else(|| RequestError::Invalid(format!("language: `{tag}` is not a BCP 47 language tag")))?,
        ),
    };
    let req = SummaryRequest {
        kind,
        // A vendor that cannot choose the language ignores it, and so does the summary's identity.
        language: if provider.honours_language() { language } else { None },
        conversation: body.conversation,
    };
    provider.validate(&req).map_err(RequestError::from)?;
    if let Some(url) = body.callback_url.as_deref() {
        check_callback_url(url, app.config.webhooks.allow_private_networks)
            .await
            .map_err(RequestError::InvalidCallbackUrl)?;
    }
    let (stored, cache) = app.summaries.get_or_create(provider, req).await?;
    Ok(summary_response(&stored, cache))
}

/// A summary by id.
#[utoipa::path(
    get,
    path = "/v1/summaries/{id}",
    tag = "summaries",
    params(
        ("id" = String, Path, description = "`sum_` + 32 hex digits"),
        ("wait" = Option<u64>, Query, description = "Hold up to N seconds (≤ 60) until the summary is final"),
    ),
    responses(
        (status = 200, description = "The resource", body = providers::Summary),
        (status = 400, description = "invalid_request: not a summary id, or a bad `wait`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the key may not use this summary's provider", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such summary", body = Problem, content_type = "application/problem+json"),
        CallerProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn get_summary(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !is_summary_id(&id) {
        return Err(
            RequestError::Invalid(format!("`{}` is not a summary id (sum_ + 32 hex digits)", truncate(&id))).into()
        );
    }
    // Every summary is final as soon as it exists (Yeastar is synchronous), so a
    // valid `wait` never has to hold the request.
    parse_wait(query.as_deref())?;
    let stored = app.summaries.get(&id).await?.ok_or_else(|| RequestError::NotFound(format!("no summary `{id}`")))?;
    if !caller.may_use(&stored.provider) {
        return Err(AuthError::Forbidden { provider: stored.provider.to_string() }.into());
    }
    Ok(summary_response(&stored, CacheStatus::Hit))
}

fn summary_response(stored: &StoredSummary, cache: CacheStatus) -> Response {
    let mut response = Response::new(Body::from(stored.body.clone()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, JSON.clone());
    headers.insert("cache-status", if cache == CacheStatus::Hit { HIT.clone() } else { MISS.clone() });
    response
}

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

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { s.chars().take(40).collect::<String>() + "…" } else { s.to_owned() }
}

/// A BCP 47 tag in canonical case (`pt-br` → `pt-BR`, `zh-hant` → `zh-Hant`), or
/// None if it is not one.
pub fn canonical_language(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > 35 {
        return None;
    }
    let mut out = String::with_capacity(tag.len());
    for (i, sub) in tag.split('-').enumerate() {
        if sub.is_empty() || sub.len() > 8 || !sub.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        if i == 0 {
            if sub.len() < 2 || !sub.bytes().all(|b| b.is_ascii_alphabetic()) {
                return None;
            }
            out.push_str(&sub.to_ascii_lowercase());
            continue;
        }
        out.push('-');
        let alpha = sub.bytes().all(|b| b.is_ascii_alphabetic());
        match sub.len() {
            2 if alpha => out.push_str(&sub.to_ascii_uppercase()),
            4 if alpha => {
                out.push_str(&sub[..1].to_ascii_uppercase());
                out.push_str(&sub[1..].to_ascii_lowercase());
            }
            _ => out.push_str(&sub.to_ascii_lowercase()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_language_tags() {
        assert_eq!(canonical_language("pt-br").as_deref(), Some("pt-BR"));
        assert_eq!(canonical_language("EN").as_deref(), Some("en"));
        assert_eq!(canonical_language("zh-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(canonical_language("es-419").as_deref(), Some("es-419"));
        for bad in ["", "e", "en_US", "en-", "1a", "english!", "en-toolongsubtag"] {
            assert_eq!(canonical_language(bad), None, "{bad}");
        }
    }

    #[test]
    fn wait_is_bounded() {
        assert_eq!(parse_wait(Some("wait=5&access_token=REDACTED")).unwrap(), Some(5));
        assert!(parse_wait(Some("wait=61")).is_err());
        assert!(parse_wait(Some("wait=soon")).is_err());
        assert_eq!(parse_wait(None).unwrap(), None);
    }
}
