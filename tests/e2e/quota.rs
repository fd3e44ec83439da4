//! Key rotation and quotas (API.md "Operating without restarts"): a caller with
//! several keys, one expired; a daily quota per caller and per provider, with
//! the IETF `RateLimit-Policy` / `RateLimit` headers and 429 `quota_exceeded`
//! with `Retry-After` until the UTC day ends. The fleet-wide quota is in
//! `replicas.rs`.

use serde_json::json;

use crate::common::{Setup, TestGateway, docs_request, expect_problem};

const BUDGET_KEY: &str = "budget-test-key-0123456789";
const MISSES_ONLY_KEY: &str = "misses-only-test-key-0123456789";
const OLD_KEY: &str = "rotating-old-key-0123456789";
const NEW_KEY: &str = "rotating-new-key-0123456789";

fn setup() -> Setup {
    Setup {
        keys: format!(
            "    budget:\n      key: {BUDGET_KEY}\n      quota: {{ requests: 3, per: day, providers: {{ pbx: {{ requests: 2, per: day }} }} }}\n\
             \x20   misses-only:\n      key: {MISSES_ONLY_KEY}\n      quota: {{ requests: 1, per: day, count_cache_hits: false }}\n\
             \x20   rotating:\n      keys:\n        - {{ key: {OLD_KEY}, not_after: \"2020-01-01T00:00:00Z\" }}\n        - {{ key: {NEW_KEY} }}\n"
        ),
        ..Setup::default()
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Seconds until the next UTC midnight, as the gateway's `Retry-After` should say (± a second).
fn seconds_to_midnight() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    86_400 - now % 86_400
}

#[tokio::test]
async fn a_daily_quota_counts_per_provider_and_per_caller_and_answers_429_until_midnight() {
    let gw = TestGateway::start_with(setup()).await;
    let post = |body: serde_json::Value| {
        gw.client.post(format!("{}/v1/summaries", gw.url)).bearer_auth(BUDGET_KEY).json(&body).send()
    };

    for n in 1..=2 {
        let r = post(docs_request()).await.unwrap();
        assert_eq!(r.status(), 200, "request {n} is within both quotas");
        let policy = header(&r, "ratelimit-policy");
        assert!(policy.contains("\"quota\";q=3;w=86400"), "{policy}");
        assert!(policy.contains("\"quota-pbx\";q=2;w=86400"), "{policy}");
        let state = header(&r, "ratelimit");
        assert!(state.contains(&format!("\"quota-pbx\";r={}", 2 - n)), "request {n}: {state}");
        assert!(state.contains(&format!("\"quota\";r={}", 3 - n)), "request {n}: {state}");
    }

    // The third on pbx: pbx's quota (2) is spent, the caller's (3) is not.
    let r = post(docs_request()).await.unwrap();
    let retry_after: u64 = header(&r, "retry-after").parse().expect("Retry-After in seconds");
    let body = expect_problem(r, 429, "quota_exceeded").await;
    assert!(body["detail"].as_str().unwrap().contains("`pbx`"), "{body}");
    let midnight = seconds_to_midnight();
    assert!(retry_after.abs_diff(midnight) <= 2, "Retry-After {retry_after} s, midnight in {midnight} s");

    // Another provider: the refused request was not charged, so the caller has one left.
    let other = json!({"provider": "pbx-other", "conversation": {"id": "20260513223234-3EE9E", "party": "caller", "extension_id": 3202}});
    let r = post(other.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "the caller-wide quota has one request left");
    assert!(header(&r, "ratelimit").contains("\"quota\";r=0"), "{}", header(&r, "ratelimit"));
    let r = post(other).await.unwrap();
    let body = expect_problem(r, 429, "quota_exceeded").await;
    assert!(!body["detail"].as_str().unwrap().contains("provider"), "the caller-wide quota: {body}");

    // Other callers are not affected.
    assert_eq!(gw.summarize(&docs_request()).await.status(), 200);

    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let exceeded: Vec<&str> = metrics.lines().filter(|l| l.starts_with("sg_quota_exceeded_total{")).collect();
    assert!(
        exceeded.iter().any(|l| l.contains("caller=\"budget\"") && l.contains("provider=\"pbx\"") && l.ends_with(" 1")),
        "{exceeded:?}"
    );
    assert!(
        exceeded.iter().any(|l| l.contains("caller=\"budget\"") && l.contains("provider=\"\"") && l.ends_with(" 1")),
        "{exceeded:?}"
    );
    assert!(!metrics.contains(BUDGET_KEY), "no key in /metrics");
}

#[tokio::test]
async fn cache_hits_are_free_when_the_quota_says_so() {
    let gw = TestGateway::start_with(setup()).await;
    let post = |body: serde_json::Value| {
        gw.client.post(format!("{}/v1/summaries", gw.url)).bearer_auth(MISSES_ONLY_KEY).json(&body).send()
    };
    for n in 1..=3 {
        let r = post(docs_request()).await.unwrap();
        assert_eq!(r.status(), 200, "request {n}: one miss, then hits that do not count");
    }
    assert_eq!(gw.sim.stats().summary_calls, 1, "one vendor call, the rest from the cache");
    // A second miss is over the quota of one.
    let other = json!({"provider": "pbx", "conversation": {"id": "20260513223234-3EE9E", "party": "callee", "extension_id": 3202}});
    expect_problem(post(other).await.unwrap(), 429, "quota_exceeded").await;
}

#[tokio::test]
async fn an_expired_key_is_refused_as_expired_and_the_new_one_is_served() {
    let gw = TestGateway::start_with(setup()).await;
    let call = |key: &'static str| gw.client.get(format!("{}/v1/providers", gw.url)).bearer_auth(key).send();

    let body = expect_problem(call(OLD_KEY).await.unwrap(), 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    assert!(!body.to_string().contains(OLD_KEY), "the key is not echoed: {body}");
    // An unknown key is not told it expired.
    let body = expect_problem(call("no-such-key-0123456789").await.unwrap(), 401, "unauthorized").await;
    assert!(!body["detail"].as_str().unwrap().contains("expired"), "{body}");

    assert_eq!(call(NEW_KEY).await.unwrap().status(), 200);
    assert_eq!(call(NEW_KEY).await.unwrap().status(), 200);

    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("sg_key_requests_total{") && l.contains("caller=\"rotating\"") && l.contains("key=\"1\"")
        })
        .unwrap_or_else(|| panic!("no sg_key_requests_total for rotating's key 1:\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    assert!(!metrics.contains(NEW_KEY) && !metrics.contains(OLD_KEY), "no key in /metrics");
}
