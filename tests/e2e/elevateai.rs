//! ElevateAI: every kind on both variants, questions, mapping overrides, the
//! vendor's concurrency limit.

use std::time::Duration;

use providers::elevateai::simulator::{
    BILLING_CALL, MARK_UNANSWERABLE, OUTAGE_CHAT, PROCESSING_CALL, SimOptions, SimStats,
};
use serde_json::{Value, json};

use crate::common::{Flavour, Setup, TestGateway, elevateai_body, eventually, expect_problem};

// The built-in adapter and ElevateAI's summary, details and topics described as
// `type: http` (config/examples/http-elevateai.yaml), with the same assertions.
// Questions and the other kinds are the built-in's alone.
crate::on_both_flavours!(
    details_are_mapped_into_data,
    the_summary_language_defaults_to_en_and_reaches_the_vendor,
    a_model_timeout_is_retried_inside_the_deadline,
    topics_follow_the_fixture
);

const ALL_KINDS: [&str; 6] = ["summary", "details", "action_items", "coaching", "topics", "composition"];
const STANDARD_KINDS: [&str; 4] = ["summary", "details", "action_items", "topics"];

/// A GUID no simulator interaction has.
const UNKNOWN_INTERACTION: &str = "00000000-1111-4222-8333-444444444444";

/// The simulator's seeded interaction `id`, in the vendor's field names.
fn fixture(id: &str) -> Value {
    let all: Vec<Value> =
        serde_json::from_str(include_str!("../../providers/src/elevateai/fixtures/interactions.json")).unwrap();
    all.into_iter().find(|i| i["identifier"] == id).unwrap()
}

/// Vendor requests the simulator saw for `kind` (any status).
fn requests(gw: &TestGateway, kind: &str) -> u64 {
    gw.elevateai.stats().requests.get(kind).copied().unwrap_or(0)
}

/// Vendor requests the simulator saw on `variant` (gen-AI and ask).
fn variant_calls(gw: &TestGateway, variant: &str) -> u64 {
    gw.elevateai.stats().variants.get(variant).copied().unwrap_or(0)
}

/// POST /v1/summaries, expecting 200 and a completed resource.
async fn completed(gw: &TestGateway, body: &Value) -> Value {
    let r = gw.summarize(body).await;
    assert_eq!(r.status(), 200, "{body}");
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["status"], "completed", "{s}");
    s
}

/// POST /v1/questions with the main key.
async fn ask(gw: &TestGateway, provider: &str, interaction: &str, question: &str) -> reqwest::Response {
    let body = json!({"provider": provider, "conversation": {"id": interaction}, "question": question});
    gw.post("/v1/questions").json(&body).send().await.unwrap()
}

/// POST /v1/questions expecting 200: (body, `Cache-Status`).
async fn ask_ok(gw: &TestGateway, provider: &str, interaction: &str, question: &str) -> (Value, String) {
    let r = ask(gw, provider, interaction, question).await;
    assert_eq!(r.status(), 200, "{question}");
    let cache = r.headers()["cache-status"].to_str().unwrap().to_owned();
    (r.json().await.unwrap(), cache)
}

/// GET /v1/questions.
async fn list(gw: &TestGateway, provider: &str, interaction: &str) -> reqwest::Response {
    gw.get(&format!("/v1/questions?provider={provider}&conversation_id={interaction}")).send().await.unwrap()
}

fn ids(questions: &Value) -> Vec<String> {
    questions["data"].as_array().unwrap().iter().map(|q| q["id"].as_str().unwrap().to_owned()).collect()
}

fn assert_plain(text: &str) {
    for markup in ["<", "**", "##", "\\", "&amp;", "`"] {
        assert!(!text.contains(markup), "`{markup}` in {text}");
    }
}

