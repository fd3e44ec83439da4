//! The application: shared state, and the router with its middleware stack —
//! assembled here, in one place, in the order requests pass through it.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gateway_config::{Config, ServerConfig};
use providers::Provider;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api;
use crate::error::ApiError;
use crate::middleware::auth::{AuthLayer, Keys};
use crate::middleware::drain::close_when_draining;
use crate::middleware::limits::{check_head, read_body_within};
use crate::middleware::problem::{ProblemContext, problem_json};
use crate::middleware::rate_limit::RateLimitLayer;
use crate::middleware::redact::{KnownKeys, redact_query_credentials};
use crate::middleware::request_id::{MakeId, set_request_id};
use crate::middleware::trace::RequestSpan;
use crate::questions::Questions;
use crate::store::{MemoryStore, RedisStore, Store};
use crate::summaries::Summaries;
use crate::webhooks::Webhooks;

/// How often a draining replica looks whether its background work is done.
const BACKGROUND_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    /// Provider name → provider.
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub summaries: Arc<Summaries>,
    /// Questions about conversations and their ledger.
    pub questions: Arc<Questions>,
    /// Signs and delivers callers' webhooks (the worker runs while [`crate::run`] serves).
    pub webhooks: Arc<Webhooks>,
    pub keys: Arc<Keys>,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Stops the webhook worker claiming deliveries (see [`Self::finish_background`]).
    webhooks_stop: CancellationToken,
    /// `/openapi.json`, serialized once when the router is built.
    pub openapi: OnceLock<Bytes>,
    /// This process's name in a shared store's leases and flights (unique per start).
    pub replica: String,
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Problems only the adapter can see, each with its path under `providers.<name>`.
    #[error("{}", .1.iter().map(|e| format!("providers.{}.{e}", .0)).collect::<Vec<_>>().join("\n"))]
    Provider(String, Vec<String>),
    #[error("{0}")]
    Webhooks(String),
    #[error("{0}")]
    Store(String),
}

impl App {
    /// Builds providers (HTTP clients, token state), the store and the keys.
    pub fn new(config: Config) -> Result<Arc<Self>, InitError> {
        // The metrics recorder, once per process, before anything records.
        crate::metrics::handle();
        let replica = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (store, shared): (Arc<dyn Store>, Option<Arc<dyn providers::SharedState>>) =
            if config.store.redis_url.is_some() {
                let redis = Arc::new(RedisStore::new(&config.store, &replica).map_err(InitError::Store)?);
                (Arc::clone(&redis) as Arc<dyn Store>, Some(redis as Arc<dyn providers::SharedState>))
            } else {
                (Arc::new(MemoryStore::new(config.store.max_bytes)), None)
            };
        // One budget for every provider: it bounds what the process holds.
        let budget = providers::outbound::AnswerBudget::new(config.server.vendor_buffer_bytes.get());
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.providers {
            let built = Provider::from_config_shared(provider, shared.clone(), &budget)
                .map_err(|e| InitError::Provider(name.clone(), e))?;
            providers.insert(name.clone(), Arc::new(built));
        }
        let summaries = Arc::new(Summaries::new(Arc::clone(&store), &config));
        let webhooks =
            Webhooks::new(&config, store, Arc::clone(&summaries.outbox_wake)).map_err(InitError::Webhooks)?;
        Ok(Arc::new(Self {
            questions: Arc::new(Questions::new(
                Arc::clone(summaries.store()),
                config.store.question_ttl,
                Arc::clone(&summaries.flight_ends),
                summaries.flight_ttl,
            )),
            webhooks: Arc::new(webhooks),
            keys: Arc::new(Keys::from_config(&config.auth)),
            providers,
            draining: AtomicBool::new(false),
            webhooks_stop: summaries.shutdown.child_token(),
            openapi: OnceLock::new(),
            replica,
            config,
            summaries,
        }))
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// Starts the background work: the webhook worker, and polling of jobs the
    /// store holds from before (a shared store). Stops on [`Self::stop_background`].
    pub fn start_background(self: &Arc<Self>) {
        crate::metrics::spawn_upkeep();
        let shutdown = self.summaries.shutdown.clone();
        tokio::spawn(Arc::clone(&self.webhooks).run(self.webhooks_stop.clone()));
        let store = self.summaries.store();
        if store.shared() {
            tracing::info!(replica = %self.replica, "shared store: coordinating with other replicas");
            // Weak: the subscription must not keep the app alive after it stops.
            let summaries = Arc::downgrade(&self.summaries);
            store.subscribe(
                Arc::new(move |event| {
                    if let Some(summaries) = summaries.upgrade() {
                        summaries.on_event(event);
                    }
                }),
                shutdown,
            );
            tokio::spawn(Arc::clone(&self.summaries).watch_orphaned_jobs(self.providers.clone()));
        } else {
            let app = Arc::clone(self);
            tokio::spawn(async move { app.summaries.resume_jobs(&app.providers).await });
        }
    }

    /// Drain, step 1 (SIGTERM): `/readyz` turns 503 and long-polls, waiting
    /// and new, answer with the current state at once. Requests are still served.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::DRAINING).set(1.0);
        self.summaries.waits_end.cancel();
    }

