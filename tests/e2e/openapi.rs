//! /openapi.json describes the API as built: every documented operation is
//! routed, and real responses fit the documented schemas' fields.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{TestGateway, docs_request};

fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_schemas_match_responses() {
    let gw = TestGateway::start().await;
    let doc: Value = gw.client.get(format!("{}/openapi.json", gw.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/summaries",
        "/v1/summaries/{id}",
        "/v1/providers",
        "/v1/questions",
        "/callbacks/{provider}/{token}",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "sum_0123456789abcdef0123456789abcdef")
            .replace("{provider}", "cb")
            .replace("{token}", "not-the-token");
        for (method, op) in item.as_object().unwrap() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = gw.client.request(method.clone(), format!("{}{concrete}", gw.url)).send().await.unwrap();
            let status = response.status().as_u16();
            let secured = op.get("security").is_some();
            if secured {
                assert_eq!(status, 401, "{method} {path} without a key");
            } else if path.starts_with("/callbacks/") {
                // Open, but guarded by the provider's callback token.
                assert_eq!(status, 404, "{method} {path} with a wrong token");
            } else {
                assert_eq!(status, 200, "{method} {path}");
            }
        }
    }

    let summary: Value = gw.summarize(&docs_request()).await.json().await.unwrap();
    assert_eq!(keys(&summary), properties(&doc, "Summary"));
    let problem: Value = gw.get("/v1/summaries/nope").send().await.unwrap().json().await.unwrap();
    assert!(keys(&problem).is_subset(&properties(&doc, "Problem")), "{problem}");
    let providers: Value = gw.get("/v1/providers").send().await.unwrap().json().await.unwrap();
    assert_eq!(keys(&providers["data"][0]), properties(&doc, "ProviderEntry"));
    let ask = serde_json::json!({"provider": "ai", "conversation": {"id": providers::elevateai::simulator::BILLING_CALL},
        "question": "Was the customer refunded?"});
    let question: Value = gw.post("/v1/questions").json(&ask).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys(&question), properties(&doc, "Question"), "{question}");
    let list: Value = gw
        .get(&format!("/v1/questions?provider=ai&conversation_id={}", providers::elevateai::simulator::BILLING_CALL))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&list), properties(&doc, "QuestionList"));
    assert_eq!(list["data"][0], question);
}