#[tokio::test]
async fn every_kind_of_the_cx_variant_completes() {
    let gw = TestGateway::start().await;
    for kind in ALL_KINDS {
        let r = gw.summarize(&elevateai_body("ai", kind, BILLING_CALL)).await;
        assert_eq!(r.status(), 200, "{kind}");
        assert_eq!(r.headers()["cache-status"], "summary-gateway; fwd=miss");
        let s: Value = r.json().await.unwrap();
        assert!(s["id"].as_str().unwrap().starts_with("sum_"), "{s}");
        assert_eq!(s["status"], "completed", "{s}");
        assert_eq!(s["provider"], "ai");
        assert_eq!(s["provider_type"], "elevateai");
        assert_eq!(s["kind"], kind);
        assert_eq!(s["conversation"], json!({"id": BILLING_CALL}));
        assert!(s["error"].is_null(), "{s}");
        let sections = s["content"]["sections"].as_array().unwrap();
        assert!(!sections.is_empty(), "{kind}: {s}");
        assert!(sections.iter().all(|s| !s["items"].as_array().unwrap().is_empty()), "{kind}: {s}");
        let text = s["content"]["text"].as_str().unwrap();
        assert!(!text.is_empty(), "{kind}");
        assert_plain(text);
        assert_eq!(requests(&gw, kind), 1, "{kind}: one vendor call");
    }
    let stats = gw.elevateai.stats();
    assert_eq!(stats.variants.get("cx"), Some(&6), "{stats:?}");
    assert_eq!(stats.variants.get("standard"), None, "{stats:?}");

    // Asked again: the stored resource, no vendor call.
    let r = gw.summarize(&elevateai_body("ai", "coaching", BILLING_CALL)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(requests(&gw, "coaching"), 1);
}

#[tokio::test]
async fn the_standard_variant_has_four_kinds_and_refuses_the_others_without_a_call() {
    let gw = TestGateway::start().await;
    for kind in STANDARD_KINDS {
        let s = completed(&gw, &elevateai_body("ai-std", kind, OUTAGE_CHAT)).await;
        assert_eq!(s["provider"], "ai-std");
        assert_eq!(s["provider_type"], "elevateai");
        assert_eq!(s["kind"], kind);
        assert!(!s["content"]["sections"].as_array().unwrap().is_empty(), "{s}");
        assert_plain(s["content"]["text"].as_str().unwrap());
        assert_eq!(requests(&gw, kind), 1, "{kind}");
    }
    assert_eq!(variant_calls(&gw, "standard"), 4);
    for kind in ["coaching", "composition"] {
        let problem =
            expect_problem(gw.summarize(&elevateai_body("ai-std", kind, OUTAGE_CHAT)).await, 422, "unsupported_kind")
                .await;
        assert!(problem["detail"].as_str().unwrap().contains(kind), "{problem}");
        assert_eq!(requests(&gw, kind), 0, "no vendor call for {kind}");
    }
    let stats = gw.elevateai.stats();
    assert_eq!(stats.variants.get("standard"), Some(&4), "{stats:?}");
    assert_eq!(stats.variants.get("cx"), None, "{stats:?}");
}

async fn details_are_mapped_into_data(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { ai_flavour: flavour, ..Setup::default() }).await;
    let vendor = &fixture(BILLING_CALL)["details"];
    let s = completed(&gw, &elevateai_body("ai", "details", BILLING_CALL)).await;
    let data = &s["data"];
    assert_eq!(data["reasons"], vendor["reasons"], "{data}");
    assert_eq!(data["actions_taken"], vendor["actionsTakenByAgent"], "{data}");
    assert_eq!(data["entities"], vendor["entities"], "{data}");
    assert_eq!(data["resolved"], json!(true));
    let entity = &data["entities"][0];
    assert_eq!((entity["type"].as_str(), entity["value"].as_str()), (Some("PERSON"), Some("Maria Lopez")));
    // No language for kinds other than summary.
    assert!(s["language"].is_null(), "{s}");
    // The same structure in the content, as titled sections.
    let sections = s["content"]["sections"].as_array().unwrap();
    assert_eq!(sections[0]["items"], vendor["reasons"]);
    assert!(s["content"]["text"].as_str().unwrap().contains("Issued a $89.99 refund to the card on file"));

    // An unresolved interaction on the standard variant.
    let s = completed(&gw, &elevateai_body("ai-std", "details", OUTAGE_CHAT)).await;
    assert_eq!(s["data"]["resolved"], json!(false), "{s}");
    assert_eq!(s["data"]["reasons"], fixture(OUTAGE_CHAT)["details"]["reasons"]);
}

