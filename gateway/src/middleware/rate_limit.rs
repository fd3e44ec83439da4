//! Per-key rate limiting (GCRA), after auth: it keys on the [`Caller`] that
//! auth put into the request's extensions.
//!
//! Two lines: the caller's local governor limiter first (no round trip; a
//! replica alone over the quota is refused at once), then, with a shared store,
//! the fleet-wide GCRA in Redis (one script: check and consume in one round
//! trip, on Redis' clock), so N replicas allow the quota once, not N times.
//! **Fail-open to local limits**: if the store does not answer, the local
//! limiter's verdict stands — the gateway keeps serving during a Redis outage,
//! and each replica still holds a caller to its quota (so the fleet to at most
//! N× it) until Redis is back.
//!
//! Over the limit: 429 `rate_limited` with `Retry-After`. Every answer carries
//! `RateLimit-Limit` (the burst), `RateLimit-Remaining` and, when limited,
//! `RateLimit-Reset` (seconds until a request is allowed again).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, FutureExt};
use governor::clock::Clock;
use tower::{Layer, Service};

use super::auth::Caller;
use crate::error::ApiError;
use crate::store::{Fleet, RateVerdict};

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Layer: enforce the caller's rate limit (locally, then in the shared store if any).
#[derive(Clone)]
pub struct RateLimitLayer {
    store: Option<Arc<dyn Fleet>>,
}

impl RateLimitLayer {
    /// `fleet`: the fleet-wide limits of a shared store; none: local limits alone.
    pub fn new(fleet: Option<Arc<dyn Fleet>>) -> Self {
        Self { store: fleet }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService { inner, store: self.store.clone() }
    }
}

/// Service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    store: Option<Arc<dyn Fleet>>,
}

impl<S> Service<Request> for RateLimitService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(caller) = req.extensions().get::<Arc<Caller>>().cloned() else {
            // Auth always runs first; without a caller there is nothing to key on.
            return futures::future::ready(
                Ok(ApiError::Internal("rate limit without a caller".into()).into_response()),
            )
            .boxed();
        };
        let burst = caller.rate_limit.burst;
        let local = match caller.limiter.check() {
            Ok(snapshot) => u64::from(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                // Measured on the limiter's own clock, the one that judged it.
                let wait = not_until.wait_time_from(caller.limiter.clock().now());
                return futures::future::ready(Ok(limited(&caller.name, burst, wait))).boxed();
            }
        };
        let Some(store) = self.store.clone() else {
            return with_headers(self.inner.call(req), burst, local);
        };
        // The inner service is cloned into the future (tower's usual pattern for async checks).
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        async move {
            let remaining = match store.rate_limit(&caller.name, caller.rate_limit.per_second, burst).await {
                Ok(RateVerdict::Limited { retry_after }) => return Ok(limited(&caller.name, burst, retry_after)),
                Ok(RateVerdict::Allowed { remaining }) => remaining.min(local),
                // Fail-open: the local limiter's verdict stands.
                Err(_) => local,
            };
            with_headers(inner.call(req), burst, remaining).await
        }
        .boxed()
    }
}

/// The inner call's response with the `RateLimit-*` headers of an allowed request.
fn with_headers<F, E>(call: F, burst: u32, remaining: u64) -> BoxFuture<'static, Result<Response, E>>
where
    F: Future<Output = Result<Response, E>> + Send + 'static,
{
    call.map(move |result| {
        result.map(|mut response| {
            let headers = response.headers_mut();
            headers.insert(LIMIT.clone(), HeaderValue::from(burst));
            headers.insert(REMAINING.clone(), HeaderValue::from(remaining));
            response
        })
    })
    .boxed()
}

/// 429 with `Retry-After` and `RateLimit-*`.
fn limited(caller: &str, burst: u32, wait: Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    tracing::info!(caller, retry_after_secs = secs, "rate limited");
    metrics::counter!(crate::metrics::RATE_LIMITED, "caller" => caller.to_owned()).increment(1);
    let mut response = ApiError::RateLimited { retry_after: Duration::from_secs(secs) }.into_response();
    let headers = response.headers_mut();
    headers.insert(LIMIT.clone(), HeaderValue::from(burst));
    headers.insert(REMAINING.clone(), HeaderValue::from(0));
    headers.insert(RESET.clone(), HeaderValue::from(secs));
    response
}

#[cfg(test)]
#[path = "rate_limit_tests.rs"]
mod tests;
