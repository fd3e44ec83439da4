//! The store: same request → same id, cache hits without vendor calls, single flight.

use std::time::Duration;

use serde_json::Value;

use crate::common::{TestGateway, docs_request};

#[tokio::test]
async fn concurrent_identical_requests_make_one_vendor_call_then_hit_the_cache() {
    let gw = TestGateway::start().await;
    // Log in first, then make the vendor slow so all requests overlap its one call.
    gw.summarize(&serde_json::json!({"provider": "pbx", "conversation": {"id": "20260513223234-3EE9E", "party": "callee", "extension_id": 3201}})).await;
    gw.sim.set_latency(Duration::from_millis(300));
    let before = gw.sim.stats().summary_calls;
    let calls: Vec<_> = (0..25)
        .map(|_| {
            let request = gw.post("/v1/summaries").json(&docs_request());
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert_eq!(gw.sim.stats().summary_calls - before, 1, "25 concurrent identical requests, one vendor call");
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "all callers get the same resource");

    let again = gw.summarize(&docs_request()).await;
    assert_eq!(again.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(again.text().await.unwrap(), bodies[0]);
    assert_eq!(gw.sim.stats().summary_calls - before, 1, "a hit calls no vendor");

    let id = serde_json::from_str::<Value>(&bodies[0]).unwrap()["id"].as_str().unwrap().to_owned();
    let by_id = gw.get(&format!("/v1/summaries/{id}?wait=5")).send().await.unwrap();
    assert_eq!(by_id.status(), 200);
    assert_eq!(by_id.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(by_id.text().await.unwrap(), bodies[0]);
}

#[tokio::test]
async fn the_id_depends_on_the_request_not_on_its_spelling() {
    let gw = TestGateway::start().await;
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let a = id(gw.summarize(&docs_request()).await.json().await.unwrap());
    // Same request with the default kind spelled out and a language Yeastar ignores.
    let mut same = docs_request();
    same["kind"] = "summary".into();
    same["language"] = "en-us".into();
    let b = gw.summarize(&same).await;
    assert_eq!(b.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(id(b.json().await.unwrap()), a);
    // The other party of the same call is another summary.
    let callee = serde_json::json!({"provider": "pbx", "conversation": {"id": "20260513223234-3EE9E", "party": "callee", "extension_id": 3201}});
    assert_ne!(id(gw.summarize(&callee).await.json().await.unwrap()), a);
}

#[tokio::test]
async fn vendor_errors_are_not_cached() {
    let gw = TestGateway::start().await;
    let processing = crate::common::body_of("20260513231500-7A1F0");
    assert_eq!(gw.summarize(&processing).await.status(), 409);
    assert_eq!(gw.summarize(&processing).await.status(), 409);
    assert_eq!(gw.sim.stats().summary_calls, 2);
}