async fn topics_follow_the_fixture(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { ai_flavour: flavour, ..Setup::default() }).await;
    let vendor = fixture(OUTAGE_CHAT);
    let s = completed(&gw, &elevateai_body("ai", "topics", OUTAGE_CHAT)).await;
    assert_eq!(s["data"]["topics"], vendor["topics"], "{s}");
    assert_eq!(s["content"]["sections"][0]["items"], vendor["topics"], "{s}");
}

#[tokio::test]
async fn action_items_coaching_and_composition_follow_the_fixture() {
    let gw = TestGateway::start().await;
    let vendor = fixture(OUTAGE_CHAT);

    let s = completed(&gw, &elevateai_body("ai", "composition", OUTAGE_CHAT)).await;
    let concerns = s["data"]["concerns"].as_array().unwrap();
    let expected = vendor["concerns"].as_array().unwrap();
    assert_eq!(concerns.len(), expected.len(), "{s}");
    for (got, want) in concerns.iter().zip(expected) {
        assert_eq!(got["concern"], want["concern"]);
        assert_eq!(got["actions"], want["actions"]);
    }
    let statuses: Vec<&str> = concerns.iter().map(|c| c["resolution_status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["partially_resolved", "resolved", "unresolved"], "snake_case: {s}");

    let s = completed(&gw, &elevateai_body("ai", "action_items", OUTAGE_CHAT)).await;
    let items = &s["content"]["sections"][0]["items"];
    let descriptions: Vec<&Value> =
        vendor["actionItems"].as_array().unwrap().iter().map(|a| &a["description"]).collect();
    assert_eq!(items, &json!(descriptions), "{s}");

    let s = completed(&gw, &elevateai_body("ai", "coaching", OUTAGE_CHAT)).await;
    let titles: Vec<&str> =
        s["content"]["sections"].as_array().unwrap().iter().filter_map(|s| s["title"].as_str()).collect();
    assert_eq!(titles, ["Empathy", "Troubleshooting", "Ownership"], "{s}");
    assert_eq!(s["content"]["sections"][1]["items"], vendor["coachingPoints"][1]["feedback"]);
}

async fn the_summary_language_defaults_to_en_and_reaches_the_vendor(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { ai_flavour: flavour, ..Setup::default() }).await;
    let vendor = fixture(BILLING_CALL);
    let english = completed(&gw, &elevateai_body("ai", "summary", BILLING_CALL)).await;
    assert_eq!(english["language"], "en");
    assert_eq!(english["content"]["text"], vendor["summary"]["en"], "{english}");
    assert!(english["data"].is_null());

    let mut body = elevateai_body("ai", "summary", BILLING_CALL);
    body["language"] = json!("pt-BR");
    let portuguese = completed(&gw, &body).await;
    assert_eq!(portuguese["language"], "pt-BR");
    assert_eq!(portuguese["content"]["text"], vendor["summary"]["pt"], "{portuguese}");
    assert_ne!(portuguese["id"], english["id"], "the language is part of the request's identity");
    assert_eq!(gw.elevateai.stats().languages, ["en", "pt-BR"]);
    assert_eq!(requests(&gw, "summary"), 2);

    // Other kinds are not written in a language: it is not part of their identity.
    let mut body = elevateai_body("ai", "details", BILLING_CALL);
    let details = completed(&gw, &body).await;
    body["language"] = json!("pt-BR");
    let r = gw.summarize(&body).await;
    assert_eq!(r.headers()["cache-status"], "summary-gateway; hit");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], details["id"]);
    assert!(again["language"].is_null(), "{again}");
    assert_eq!(requests(&gw, "details"), 1);
}

#[tokio::test]
async fn an_interaction_still_processing_is_409_until_it_is_processed() {
    let gw = TestGateway::start().await;
    let body = elevateai_body("ai", "summary", PROCESSING_CALL);
    let r = gw.summarize(&body).await;
    let retry_after: u64 = r.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let problem = expect_problem(r, 409, "conversation_not_ready").await;
    assert_eq!(problem["provider"], "ai", "{problem}");
    // Questions about it too.
    expect_problem(ask(&gw, "ai", PROCESSING_CALL, "Why did he call?").await, 409, "conversation_not_ready").await;

    assert!(gw.elevateai.set_processed(PROCESSING_CALL));
    let s = completed(&gw, &body).await;
    assert_eq!(s["content"]["text"], fixture(PROCESSING_CALL)["summary"]["en"]);
    assert_eq!(requests(&gw, "summary"), 2, "the 409 was not kept");
}

