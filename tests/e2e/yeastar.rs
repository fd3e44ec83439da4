//! Yeastar end to end: the docs' example, the src/dst quirk, token expiry.

use std::time::Duration;

use serde_json::Value;

use crate::common::{TestGateway, body_of, docs_request, record};

#[tokio::test]
async fn the_docs_example_becomes_three_sections_of_three_items() {
    let gw = TestGateway::start().await;
    let response = gw.summarize(&docs_request()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-status"], "summary-gateway; fwd=miss");
    let s: Value = response.json().await.unwrap();
    assert!(s["id"].as_str().unwrap().starts_with("sum_"));
    assert_eq!(s["status"], "completed");
    assert_eq!(s["provider"], "pbx");
    assert_eq!(s["provider_type"], "yeastar");
    assert_eq!(s["kind"], "summary");
    assert_eq!(s["conversation"], docs_request()["conversation"]);
    let sections = s["content"]["sections"].as_array().unwrap();
    let titles: Vec<&str> = sections.iter().map(|s| s["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Call Summary", "Key Points", "Follow-Up Actions"]);
    assert!(sections.iter().all(|s| s["items"].as_array().unwrap().len() == 3));
    assert_eq!(sections[1]["items"][0], "60% of users are affected by the login issue.");
    let text = s["content"]["text"].as_str().unwrap();
    let markdown = s["content"]["markdown"].as_str().unwrap();
    assert!(text.starts_with("Call Summary\n- Kristin Hale was transferred"), "{text}");
    assert!(markdown.starts_with("## Call Summary\n\n- Kristin Hale"), "{markdown}");
    for field in [text, markdown] {
        assert!(!field.contains("<p>") && !field.contains("<li>") && !field.contains("&amp;"));
    }
    assert_eq!(s["participants"][0]["name"], "Human Agent - Leo Ball");
    assert_eq!(s["participants"][0]["extension"], "3202");
    assert_eq!(s["provider_ref"]["summary_id"], 53);
    assert_eq!(s["provider_ref"]["call_id"], "20260513223234-3EE9E");
    assert_eq!(s["created_at"], "2026-05-13T14:33:44Z");
    assert!(s["expires_at"].is_string());
    assert!(s["error"].is_null() && s["data"].is_null());
    assert_eq!(gw.sim.stats().missing_user_agent, 0);
}

#[tokio::test]
async fn a_callee_summary_with_a_string_timestamp_and_entities() {
    let gw = TestGateway::start().await;
    let body = serde_json::json!({"provider": "pbx", "conversation": {"id": "20260513223234-3EE9E", "party": "callee", "extension_id": 3201}});
    let s: Value = gw.summarize(&body).await.json().await.unwrap();
    assert_eq!(s["created_at"], "2026-05-13T14:33:50Z");
    assert_eq!(s["content"]["sections"][0]["items"][1], "She described the error as \"page refreshes, no message\".");
    assert!(s["content"]["text"].as_str().unwrap().contains("login problem & was transferred"));
}

#[tokio::test]
async fn an_unknown_call_leg_is_404() {
    let gw = TestGateway::start().await;
    let response = gw.summarize(&body_of("20990101000000-FFFFF")).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn token_expiry_mid_run_still_answers_200_with_one_login() {
    let gw = TestGateway::start().await;
    for i in 0..40 {
        gw.sim.add_record(record(&format!("20260601000000-{i:05}")));
    }
    for i in 0..10 {
        assert_eq!(gw.summarize(&body_of(&format!("20260601000000-{i:05}"))).await.status(), 200);
    }
    // The PBX's clock passes the token's 30 minutes; the gateway's does not.
    gw.sim.advance(Duration::from_secs(31 * 60));
    gw.sim.set_latency(Duration::from_millis(20));
    let calls: Vec<_> = (10..40)
        .map(|i| {
            let request = gw.post("/v1/summaries").json(&body_of(&format!("20260601000000-{i:05}")));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let stats = gw.sim.stats();
    assert_eq!(stats.logins, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 1, "one refresh for all the requests that saw the token expire: {stats:?}");
    assert!(stats.expired_token_answers >= 1, "{stats:?}");
    assert_eq!(stats.failed_logins, 0);
}
