//! Per-key rate limiting (GCRA, governor), after auth: it keys on the
//! [`Caller`] that auth put into the request's extensions.
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
use governor::clock::{Clock, DefaultClock};
use tower::{Layer, Service};

use super::auth::Caller;
use crate::error::ApiError;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Layer: enforce the caller's rate limit.
#[derive(Clone, Copy, Default)]
pub struct RateLimitLayer;

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService { inner }
    }
}

/// Service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
}

impl<S> Service<Request> for RateLimitService<S>
where
    S: Service<Request, Response = Response> + Send,
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
        match caller.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                self.inner
                    .call(req)
                    .map(move |result| {
                        result.map(|mut response| {
                            let headers = response.headers_mut();
                            headers.insert(LIMIT.clone(), HeaderValue::from(burst));
                            headers.insert(REMAINING.clone(), HeaderValue::from(remaining));
                            response
                        })
                    })
                    .boxed()
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                tracing::info!(caller = %caller.name, retry_after_secs = secs, "rate limited");
                let mut response =
                    ApiError::RateLimited { retry_after: Duration::from_secs(secs.max(1)) }.into_response();
                let headers = response.headers_mut();
                headers.insert(LIMIT.clone(), HeaderValue::from(burst));
                headers.insert(REMAINING.clone(), HeaderValue::from(0));
                headers.insert(RESET.clone(), HeaderValue::from(secs.max(1)));
                futures::future::ready(Ok(response)).boxed()
            }
        }
    }
}
