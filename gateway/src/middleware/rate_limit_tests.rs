//! The local rate limit (each key's GCRA in this process), as in the stack:
//! auth, then the limiter, in front of a `tower_test` mock. The limiters run on
//! governor's fake clock, so time moves only when a test advances it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use governor::clock::FakeRelativeClock;
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_test::mock;

use super::*;
use crate::error::Problem;
use crate::middleware::auth::{AuthLayer, AuthService, Keys};

const A_KEY: &str = "a-key-0123456789abcdef";
const B_KEY: &str = "b-key-0123456789abcdef";

/// Callers `a` and `b`, each allowed a burst of 3 then one request every 2 s.
fn keys(clock: &FakeRelativeClock) -> Arc<Keys> {
    let key = |secret: &str| {
        let mut key: gateway_config::KeyConfig = serde_json::from_value(json!({
            "key_sha256": "00".repeat(32),
            "rate_limit": { "per_second": 0.5, "burst": 3 },
        }))
        .unwrap();
        key.credentials =
            vec![gateway_config::Credential { sha256: Sha256::digest(secret.as_bytes()).into(), not_after: None }];
        key
    };
    let keys = BTreeMap::from([("a".to_owned(), key(A_KEY)), ("b".to_owned(), key(B_KEY))]);
    Arc::new(Keys::with_fake_clock(&gateway_config::AuthConfig { keys }, clock))
}

/// Auth then the rate limit (as in `app.rs`) over a mock inner service. The
/// embedded store has no fleet: the local limiter alone decides.
struct Stack {
    service: mock::Spawn<AuthService<RateLimitService<mock::Mock<Request, Response>>>>,
    inner: mock::Handle<Request, Response>,
}

impl Stack {
    fn new(clock: &FakeRelativeClock) -> Self {
        let (service, mut inner) =
            mock::spawn_with(|mock| AuthLayer::new(keys(clock)).layer(RateLimitLayer::new(None).layer(mock)));
        inner.allow(u64::MAX);
        Self { service, inner }
    }

    /// One request with `key`: the response, and whether the inner service got it.
    async fn send(&mut self, key: &str) -> (Response, bool) {
        assert!(self.service.poll_ready().is_ready());
        let req = Request::builder()
            .uri("/v1/providers")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        let response = self.service.call(req);
        // The mock queues a request in `call` itself, so this is decided by now.
        let passed = match self.inner.poll_request() {
            Poll::Ready(Some((_, answer))) => {
                answer.send_response(StatusCode::NO_CONTENT.into_response());
                true
            }
            _ => false,
        };
        (response.await.expect("the layers never fail"), passed)
    }
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The `RateLimit-*` headers of an allowed request: (limit, remaining), and no reset.
fn allowed(response: &Response) -> (Option<&str>, Option<&str>) {
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "allowed: the inner service's answer");
    assert_eq!(header(response, "ratelimit-reset"), None, "only a refusal says when to come back");
    (header(response, "ratelimit-limit"), header(response, "ratelimit-remaining"))
}

/// A refusal: 429 `rate_limited`, with the seconds to wait in both `Retry-After`
/// and `RateLimit-Reset`.
fn refused(response: &Response, passed: bool, secs: &str) {
    assert!(!passed, "a refused request never reaches the inner service");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.extensions().get::<Arc<Problem>>().expect("a problem").code, "rate_limited");
    assert_eq!(header(response, "retry-after"), Some(secs), "Retry-After");
    assert_eq!(header(response, "ratelimit-reset"), Some(secs), "RateLimit-Reset");
    assert_eq!(header(response, "ratelimit-limit"), Some("3"));
    assert_eq!(header(response, "ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn the_burst_is_allowed_then_refused_until_the_clock_has_moved_on() {
    let clock = FakeRelativeClock::default();
    let mut stack = Stack::new(&clock);
    for remaining in ["2", "1", "0"] {
        let (response, passed) = stack.send(A_KEY).await;
        assert!(passed);
        assert_eq!(allowed(&response), (Some("3"), Some(remaining)));
    }
    // The burst is spent: the next cell is 2 s away (0.5 per second).
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "2");
    // Refusals take nothing: 1 s on, 1 s is left, rounded up to whole seconds.
    clock.advance(Duration::from_secs(1));
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "1");
    clock.advance(Duration::from_millis(999));
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "1");
    // 2 s after the burst: one request again, and only one.
    clock.advance(Duration::from_millis(1));
    let (response, passed) = stack.send(A_KEY).await;
    assert!(passed);
    assert_eq!(allowed(&response), (Some("3"), Some("0")));
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "2");
    // Idle long enough, the whole burst is back (and no more than that).
    clock.advance(Duration::from_secs(60));
    for remaining in ["2", "1", "0"] {
        let (response, passed) = stack.send(A_KEY).await;
        assert!(passed);
        assert_eq!(allowed(&response), (Some("3"), Some(remaining)));
    }
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "2");
}

#[tokio::test]
async fn each_key_has_its_own_limit() {
    let clock = FakeRelativeClock::default();
    let mut stack = Stack::new(&clock);
    for _ in 0..3 {
        assert!(stack.send(A_KEY).await.1);
    }
    let (response, passed) = stack.send(A_KEY).await;
    refused(&response, passed, "2");
    let (response, passed) = stack.send(B_KEY).await;
    assert!(passed, "b is not limited by a's requests");
    assert_eq!(allowed(&response), (Some("3"), Some("2")));
}

/// Auth always runs first; a request without a caller is a gateway bug, not a
/// request to let through unlimited.
#[tokio::test]
async fn a_request_without_a_caller_is_an_internal_error_and_not_passed_on() {
    let (mut service, mut inner) = mock::spawn_layer::<Request, Response, _>(RateLimitLayer::new(None));
    inner.allow(1);
    assert!(service.poll_ready().is_ready());
    let response = service.call(Request::new(Body::empty())).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(inner.poll_request().is_pending(), "the inner service got a request");
}
