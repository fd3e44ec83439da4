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

fn responses(doc: &Value, path: &str, method: &str) -> BTreeSet<String> {
    keys(&doc["paths"][path][method]["responses"])
}

fn parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

/// What Schemathesis (ST103, ST202) found missing: every status a route can
/// answer is documented, and the constraints the handlers apply are in the
/// schema, so a generated request the schema allows is not refused as malformed.
#[tokio::test]
async fn statuses_and_constraints_match_what_the_handlers_do() {
    let gw = TestGateway::start().await;
    let doc: Value = gw.client.get(format!("{}/openapi.json", gw.url)).send().await.unwrap().json().await.unwrap();

    // Routes that read a body can time out reading it, find it too large or not JSON.
    for (path, method) in [("/v1/summaries", "post"), ("/v1/questions", "post")] {
        let statuses = responses(&doc, path, method);
        for status in ["408", "413", "415"] {
            assert!(statuses.contains(status), "{method} {path} lacks {status}: {statuses:?}");
            let content = &doc["paths"][path][method]["responses"][status]["content"]["application/problem+json"];
            assert_eq!(content["schema"]["$ref"], "#/components/schemas/Problem", "{method} {path} {status}");
        }
    }
    let callbacks = responses(&doc, "/callbacks/{provider}/{token}", "post");
    assert!(callbacks.contains("408") && callbacks.contains("413"), "{callbacks:?}");
    // Reading a summary can meet a store outage or the request timeout.
    let get = responses(&doc, "/v1/summaries/{id}", "get");
    assert!(get.contains("503") && get.contains("504"), "{get:?}");

    let id = &parameter(&doc, "/v1/summaries/{id}", "get", "id")["schema"];
    assert_eq!(id["pattern"], "^sum_[0-9a-f]{32}$");
    let wait = &parameter(&doc, "/v1/summaries/{id}", "get", "wait")["schema"];
    assert_eq!((wait["minimum"].as_f64(), wait["maximum"].as_f64()), (Some(0.0), Some(60.0)), "{wait}");

    // Provider names: the pattern gateway-config accepts, wherever one is taken.
    let provider_pattern = "^[a-z0-9][a-z0-9_-]{0,62}$";
    for schema in [
        &doc["components"]["schemas"]["CreateSummary"]["properties"]["provider"],
        &doc["components"]["schemas"]["AskQuestion"]["properties"]["provider"],
        &parameter(&doc, "/v1/questions", "get", "provider")["schema"],
        &parameter(&doc, "/callbacks/{provider}/{token}", "post", "provider")["schema"],
    ] {
        assert_eq!(schema["pattern"], provider_pattern, "{schema}");
        assert_eq!(schema["minLength"], 1, "{schema}");
    }
    // extension_id: an integer (which JSON Schema lets 3202.0 be), bounded.
    let extension = &doc["components"]["schemas"]["Conversation"]["properties"]["extension_id"];
    assert_eq!(extension["type"], serde_json::json!(["integer", "null"]));
    assert_eq!(extension["maximum"].as_f64(), Some(9_007_199_254_740_991.0));
    // The vendor's code is whatever it sent: no type constraint.
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["provider_code"].get("type").is_none());
}
