//! Edges of the contract that the OpenAPI document states: how `wait` is
//! bounded in each of its two forms, and `extension_id` as an integer in JSON
//! Schema's sense.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Setup, TestGateway, commbox_body, docs_request, expect_problem};

/// `Prefer: wait` is a preference (RFC 7240): capped, never an error, and the
/// hold applied is reported in `Preference-Applied`. `?wait` is a parameter
/// declared 0-60: outside it, 400.
#[tokio::test]
async fn prefer_wait_is_capped_and_reported_while_the_wait_parameter_is_checked() {
    // request_timeout 3s: every wait is held under it, at 2 s.
    let gw = TestGateway::start_with(Setup { server: "  request_timeout: 3s", ..Setup::default() }).await;

    let started = Instant::now();
    let r = gw.post("/v1/summaries").header("prefer", "wait=999999").json(&commbox_body("[sim:hold] cap")).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 202, "a capped preference is still honoured, not refused");
    assert_eq!(r.headers()["preference-applied"], "wait=2");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(1900) && held < Duration::from_secs(3), "{held:?}");

    let r = gw.post("/v1/summaries").header("prefer", "respond-async, wait=1").json(&commbox_body("[sim:hold] one"));
    let r = r.send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["preference-applied"].to_str().unwrap()), (202, "wait=1"));

    // Unreadable: ignored, answered at once, nothing applied.
    let started = Instant::now();
    let r = gw.post("/v1/summaries").header("prefer", "wait=soon").json(&commbox_body("[sim:hold] soon"));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(!r.headers().contains_key("preference-applied"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    let id = "sum_0123456789abcdef0123456789abcdef";
    for bad in ["61", "999999", "-1", "soon", "1.5"] {
        let r = gw.get(&format!("/v1/summaries/{id}?wait={bad}")).send().await.unwrap();
        let problem = expect_problem(r, 400, "invalid_request").await;
        assert!(problem["detail"].as_str().unwrap().contains("0 to 60"), "{problem}");
    }
    for good in ["0", "60"] {
        let r = gw.get(&format!("/v1/summaries/{id}?wait={good}")).send().await.unwrap();
        expect_problem(r, 404, "not_found").await;
    }
}

/// The document says `type: integer`, which JSON Schema satisfies with `3202.0`:
/// the gateway reads it as 3202 (the same summary), and refuses what is not an
/// integer with 400.
#[tokio::test]
async fn an_integral_float_extension_id_is_the_integer() {
    let gw = TestGateway::start().await;
    let r = gw.summarize(&docs_request()).await;
    assert_eq!(r.status(), 200);
    let plain: Value = r.json().await.unwrap();

    for written in [json!(3202.0), json!(3.202e3)] {
        let mut body = docs_request();
        body["conversation"]["extension_id"] = written.clone();
        let r = gw.summarize(&body).await;
        assert_eq!(r.status(), 200, "extension_id {written}");
        assert_eq!(r.headers()["cache-status"], "summary-gateway; hit", "the same summary as 3202");
        let same: Value = r.json().await.unwrap();
        assert_eq!(same["id"], plain["id"]);
        assert_eq!(same["conversation"]["extension_id"], 3202);
    }
    for bad in [json!(3202.5), json!(-1), json!(9_007_199_254_740_992_u64), json!("3202")] {
        let mut body = docs_request();
        body["conversation"]["extension_id"] = bad.clone();
        let problem = expect_problem(gw.summarize(&body).await, 400, "invalid_request").await;
        assert!(problem["detail"].as_str().unwrap().starts_with("conversation.extension_id"), "{bad}: {problem}");
    }
    assert_eq!(gw.sim.stats().summary_calls, 1, "one vendor call: the rest were the cache or refused");
}