    /// Drain, step 2 (no longer accepting): with a shared store, background
    /// work is handed over: pollers release their jobs' leases (another replica
    /// takes them at its next scan) and the webhook worker claims no more
    /// deliveries. With the embedded store nobody else could take it: it goes on.
    pub fn hand_over_background(&self) {
        if self.summaries.store().shared() {
            self.summaries.jobs_stop.cancel();
            self.webhooks_stop.cancel();
        }
    }

    /// Drain, step 3 (in-flight requests answered): waits until `deadline`
    /// for webhook attempts under way to end and, with the embedded store, for
    /// the jobs it polls to end and their webhooks to go out; then stops
    /// everything in the background.
    pub async fn finish_background(&self, deadline: tokio::time::Instant) {
        self.hand_over_background();
        let shared = self.summaries.store().shared();
        loop {
            let jobs = if shared { 0 } else { self.summaries.polling() };
            let deliveries = self.webhooks.busy(!shared).await;
            if jobs == 0 && !deliveries {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    jobs_pending = jobs,
                    deliveries_under_way = deliveries,
                    "drain time over with background work left; the embedded store does not keep it"
                );
                break;
            }
            tokio::time::sleep(BACKGROUND_CHECK_EVERY).await;
        }
        self.stop_background();
    }

    /// Stops everything in the background at once: pollers, the webhook worker,
    /// the store's subscription, and answers long-polls with the current state.
    pub fn stop_background(&self) {
        self.summaries.shutdown.cancel();
    }
}

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
/// | 5b | `metrics::track` | `sg_http_*`: count, latency and the gateway's own time per route template, status and caller (auth reports the caller to it); sees every status below |
/// | 6 | `problem_json` | writes problem+json (with `request_id`) for every error below; inside the span so its logs carry it |
/// | 7 | `CatchPanic` | a panic becomes a 500 problem, not a dropped connection |
/// | 8 | `Timeout` | `server.request_timeout` → 504 |
/// | 8b | `check_head` | URI over 8 KiB → 414, headers over 32 KiB → 431 (larger heads hyper refuses itself: `server.rs`) |
/// | 9 | `RequestBodyLimit` | `server.max_body_bytes` → 413 |
/// | 9b | `read_body_within` | the whole body within `server.body_read_timeout` → 408 otherwise; handlers get it buffered |
/// | 10 | `Auth` (`/v1` only) | `Caller` into extensions, caller name into the span; 401 |
/// | 11 | `RateLimit` (`/v1` only) | the caller's GCRA limit (keys on `Caller`, so after auth); 429 + `RateLimit-*` |
/// | 12 | `close_when_draining` | `Connection: close` on answers after SIGTERM, so keep-alive clients reconnect elsewhere |
pub fn router(app: &Arc<App>) -> Router {
    let keys = Arc::clone(&app.keys);
    let (routes, openapi) = api::routes(|v1| {
        v1.route_layer(
            ServiceBuilder::new()
                // 10. Who is calling (401 otherwise).
                .layer(AuthLayer::new(keys))
                // 11. Within their limit (429 otherwise); keys on what auth found.
                .layer(RateLimitLayer::new(Arc::clone(app.summaries.store()))),
        )
    });
    let _ = app.openapi.set(Bytes::from(serde_json::to_vec(&openapi).unwrap_or_default()));
    // Inside the edge layers (after 9): answers while draining close their connection.
    let routes = routes.layer(axum::middleware::from_fn_with_state(Arc::clone(app), close_when_draining));
    with_edge_layers(routes.with_state(Arc::clone(app)), &app.config.server, app.keys.known_keys())
}

/// Layers 1-9 of the table above around `routes`: everything every route gets.
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
