//! The router with its middleware stack — assembled here, in one place, in
//! the order requests pass through it. The state it serves is [`crate::state::App`].

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gateway_config::ServerConfig;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use axum::extract::{Request, State};
use axum::middleware::Next;

use crate::api;
use crate::error::ApiError;
use crate::live::LiveConfig;
use crate::middleware::auth::AuthLayer;
use crate::middleware::drain::close_when_draining;
use crate::middleware::limits::{check_head, read_body_within};
use crate::middleware::problem::{ProblemContext, problem_json};
use crate::middleware::rate_limit::RateLimitLayer;
use crate::middleware::redact::{KnownKeys, redact_query_credentials};
use crate::middleware::request_id::{MakeId, set_request_id};
use crate::middleware::trace::RequestSpan;
use crate::state::App;

/// The router with the whole middleware stack.
///
/// Order, outermost first (a request passes them top to bottom, its response
/// bottom to top):
///
/// | # | layer | adds / why here |
/// |---|---|---|
/// | 1 | `set_request_id` | `x-request-id` from the caller if ≤ 128 visible ASCII, else a new one (process prefix + counter; a replaced one is logged), for everything below |
/// | 2 | `PropagateRequestId` | echoes it on every response, early answers included |
/// | 3 | `SetSensitiveRequestHeaders` | marks `Authorization`/`Cookie` sensitive: never printed |
/// | 4 | `redact_query_credentials` | moves `?access_token=` into an extension; every spelling of it (decoded, any case, `;` too) and any known key reads `REDACTED` — before tracing |
/// | 5 | `Trace` | the request span (method, redacted URI, request id, caller; with OTLP on: route, status, the caller's `traceparent` as parent) and one log line per response |
/// | 5b | `metrics::track` | `sg_http_*`: count, latency and the gateway's own time per route template, status and caller; sees every status below. Inner code reports to it through a task-local (`metrics::with_request_stats`): auth (10) the caller, handlers their time waiting on vendors |
/// | 6 | `problem_json` | writes problem+json (with `request_id`) for every error below; inside the span so its logs carry it |
/// | 7 | `CatchPanic` | a panic becomes a 500 problem, not a dropped connection |
/// | 8 | `Timeout` | `server.request_timeout` → 504 |
/// | 8b | `check_head` | URI over 8 KiB → 414, headers over 32 KiB → 431 (larger heads hyper refuses itself: `server.rs`) |
/// | 9 | `RequestBodyLimit` | `server.max_body_bytes` → 413 |
/// | 9b | `read_body_within` (on the router) | the whole body within `server.body_read_timeout` → 408 otherwise; handlers get it buffered |
/// | 9c | `close_when_draining` (on the router) | `Connection: close` on answers after SIGTERM, so keep-alive clients reconnect elsewhere; outside auth, so 401s and 429s carry it too |
/// | 9d | `snapshot` (`/v1` only) | the live configuration (`crate::live`) loaded once: the request's keys and providers to its end, whatever a reload swaps in meanwhile |
/// | 10 | `Auth` (`/v1` only) | `Caller` into extensions, caller name into the span; 401 |
/// | 11 | `RateLimit` (`/v1` only) | the caller's GCRA limit (keys on `Caller`, so after auth); 429 + `RateLimit-*` |
pub fn router(app: &Arc<App>) -> Router {
    let live = Arc::clone(&app.live);
    let keys = Arc::clone(&app.live().keys);
    let (routes, openapi) = api::routes(|v1| {
        v1.route_layer(
            ServiceBuilder::new()
                // 9d. One configuration for the whole request.
                .layer(axum::middleware::from_fn_with_state(live, snapshot))
                // 10. Who is calling (401 otherwise), with the snapshot's keys.
                .layer(AuthLayer::new(keys))
                // 11. Within their limit (429 otherwise); keys on what auth found.
                .layer(RateLimitLayer::new(app.stores.fleet.clone())),
        )
    });
    let _ = app.openapi.set(Bytes::from(serde_json::to_vec(&openapi).unwrap_or_default()));
    // 9c. Around every route (auth included), inside the edge layers: answers while draining close their connection.
    let routes = routes.layer(axum::middleware::from_fn_with_state(app.draining.clone(), close_when_draining));
    with_edge_layers(routes.with_state(Arc::clone(app)), &app.config.server, app.known_keys.clone())
}

/// Layer 9d: the live configuration as the request's extensions, `Arc<Live>`
/// for handlers and its `Arc<Keys>` for auth.
async fn snapshot(State(live): State<LiveConfig>, mut req: Request, next: Next) -> Response {
    let live = live.load_full();
    req.extensions_mut().insert(Arc::clone(&live.keys));
    req.extensions_mut().insert(live);
    next.run(req).await
}

/// Layers 1-9b of the table above around `routes`: everything every route gets.
pub fn with_edge_layers(routes: Router, server: &ServerConfig, keys: KnownKeys) -> Router {
    let ids = MakeId::default();
    let stack = ServiceBuilder::new()
        // 1-2. Request id in and out.
        .map_request(move |req| set_request_id(&ids, req))
        .layer(PropagateRequestIdLayer::x_request_id())
        // 3-4. Redaction comes before anything that could log a credential.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(axum::middleware::from_fn_with_state(keys, redact_query_credentials))
        // 5. Structured logs: one span per request, one event per response.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(crate::middleware::trace::OnResponse::default())
                .on_failure(()),
        )
        // 5b. Metrics: outside everything that answers, so every status is counted.
        .layer(axum::middleware::from_fn(crate::middleware::metrics::track))
        // 6. Every error response below becomes problem+json.
        .layer(axum::middleware::from_fn_with_state(
            ProblemContext {
                max_body_bytes: server.max_body_bytes,
                body_read_timeout: server.effective_body_read_timeout(),
            },
            problem_json,
        ))
        // 7. Panics → 500 problem.
        .layer(CatchPanicLayer::custom(panic_response))
        // 8. No request lives longer than this (long-polls included).
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, server.request_timeout))
        // 8b. Heads larger than the gateway accepts (hyper's own limit is far larger).
        .layer(axum::middleware::from_fn(check_head))
        // 9. Bodies over the limit are refused before they are buffered.
        .layer(RequestBodyLimitLayer::new(server.max_body_bytes));

    routes
        // 9b. ... and the rest must arrive in time (408), so a stalled body is the
        // caller's fault. On the router, which hands it the body as `Body` again.
        .layer(axum::middleware::from_fn_with_state(server.effective_body_read_timeout(), read_body_within))
        // The body limit is enforced by layer 9; axum's own default (2 MB) would conflict.
        .layer(DefaultBodyLimit::disable())
        .layer(stack)
}

#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer requires
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_500_problem_with_the_request_id() {
        async fn boom() -> &'static str {
            panic!("secret internals")
        }
        let router =
            with_edge_layers(Router::new().route("/boom", get(boom)), &ServerConfig::default(), KnownKeys::default());
        let request = Request::get("/boom").header("x-request-id", "r-1").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.headers()["x-request-id"], "r-1");
        let body: serde_json::Value =
            serde_json::from_slice(&to_bytes(response.into_body(), 4096).await.unwrap()).unwrap();
        assert_eq!(body["code"], "internal");
        assert_eq!(body["request_id"], "r-1");
        assert!(!body.to_string().contains("secret internals"), "{body}");
    }
}