#[tokio::test]
async fn unknown_and_malformed_interactions() {
    let gw = TestGateway::start().await;
    let problem =
        expect_problem(gw.summarize(&elevateai_body("ai", "details", UNKNOWN_INTERACTION)).await, 404, "not_found")
            .await;
    assert_eq!(problem["provider"], "ai", "{problem}");
    assert_eq!(requests(&gw, "details"), 1);

    for id in [
        "not-a-guid",
        "3f6a2c1e8b4d4e7a9c2f5d1b7e9a0c41",
        "../../v1/interactions",
        "3f6a2c1e-8b4d-4e7a-9c2f-5d1b7e9a0c4",
    ] {
        expect_problem(gw.summarize(&elevateai_body("ai", "summary", id)).await, 400, "invalid_request").await;
    }
    let text = json!({"provider": "ai", "kind": "summary", "conversation": {"text": "Agent: hello. ".repeat(20)}});
    expect_problem(gw.summarize(&text).await, 400, "invalid_request").await;
    let both = json!({"provider": "ai", "conversation": {"id": BILLING_CALL, "text": "Agent: hello. ".repeat(20)}});
    expect_problem(gw.summarize(&both).await, 400, "invalid_request").await;
    expect_problem(ask(&gw, "ai", "not-a-guid", "Why?").await, 400, "invalid_request").await;
    let stats = gw.elevateai.stats();
    assert_eq!(requests(&gw, "summary"), 0, "no vendor call for a bad id: {stats:?}");
    assert_eq!(stats.asks, 0);
}

async fn a_model_timeout_is_retried_inside_the_deadline(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { ai_flavour: flavour, ..Setup::default() }).await;
    gw.elevateai.fail_next(408, 1);
    let s = completed(&gw, &elevateai_body("ai", "details", BILLING_CALL)).await;
    assert_eq!(s["data"]["resolved"], json!(true));
    assert_eq!(requests(&gw, "details"), 2, "the 408 and its retry");
}

#[tokio::test]
async fn a_question_is_answered() {
    let gw = TestGateway::start().await;
    let (q, cache) = ask_ok(&gw, "ai", BILLING_CALL, "How much was the refund?").await;
    assert!(q["id"].as_str().unwrap().starts_with("q_"), "{q}");
    assert_eq!(q["status"], "answered", "{q}");
    assert!(!q["answer"].as_str().unwrap().trim().is_empty(), "{q}");
    assert!(q["answer"].as_str().unwrap().contains("refund"), "{q}");
    assert_eq!(q["provider"], "ai");
    assert_eq!(q["conversation"]["id"], BILLING_CALL);
    assert_eq!(q["question"], "How much was the refund?");
    assert!(q["error"].is_null(), "{q}");
    assert!(q["created_at"].as_str().unwrap().ends_with('Z'), "{q}");
    assert_eq!(cache, "summary-gateway; fwd=miss");
    let stats = gw.elevateai.stats();
    assert_eq!(stats.asks, 1);
    assert_eq!(stats.variants.get("cx"), Some(&1));

    // The standard variant asks through its own route.
    let (q, _) = ask_ok(&gw, "ai-std", BILLING_CALL, "How much was the refund?").await;
    assert_eq!(q["status"], "answered", "{q}");
    assert_eq!(q["provider"], "ai-std");
    assert_eq!(gw.elevateai.stats().variants.get("standard"), Some(&1));
}

#[tokio::test]
async fn a_question_over_250_characters_is_refused_without_a_call() {
    let gw = TestGateway::start().await;
    let long = format!("Why {}?", "x".repeat(250));
    let problem = expect_problem(ask(&gw, "ai", BILLING_CALL, &long).await, 422, "question_too_long").await;
    assert!(problem["detail"].as_str().unwrap().contains("250"), "{problem}");
    // Exactly 250 is fine.
    let limit = format!("Was the refund {}?", "a".repeat(250 - "Was the refund ?".len()));
    assert_eq!(limit.chars().count(), 250);
    let (q, _) = ask_ok(&gw, "ai", BILLING_CALL, &limit).await;
    assert_eq!(q["status"], "answered");
    assert_eq!(gw.elevateai.stats().asks, 1, "only the 250-character question reached the vendor");
}

