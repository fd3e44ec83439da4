//! Every error the gateway answers with, as typed errors, turned into RFC 9457
//! problem+json only at the edge.
//!
//! [`ApiError::into_response`] does not write the body: it puts a [`Problem`]
//! (without `request_id`) into the response's extensions, and the `problem`
//! middleware — which knows the request id — writes the body and logs server
//! errors. Responses that never went through an `ApiError` (unknown routes,
//! 405, the body limit, the request timeout) are turned into problems there too,
//! so every error response is problem+json.
//!
//! - [`auth`]: 401/403. - [`request`]: 400/404/405/413/415/422.
//! - provider failures come from [`providers::ProviderError`].

pub mod auth;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use providers::ProviderError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use self::auth::AuthError;
pub use self::request::RequestError;
use crate::store::StoreError;

/// Any error of the API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A vendor failure, already classified.
    #[error("{source}")]
    Provider { provider: Arc<str>, source: Box<ProviderError> },
    /// 429 `rate_limited`.
    #[error("this API key is over its rate limit")]
    RateLimited { retry_after: Duration },
    /// 429 `quota_exceeded`: the caller's daily or monthly quota is spent.
    #[error("{0}")]
    QuotaExceeded(Box<crate::quota::Exceeded>),
    /// 503 `provider_unavailable`: the store is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 503 `not_ready`: draining or the store is unreachable (`/readyz`).
    #[error("{0}")]
    NotReady(String),
    /// 504 `provider_timeout`: the request outlived `server.request_timeout`.
    #[error("the request took longer than the gateway allows")]
    RequestTimeout,
    /// 500 `internal`: a bug. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn provider(provider: &Arc<str>, source: ProviderError) -> Self {
        Self::Provider { provider: Arc::clone(provider), source: Box::new(source) }
    }

    pub const fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Unknown | AuthError::Expired) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            Self::Request(r) => match r {
                RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
                RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                RequestError::UnknownProvider(_)
                | RequestError::UnsupportedKind(_)
                | RequestError::TextTooShort(_)
                | RequestError::UnsupportedLanguage(_)
                | RequestError::QuestionTooLong(_)
                | RequestError::InvalidCallbackUrl(_) => StatusCode::UNPROCESSABLE_ENTITY,
                RequestError::QuestionLimitReached(_) => StatusCode::CONFLICT,
                RequestError::NotFound(_) => StatusCode::NOT_FOUND,
                RequestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                RequestError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
                RequestError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
                RequestError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            },
            Self::Provider { source, .. } => match **source {
                ProviderError::NotFound { .. } => StatusCode::NOT_FOUND,
                ProviderError::NotReady { .. } => StatusCode::CONFLICT,
                ProviderError::Rejected { .. } => StatusCode::BAD_GATEWAY,
                ProviderError::Unavailable { .. }
                | ProviderError::CircuitOpen { .. }
                | ProviderError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ProviderError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            },
            Self::RateLimited { .. } | Self::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (API.md's error table).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Unknown | AuthError::Expired) => "unauthorized",
            Self::Auth(AuthError::Forbidden { .. }) => "forbidden",
            Self::Request(r) => match r {
                RequestError::Invalid(_) => "invalid_request",
                RequestError::UnsupportedMediaType => "unsupported_media_type",
                RequestError::PayloadTooLarge { .. } => "payload_too_large",
                RequestError::UnknownProvider(_) => "unknown_provider",
                RequestError::UnsupportedKind(_) => "unsupported_kind",
                RequestError::TextTooShort(_) => "text_too_short",
                RequestError::UnsupportedLanguage(_) => "unsupported_language",
                RequestError::QuestionTooLong(_) => "question_too_long",
                RequestError::QuestionLimitReached(_) => "question_limit_reached",
                RequestError::InvalidCallbackUrl(_) => "invalid_callback_url",
                RequestError::NotFound(_) => "not_found",
                RequestError::MethodNotAllowed => "method_not_allowed",
                RequestError::TooSlow { .. } => "request_timeout",
                RequestError::UriTooLong { .. } => "uri_too_long",
                RequestError::HeadersTooLarge { .. } => "headers_too_large",
            },
            Self::Provider { source, .. } => match **source {
                ProviderError::NotFound { .. } => "not_found",
                ProviderError::NotReady { .. } => "conversation_not_ready",
                ProviderError::Rejected { .. } => "provider_error",
                ProviderError::Unavailable { .. } | ProviderError::CircuitOpen { .. } => "provider_unavailable",
                ProviderError::Overloaded { .. } => "overloaded",
                ProviderError::Timeout { .. } => "provider_timeout",
            },
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::Store(_) => "provider_unavailable",
            Self::NotReady(_) => "not_ready",
            Self::RequestTimeout => "provider_timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// Seconds a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::QuotaExceeded(exceeded) => Some(exceeded.retry_after),
            Self::Provider { source, .. } => match **source {
                ProviderError::NotReady { retry_after, .. }
                | ProviderError::Unavailable { retry_after, .. }
                | ProviderError::CircuitOpen { retry_after }
                | ProviderError::Overloaded { retry_after } => Some(retry_after),
                _ => None,
            },
            Self::Store(_) | Self::NotReady(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// The problem document of this error (without `request_id`, which the edge adds).
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let code = self.code();
        let detail = match self {
            // Never leak internals; the middleware logs them.
            Self::Internal(_) => "the gateway failed to handle this request; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let mut problem = Problem::new(status, code, detail);
        if let Self::Provider { provider, source } = self {
            problem.provider = Some(provider.to_string());
            if let Some(vendor) = source.vendor() {
                problem.provider_status = vendor.status;
                problem.provider_code.clone_from(&vendor.code);
                problem.provider_message.clone_from(&vendor.message);
            }
        }
        if let Self::Internal(cause) = self {
            problem.internal_cause = Some(cause.clone());
        }
        // The breaker logs when it opens and closes; a line per refused request is noise.
        problem.expected =
            matches!(self, Self::Provider { source, .. } if matches!(**source, ProviderError::CircuitOpen { .. }));
        problem
    }
}

/// RFC 9457 problem details, as every error response carries them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:summary-gateway:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code (`text_too_short`, `rate_limited`, ...).
    pub code: String,
    /// Equals the `x-request-id` response header.
    pub request_id: String,
    /// The provider involved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The vendor's HTTP status, if a vendor answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    /// The vendor's own error code, if it gave one, as it sent it: a string or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub provider_code: Option<Value>,
    /// The vendor's own short message, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message: Option<String>,
    /// Logged by the edge, never serialized.
    #[serde(skip)]
    #[schema(ignore)]
    pub internal_cause: Option<String>,
    /// A 5xx that is logged elsewhere once rather than per request (an open
    /// circuit breaker): the edge logs it at debug. Never serialized.
    #[serde(skip)]
    #[schema(ignore)]
    pub expected: bool,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: String) -> Self {
        Self {
            type_uri: format!("urn:summary-gateway:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            request_id: String::new(),
            provider: None,
            provider_status: None,
            provider_code: None,
            provider_message: None,
            internal_cause: None,
            expected: false,
        }
    }
}

