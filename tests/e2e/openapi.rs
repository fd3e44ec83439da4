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

/// docs/api.md, the API reference in words, against the document the gateway
/// serves: every operation, parameter, resource field and error status in one
/// is in the other, so neither can drift.
#[tokio::test]
async fn the_api_reference_in_docs_matches_the_openapi_document() {
    let gw = TestGateway::start().await;
    let doc: Value = gw.client.get(format!("{}/openapi.json", gw.url)).send().await.unwrap().json().await.unwrap();
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let mut problems = Vec::new();

    // Operations: `GET /path` written in the reference ⇔ in the document.
    let mut documented = BTreeSet::new();
    let mut error_statuses = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                if !reference.contains(&format!("`{name}`")) && !reference.contains(&format!("`{name}:")) {
                    problems.push(format!("parameter `{name}` of {method} {path} is not in docs/api.md"));
                }
            }
            for status in op["responses"].as_object().unwrap().keys() {
                if status.as_str() >= "400" {
                    error_statuses.insert(status.clone());
                }
            }
        }
    }
    let written: BTreeSet<String> = reference
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("GET /") || s.starts_with("POST /"))
        .map(|s| s.split('?').next().unwrap().to_owned())
        .collect();
    for missing in documented.difference(&written) {
        problems.push(format!("{missing} is served but not in docs/api.md"));
    }
    for extra in written.difference(&documented) {
        problems.push(format!("{extra} is in docs/api.md but not served"));
    }

    // Fields of every resource a caller reads or writes.
    for schema in
        ["Summary", "Content", "Section", "Participant", "SummaryError", "CreateSummary", "Conversation", "Question"]
            .into_iter()
            .chain(["AskQuestion", "ProviderEntry", "Problem"])
    {
        for field in properties(&doc, schema) {
            if !reference.contains(&format!("`{field}`")) && !reference.contains(&format!("\"{field}\"")) {
                problems.push(format!("field `{field}` of {schema} is not in docs/api.md"));
            }
        }
    }
    for schema in ["Status", "Kind", "Party", "ProviderStatus", "QuestionStatus"] {
        for value in doc["components"]["schemas"][schema]["enum"].as_array().unwrap() {
            let value = value.as_str().unwrap();
            if !reference.contains(&format!("`{value}`")) {
                problems.push(format!("{schema} value `{value}` is not in docs/api.md"));
            }
        }
    }

    // Every error status an operation declares has a row in the errors table.
    let table: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next())
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    for status in error_statuses.difference(&table) {
        problems
            .push(format!("status {status} is declared by an operation but has no row in docs/api.md's errors table"));
    }
    assert!(problems.is_empty(), "docs/api.md has drifted from /openapi.json:\n{}", problems.join("\n"));
}