#[tokio::test]
async fn the_same_question_again_is_answered_from_the_store() {
    let gw = TestGateway::start().await;
    let (first, cache) = ask_ok(&gw, "ai", BILLING_CALL, "Was the customer charged twice?").await;
    assert_eq!(cache, "summary-gateway; fwd=miss");
    for again in ["Was the customer charged twice?", "  was the CUSTOMER   charged\ttwice? "] {
        let (q, cache) = ask_ok(&gw, "ai", BILLING_CALL, again).await;
        assert_eq!(cache, "summary-gateway; hit", "{again}");
        assert_eq!(q["id"], first["id"]);
        assert_eq!(q["answer"], first["answer"]);
        assert_eq!(q["status"], "answered");
    }
    assert_eq!(gw.elevateai.stats().asks, 1, "one vendor call");
    // The same question about another interaction, or on another provider, is another question.
    let (other, cache) = ask_ok(&gw, "ai", OUTAGE_CHAT, "Was the customer charged twice?").await;
    assert_eq!(cache, "summary-gateway; fwd=miss");
    assert_ne!(other["id"], first["id"]);
    assert_eq!(gw.elevateai.stats().asks, 2);
}

#[tokio::test]
async fn five_answered_questions_then_the_limit() {
    let gw = TestGateway::start().await;
    let questions = [
        "When did the outage start?",
        "What was the incident number?",
        "When will the repair be done?",
        "What did the agent offer?",
        "Was the router restarted?",
    ];
    let mut answered = Vec::new();
    for question in questions {
        let (q, _) = ask_ok(&gw, "ai", OUTAGE_CHAT, question).await;
        assert_eq!(q["status"], "answered", "{q}");
        answered.push(q);
    }
    assert_eq!(gw.elevateai.stats().asks, 5);
    expect_problem(ask(&gw, "ai", OUTAGE_CHAT, "Is the customer happy?").await, 409, "question_limit_reached").await;
    assert_eq!(gw.elevateai.stats().asks, 5, "refused without a vendor call");

    // Questions already asked are still answered, from the store.
    let (q, cache) = ask_ok(&gw, "ai", OUTAGE_CHAT, "what was the incident NUMBER?").await;
    assert_eq!(cache, "summary-gateway; hit");
    assert_eq!(q["id"], answered[1]["id"]);
    assert_eq!(q["answer"], answered[1]["answer"]);
    // Another interaction has its own allowance.
    let (q, _) = ask_ok(&gw, "ai", BILLING_CALL, "Is the customer happy?").await;
    assert_eq!(q["status"], "answered");
    assert_eq!(gw.elevateai.stats().asks, 6);
}

#[tokio::test]
async fn the_vendors_own_limit_is_a_409_and_its_questions_are_still_answered() {
    let gw = TestGateway::start().await;
    // Spend the interaction's allowance outside `ai`'s ledger (ai-std shares the vendor's log).
    let questions = [
        "Why did he call?",
        "What was the fibre cut?",
        "What is the repair time?",
        "What was offered?",
        "Is there a credit?",
    ];
    for question in questions {
        ask_ok(&gw, "ai-std", OUTAGE_CHAT, question).await;
    }
    let problem =
        expect_problem(ask(&gw, "ai", OUTAGE_CHAT, "Is the customer happy?").await, 409, "question_limit_reached")
            .await;
    assert!(problem["detail"].is_string());
    assert_eq!(gw.elevateai.stats().asks, 6, "the vendor refused the 6th");
    // One the vendor answered before: found in its list.
    let (q, _) = ask_ok(&gw, "ai", OUTAGE_CHAT, "What was offered?").await;
    assert_eq!(q["status"], "answered", "{q}");
    assert_eq!(q["provider"], "ai");
    assert!(q["answer"].as_str().unwrap().starts_with("Regarding \"What was offered?\""), "{q}");
}

