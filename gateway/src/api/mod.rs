//! The HTTP API: routes and their OpenAPI description, registered together
//! (utoipa-axum) so the document cannot drift from the router.
//!
//! - [`summaries`]: `POST /v1/summaries`, `GET /v1/summaries/{id}`.
//! - [`questions`]: `POST /v1/questions`, `GET /v1/questions`.
//! - [`providers`]: `GET /v1/providers`.
//! - [`callbacks`]: `POST /callbacks/{provider}/{token}` (vendors calling back; open, token-guarded).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`json`]: the JSON body extractor (415/413/400).
//!
//! Provider names are documented with `pattern: ^[a-z0-9][a-z0-9_-]{0,62}$`,
//! what `gateway-config` accepts (1-63 characters of a-z, 0-9, `-` and `_`,
//! starting with a letter or digit); the attributes take literals, so it is
//! written at each use and tests/e2e/openapi.rs checks they agree.
//! - `/openapi.json`: the document itself.

pub mod callbacks;
pub mod health;
pub mod json;
pub mod providers;
pub mod questions;
pub mod summaries;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Problem;
use crate::state::App;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "summary-gateway",
        description = "One endpoint and one schema for the conversation-summary APIs of several vendors. \
                       Errors are RFC 9457 problem+json with a stable `code`."
    ),
    modifiers(&Security),
    components(schemas(crate::error::Problem))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("access_token"))),
        );
    }
}

/// Problems every authenticated route can answer (documentation only: the
/// errors themselves are `ApiError`s).
#[derive(utoipa::IntoResponses)]
pub enum CallerProblems {
    /// unauthorized: no key or an unknown one (with `WWW-Authenticate: Bearer`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// rate_limited: the key is over its rate limit (with `Retry-After` and `RateLimit-*`);
    /// quota_exceeded: the key has used its daily or monthly quota (with `Retry-After`
    /// until the reset, `RateLimit-Policy` and `RateLimit`).
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
}

/// Problems of reading a JSON request body.
#[derive(utoipa::IntoResponses)]
pub enum BodyProblems {
    /// request_timeout: the request (head or body) arrived too slowly.
    #[response(status = 408, content_type = "application/problem+json")]
    RequestTimeout(Problem),
    /// payload_too_large: the body is over `server.max_body_bytes`.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// unsupported_media_type: the body is not JSON (`Content-Type: application/json`).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
}

/// Problems of a request that reaches a vendor.
#[derive(utoipa::IntoResponses)]
pub enum VendorProblems {
    /// not_found: the vendor has no such conversation or summary.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// conversation_not_ready: the vendor is still processing (with `Retry-After`).
    #[response(status = 409, content_type = "application/problem+json")]
    NotReady(Problem),
    /// provider_error: the vendor answered with an error or something unparseable.
    #[response(status = 502, content_type = "application/problem+json")]
    ProviderError(Problem),
    /// provider_unavailable or overloaded (with `Retry-After`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// provider_timeout: the vendor did not answer in time.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
}

/// The open routes and the authenticated `/v1` routes (the latter wrapped in
/// `authenticated`, i.e. auth + rate limit), with the OpenAPI document of both.
pub fn routes<F>(authenticated: F) -> (Router<Arc<App>>, utoipa::openapi::OpenApi)
where
    F: FnOnce(OpenApiRouter<Arc<App>>) -> OpenApiRouter<Arc<App>>,
{
    let v1 = OpenApiRouter::new()
        .routes(routes!(summaries::create_summary))
        .routes(routes!(summaries::get_summary))
        .routes(routes!(questions::ask_question, questions::list_questions))
        .routes(routes!(providers::list_providers));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(callbacks::vendor_callback))
        .merge(authenticated(v1))
        .split_for_parts()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi_json(State(app): State<Arc<App>>) -> Response {
    let mut response = app.openapi.get().cloned().unwrap_or_default().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