/// `application/problem+json`.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        match &self {
            Self::Auth(AuthError::Missing) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"summary-gateway\""));
            }
            Self::Auth(AuthError::Unknown) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"summary-gateway\", error=\"invalid_token\""),
                );
            }
            // RFC 6750 §3.1's own example for an expired token.
            Self::Auth(AuthError::Expired) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"summary-gateway\", error=\"invalid_token\", error_description=\"The access token expired\"",
                    ),
                );
            }
            Self::QuotaExceeded(exceeded) => exceeded.apply(headers),
            _ => {}
        }
        response.extensions_mut().insert(Arc::new(self.to_problem()));
        response
    }
}

#[cfg(test)]
mod tests {
    use providers::VendorDetail;

    use super::*;

    /// API.md's error table, row by row.
    #[test]
    fn every_row_of_the_error_table_has_a_typed_error() {
        let vendor = VendorDetail::default;
        let provider = |source| ApiError::provider(&Arc::from("p"), source);
        let s = |m: &str| m.to_owned();
        let d = Duration::from_secs(1);
        let table: Vec<(ApiError, u16, &str)> = vec![
            (RequestError::Invalid(s("x")).into(), 400, "invalid_request"),
            (AuthError::Missing.into(), 401, "unauthorized"),
            (AuthError::Unknown.into(), 401, "unauthorized"),
            (AuthError::Forbidden { provider: s("p") }.into(), 403, "forbidden"),
            (RequestError::TooSlow { after: d }.into(), 408, "request_timeout"),
            (RequestError::NotFound(s("x")).into(), 404, "not_found"),
            (provider(ProviderError::NotFound { message: s("x"), vendor: vendor() }), 404, "not_found"),
            (
                provider(ProviderError::NotReady { message: s("x"), retry_after: d, vendor: vendor() }),
                409,
                "conversation_not_ready",
            ),
            (RequestError::QuestionLimitReached(s("x")).into(), 409, "question_limit_reached"),
            (RequestError::PayloadTooLarge { limit: 1 }.into(), 413, "payload_too_large"),
            (RequestError::UnsupportedMediaType.into(), 415, "unsupported_media_type"),
            (RequestError::TextTooShort(s("x")).into(), 422, "text_too_short"),
            (RequestError::QuestionTooLong(s("x")).into(), 422, "question_too_long"),
            // Not in API.md's table (an addition): a valid tag the vendor cannot write in.
            (RequestError::UnsupportedLanguage(s("x")).into(), 422, "unsupported_language"),
            (RequestError::UnsupportedKind(s("x")).into(), 422, "unsupported_kind"),
            (RequestError::UnknownProvider(s("x")).into(), 422, "unknown_provider"),
            // Additions: heads over the gateway's limits.
            (RequestError::UriTooLong { limit: 1 }.into(), 414, "uri_too_long"),
            (RequestError::HeadersTooLarge { limit: 1 }.into(), 431, "headers_too_large"),
            (RequestError::InvalidCallbackUrl(s("x")).into(), 422, "invalid_callback_url"),
            (ApiError::RateLimited { retry_after: d }, 429, "rate_limited"),
            (crate::quota::tests::exceeded(), 429, "quota_exceeded"),
            (provider(ProviderError::Rejected { message: s("x"), vendor: vendor() }), 502, "provider_error"),
            (
                provider(ProviderError::Unavailable { message: s("x"), retry_after: d, vendor: vendor() }),
                503,
                "provider_unavailable",
            ),
            (provider(ProviderError::CircuitOpen { retry_after: d }), 503, "provider_unavailable"),
            (provider(ProviderError::Overloaded { retry_after: d }), 503, "overloaded"),
            (provider(ProviderError::Timeout { after: d }), 504, "provider_timeout"),
        ];
        for (error, status, code) in table {
            assert_eq!((error.status().as_u16(), error.code()), (status, code), "{error:?}");
            let needs_retry_after = matches!(
                code,
                "conversation_not_ready" | "rate_limited" | "quota_exceeded" | "provider_unavailable" | "overloaded"
            );
            assert_eq!(error.retry_after().is_some(), needs_retry_after, "Retry-After of {code}");
            let problem = error.to_problem();
            assert_eq!((problem.status, problem.code.as_str()), (status, code));
        }
    }
}