#[tokio::test]
async fn an_unanswerable_question_is_a_failed_question() {
    let gw = TestGateway::start().await;
    let question = format!("What is the customer's shoe size? {MARK_UNANSWERABLE}");
    let (q, _) = ask_ok(&gw, "ai", BILLING_CALL, &question).await;
    assert_eq!(q["status"], "failed", "{q}");
    assert!(q["answer"].is_null(), "{q}");
    assert_eq!(q["error"]["code"], "provider_failed", "{q}");
    assert_eq!(q["error"]["provider_status"], 422, "{q}");
    assert!(q["id"].as_str().unwrap().starts_with("q_"));
    assert_eq!(gw.elevateai.stats().asks, 1);
}

#[tokio::test]
async fn the_list_holds_the_questions_in_ask_order() {
    let gw = TestGateway::start().await;
    let mut asked = Vec::new();
    let unanswerable = format!("Her shoe size? {MARK_UNANSWERABLE}");
    for question in ["Why did she call?", "What was refunded?", unanswerable.as_str(), "Was autopay fixed?"] {
        let (q, _) = ask_ok(&gw, "ai", BILLING_CALL, question).await;
        asked.push(q);
    }
    let r = list(&gw, "ai", BILLING_CALL).await;
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    let expected: Vec<String> = asked.iter().map(|q| q["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids(&listed), expected, "{listed}");
    for (got, want) in listed["data"].as_array().unwrap().iter().zip(&asked) {
        assert_eq!(got["answer"], want["answer"]);
        assert_eq!(got["status"], want["status"]);
        assert_eq!(got["question"], want["question"]);
    }
    assert_eq!(listed["data"][2]["status"], "failed");
    assert_eq!(gw.elevateai.stats().ask_lists, 0, "the ledger answered");

    // A conversation with no questions anywhere: the vendor's (empty) list.
    let stats_before = gw.elevateai.stats().ask_lists;
    let r = list(&gw, "ai", OUTAGE_CHAT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"data": []}));
    assert_eq!(gw.elevateai.stats().ask_lists, stats_before + 1);
}

#[tokio::test]
async fn without_a_ledger_the_list_is_the_vendors() {
    let gw = TestGateway::start().await;
    // Asked outside `ai` (ai-std shares the vendor's question log).
    let (elsewhere, _) = ask_ok(&gw, "ai-std", OUTAGE_CHAT, "When will the repair be done?").await;
    let (_, _) = ask_ok(&gw, "ai-std", OUTAGE_CHAT, &format!("His favourite colour? {MARK_UNANSWERABLE}")).await;
    assert_eq!(gw.elevateai.stats().ask_lists, 0);

    let r = list(&gw, "ai", OUTAGE_CHAT).await;
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(gw.elevateai.stats().ask_lists, 1, "asked the vendor");
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{listed}");
    assert_eq!(data[0]["question"], "When will the repair be done?");
    assert_eq!(data[0]["answer"], elsewhere["answer"]);
    assert_eq!(data[0]["status"], "answered");
    assert_eq!(data[0]["provider"], "ai");
    assert_eq!(data[0]["conversation"]["id"], OUTAGE_CHAT);
    assert!(data[0]["id"].as_str().unwrap().starts_with("q_"));
    assert_eq!(data[1]["status"], "failed");
    assert!(data[1]["answer"].is_null());

    // It seeded the ledger: listing again, and asking a listed question, call nobody.
    let again: Value = list(&gw, "ai", OUTAGE_CHAT).await.json().await.unwrap();
    assert_eq!(ids(&again), ids(&listed));
    assert_eq!(gw.elevateai.stats().ask_lists, 1);
    let asks = gw.elevateai.stats().asks;
    let (q, cache) = ask_ok(&gw, "ai", OUTAGE_CHAT, "When will the repair be done?").await;
    assert_eq!(cache, "summary-gateway; hit");
    assert_eq!(q["id"], data[0]["id"]);
    assert_eq!(gw.elevateai.stats().asks, asks);
}

#[tokio::test]
async fn questions_need_a_provider_that_answers_them() {
    let gw = TestGateway::start().await;
    for provider in ["pbx", "cb"] {
        expect_problem(ask(&gw, provider, BILLING_CALL, "Why did she call?").await, 422, "unsupported_kind").await;
        expect_problem(list(&gw, provider, BILLING_CALL).await, 422, "unsupported_kind").await;
    }
    expect_problem(ask(&gw, "nope", BILLING_CALL, "Why did she call?").await, 422, "unknown_provider").await;
    for blank in ["", "   ", "\t\n"] {
        expect_problem(ask(&gw, "ai", BILLING_CALL, blank).await, 400, "invalid_request").await;
    }
    let with_text = json!({"provider": "ai", "conversation": {"text": "Agent: hi. ".repeat(20)}, "question": "Why?"});
    expect_problem(gw.post("/v1/questions").json(&with_text).send().await.unwrap(), 400, "invalid_request").await;
    expect_problem(ask(&gw, "ai", UNKNOWN_INTERACTION, "Why did she call?").await, 404, "not_found").await;
    let stats = gw.elevateai.stats();
    assert_eq!(stats.asks, 0, "{stats:?}");
    let r = gw.get("/v1/questions?provider=ai").send().await.unwrap();
    expect_problem(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn identical_concurrent_questions_make_one_vendor_call() {
    let gw = TestGateway::start().await;
    let question = "Did the customer accept the resolution?";
    let answers = futures::future::join_all((0..20).map(|_| ask(&gw, "ai", BILLING_CALL, question))).await;
    let mut bodies = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 200);
        bodies.push(r.json::<Value>().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b["id"] == bodies[0]["id"] && b["answer"] == bodies[0]["answer"]), "{bodies:?}");
    assert_eq!(bodies[0]["status"], "answered");
    assert_eq!(gw.elevateai.stats().asks, 1, "one vendor ask");
}

#[tokio::test]
async fn a_mapping_override_changes_the_output() {
    let gw = TestGateway::start_with(Setup {
        ai: "    mappings: { topics: { items: \"$.topics[0:1]\" }, summary: { text: \"$.missing\" } }".into(),
        ..Setup::default()
    })
    .await;
    let all_topics = fixture(BILLING_CALL)["topics"].clone();
    assert!(all_topics.as_array().unwrap().len() > 1);

    let overridden = completed(&gw, &elevateai_body("ai", "topics", BILLING_CALL)).await;
    assert_eq!(overridden["data"]["topics"], json!(["Billing dispute"]), "{overridden}");
    assert_eq!(overridden["content"]["sections"][0]["items"], json!(["Billing dispute"]));
    // The same answer without the override (ai-std keeps the built-in mapping).
    let default = completed(&gw, &elevateai_body("ai-std", "topics", BILLING_CALL)).await;
    assert_eq!(default["data"]["topics"], all_topics, "{default}");

    // A path into nothing: the vendor's answer cannot be mapped.
    let problem =
        expect_problem(gw.summarize(&elevateai_body("ai", "summary", BILLING_CALL)).await, 502, "provider_error").await;
    assert_eq!(problem["provider"], "ai", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("mappings.summary"), "{problem}");
    completed(&gw, &elevateai_body("ai-std", "summary", BILLING_CALL)).await;
    // Kinds that are not overridden keep the defaults.
    let details = completed(&gw, &elevateai_body("ai", "details", BILLING_CALL)).await;
    assert_eq!(details["data"]["reasons"], fixture(BILLING_CALL)["details"]["reasons"]);
}

/// 30 distinct requests (no single flight between them): the six kinds of the
/// three interactions, and the summaries of each in four more languages.
fn thirty_distinct_requests() -> Vec<Value> {
    let mut bodies = Vec::new();
    for interaction in [BILLING_CALL, OUTAGE_CHAT, PROCESSING_CALL] {
        for kind in ALL_KINDS {
            bodies.push(elevateai_body("ai", kind, interaction));
        }
        for language in ["es", "pt", "de", "fr"] {
            let mut body = elevateai_body("ai", "summary", interaction);
            body["language"] = json!(language);
            bodies.push(body);
        }
    }
    assert_eq!(bodies.len(), 30);
    bodies
}

#[tokio::test]
async fn concurrent_requests_queue_at_the_vendors_limit() {
    let gw = TestGateway::start_with(Setup {
        elevateai: Some(SimOptions { latency: Duration::from_millis(100), ..SimOptions::default() }),
        ..Setup::default()
    })
    .await;
    assert!(gw.elevateai.set_processed(PROCESSING_CALL));
    let bodies = thirty_distinct_requests();
    let answers = futures::future::join_all(bodies.iter().map(|b| gw.summarize(b))).await;
    let mut ids = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 200);
        let s: Value = r.json().await.unwrap();
        assert_eq!(s["status"], "completed", "{s}");
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "30 distinct summaries");
    let stats = gw.elevateai.stats();
    assert_eq!(stats.rejected_busy, 0, "the gateway queued instead: {stats:?}");
    assert_eq!(stats.max_in_flight, 10, "they overlapped, up to the limit: {stats:?}");
    assert_eq!(stats.requests.values().sum::<u64>(), 30, "{stats:?}");
}

#[tokio::test]
async fn a_provider_above_the_vendors_limit_retries_its_429s() {
    let gw = TestGateway::start_with(Setup {
        elevateai: Some(SimOptions { latency: Duration::from_millis(100), ..SimOptions::default() }),
        ai: "    max_concurrency: 20".into(),
        ..Setup::default()
    })
    .await;
    assert!(gw.elevateai.set_processed(PROCESSING_CALL));
    let bodies = thirty_distinct_requests();
    let answers = futures::future::join_all(bodies.iter().map(|b| gw.summarize(b))).await;
    let mut ok = 0;
    for r in answers {
        match r.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed");
            }
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                expect_problem(r, 503, "overloaded").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0);
    let stats = gw.elevateai.stats();
    assert!(stats.rejected_busy > 0, "the vendor refused some: {stats:?}");
    assert!(stats.max_in_flight <= 10, "{stats:?}");
    assert!(stats.requests.values().sum::<u64>() > 30, "429s were retried: {stats:?}");
    // Nothing is left in flight at the vendor.
    eventually("the simulator to be idle", || gw.elevateai.in_flight() == 0).await;
}

#[tokio::test]
async fn providers_lists_both_variants() {
    let gw = TestGateway::start().await;
    let r = gw.get("/v1/providers").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let find = |name: &str| list["data"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap();
    let ai = find("ai");
    assert_eq!(ai["type"], "elevateai");
    assert_eq!(ai["kinds"], json!(ALL_KINDS));
    assert_eq!(ai["questions"], true);
    assert_eq!(ai["input"], "reference");
    assert_eq!(ai["status"], "available");
    let std = find("ai-std");
    assert_eq!(std["type"], "elevateai");
    assert_eq!(std["kinds"], json!(STANDARD_KINDS));
    assert_eq!(std["questions"], true);
    assert_eq!(std["input"], "reference");
    for other in ["pbx", "cb"] {
        assert_eq!(find(other)["questions"], false, "{other}");
    }
    assert_eq!(gw.elevateai.stats(), SimStats::default(), "listing calls no vendor");
}

/// ElevateAI has two allowances per interaction, 5 answered and 5 failed
/// questions: spending the failed one must not refuse answerable questions.
#[tokio::test]
async fn spent_failed_questions_leave_the_answered_allowance() {
    let gw = TestGateway::start().await;
    for i in 0..5 {
        let (q, _) = ask_ok(&gw, "ai", BILLING_CALL, &format!("Her shoe size, take {i}? {MARK_UNANSWERABLE}")).await;
        assert_eq!(q["status"], "failed", "{q}");
    }
    let r = ask(&gw, "ai", BILLING_CALL, &format!("Her shoe size, take 5? {MARK_UNANSWERABLE}")).await;
    expect_problem(r, 409, "question_limit_reached").await;
    assert_eq!(gw.elevateai.stats().asks, 6);
    // The vendor still answers 5 answerable questions about it.
    let r = ask(&gw, "ai", BILLING_CALL, "Why did she call?").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let q: Value = r.json().await.unwrap();
    assert_eq!(q["status"], "answered", "{q}");
    assert_eq!(gw.elevateai.stats().asks, 7);
}
