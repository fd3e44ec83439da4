use std::sync::Arc;
use std::time::Duration;

use gateway_config::Config;
use gateway_config::providers::commbox::CommBoxConfig;

use super::simulator::{CommBoxSimulator, RunningSimulator, SimOptions};
use super::*;
use crate::canonical::Conversation;

const TEXT: &str = "Agent: Good morning, thank you for calling Acme support. Client: Hi, I noticed my invoice \
                    for March was charged twice. Agent: I see the duplicate charge and I have refunded it now.";

fn request(text: &str, language: Option<&str>) -> SummaryRequest {
    SummaryRequest {
        kind: Kind::Summary,
        language: language.map(str::to_owned),
        conversation: Conversation { text: Some(text.into()), ..Conversation::default() },
    }
}

fn adapter(base_url: &str, token: &str) -> CommBox {
    let yaml = format!(
        "auth: {{ keys: {{ t: {{ key: k }} }} }}\nproviders:\n  cb:\n    type: commbox\n    base_url: {base_url}\n    token: {token}\n    timeout: 3s\n"
    );
    let config = Config::from_yaml(&crate::registry::config_types(), &yaml, &|_| None).unwrap();
    let p = &config.providers["cb"];
    let Some(c) = p.vendor.settings::<CommBoxConfig>() else { panic!("not commbox") };
    CommBox::new(Arc::from("cb"), &p.common, c, &AnswerBudget::default()).unwrap()
}

async fn sim(processing_ms: u64) -> RunningSimulator {
    CommBoxSimulator::start(SimOptions { processing: Duration::from_millis(processing_ms), ..SimOptions::default() })
        .await
        .unwrap()
}

async fn poll_until_final(c: &CommBox, action_id: &str) -> Polled {
    for _ in 0..200 {
        match c.poll(action_id).await.unwrap() {
            Polled::Pending => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    panic!("never final");
}

#[test]
fn maps_bcp47_tags_to_commbox_language_names() {
    assert_eq!(language_name("en"), Some("english"));
    assert_eq!(language_name("pt-BR"), Some("portuguese"));
    assert_eq!(language_name("zh-Hant-TW"), Some("chinese"));
    assert_eq!(language_name("xx"), None);
    assert!(LANGUAGES.windows(2).all(|w| w[0].0 < w[1].0), "LANGUAGES must stay sorted for binary search");
}

#[test]
fn validates_before_any_call() {
    assert!(matches!(CommBox::validate(&request("too short", None)), Err(RequestProblem::TextTooShort(_))));
    assert!(CommBox::validate(&request(TEXT, None)).is_ok());
    let mut with_id = request(TEXT, None);
    with_id.conversation.id = Some("x".into());
    assert!(matches!(CommBox::validate(&with_id), Err(RequestProblem::Invalid(_))));
    let c = adapter("http://127.0.0.1:9", "t");
    assert_eq!(c.language(None).unwrap(), "en");
    assert_eq!(c.language(Some("pt-br")).unwrap(), "pt-BR");
    assert!(matches!(c.language(Some("xx")), Err(RequestProblem::UnsupportedLanguage(_))));
    assert!(matches!(c.language(Some("not a tag")), Err(RequestProblem::Invalid(_))));
}

#[tokio::test]
async fn submits_polls_and_maps_the_three_sections() {
    let sim = sim(50).await;
    let c = adapter(&sim.base_url(), "demo-commbox-token");
    let Started::Job(action_id) = c.start(&request(TEXT, Some("pt-BR")), None).await.unwrap() else {
        panic!("CommBox answers with a job")
    };
    assert!(action_id.starts_with("AI_API_SUMMARY_"), "{action_id}");
    let Polled::Completed(done) = poll_until_final(&c, &action_id).await else { panic!("not completed") };
    assert_eq!(done.content.sections.len(), 3, "{:?}", done.content.sections);
    assert!(done.content.sections.iter().all(|s| s.title.is_some() && !s.items.is_empty()));
    assert!(!done.content.text.contains("**"), "{}", done.content.text);
    assert_eq!(done.provider_ref, Some(json!({ "action_id": action_id })));
    assert_eq!(sim.stats().languages, vec!["portuguese".to_owned()]);
}

#[tokio::test]
async fn failed_jobs_and_vendor_errors_are_mapped() {
    let sim = sim(0).await;
    let c = adapter(&sim.base_url(), "demo-commbox-token");
    let text = format!("{TEXT} [sim:fail]");
    let Started::Job(id) = c.start(&request(&text, None), None).await.unwrap() else { panic!() };
    let Polled::Failed(failure) = poll_until_final(&c, &id).await else { panic!("not failed") };
    assert!(failure.vendor.message.is_some());
    let text = format!("{TEXT} [sim:fail-silent]");
    let Started::Job(id) = c.start(&request(&text, None), None).await.unwrap() else { panic!() };
    let Polled::Failed(failure) = poll_until_final(&c, &id).await else { panic!("not failed") };
    assert_eq!(failure.vendor.message, None);

    assert!(matches!(c.poll("AI_API_SUMMARY_unknown").await, Err(ProviderError::NotFound { .. })));
    sim.fail_next(500, 1);
    assert!(matches!(c.poll(&id).await, Err(ProviderError::Unavailable { .. })));
    // One 429 is retried inside the call's deadline.
    sim.fail_next(429, 1);
    assert!(matches!(c.poll(&id).await, Ok(Polled::Failed(_))));

    let wrong = adapter(&sim.base_url(), "wrong-token");
    let err = wrong.start(&request(TEXT, None), None).await.unwrap_err();
    let ProviderError::Rejected { vendor, .. } = err else { panic!("{err:?}") };
    assert_eq!(vendor.status, Some(401));
    assert_eq!(vendor.message.as_deref(), Some("Invalid or missing authentication token"));
    assert!(!wrong.is_available());
}

#[test]
fn reads_the_message_of_each_error_shape() {
    let shapes = [
        (json!({"error":"Invalid language parameter or Text too short","status":400}), "Invalid language"),
        (json!({"error":"true","message":"Invalid or missing authentication token"}), "Invalid or missing"),
        (json!({"status":404,"description":"Not found","response_time":"2025-12-14T07:26:35.97Z"}), "Not found"),
        (json!({"error":"Internal server error occurred","status":"error"}), "Internal server"),
    ];
    for (body, expected) in shapes {
        let Value::Object(body) = body else { panic!() };
        assert!(error_message(&body).unwrap().starts_with(expected), "{body:?}");
    }
}

#[test]
fn every_language_the_adapter_sends_is_one_the_simulator_accepts() {
    for (tag, name) in LANGUAGES {
        assert!(super::simulator::LANGUAGES.contains(name), "{tag} → {name}");
    }
}

/// A `Completed` poll answer of `fixtures/` → canonical content, as the adapter
/// maps it with the built-in mapping: `$.answer` read as markdown, through
/// [`crate::content::markdown::sections_from_markdown`] (no other content field is mapped
/// by default; `data` and `participants` stay empty for CommBox).
fn fixture_content(fixture: &str) -> crate::canonical::Content {
    let body: serde_json::Value = serde_json::from_str(fixture).unwrap();
    assert_eq!(body["status"], "Completed", "a fixture of a finished action");
    assert!(body["action_id"].as_str().is_some_and(|id| id.starts_with("AI_API_SUMMARY_")), "{body}");
    let answer = body["answer"].as_str().expect("a Completed answer carries markdown");
    crate::canonical::Content::from_sections(crate::content::markdown::sections_from_markdown(answer))
}

#[test]
fn the_docs_answer_maps_to_its_one_section() {
    let content = fixture_content(include_str!("fixtures/completed_docs.json"));
    assert_eq!(content.sections.len(), 1);
    insta::assert_json_snapshot!("docs_example_content", content);
}

#[test]
fn the_simulators_answers_map_to_three_titled_sections() {
    for (name, fixture) in [
        ("one_space_content", include_str!("fixtures/completed_one_space.json")),
        ("two_spaces_content", include_str!("fixtures/completed_two_spaces.json")),
        ("spanish_content", include_str!("fixtures/completed_spanish.json")),
    ] {
        let content = fixture_content(fixture);
        assert_eq!(content.sections.len(), 3, "{name}: {:?}", content.sections);
        assert!(content.sections.iter().all(|s| s.title.is_some() && !s.items.is_empty()), "{name}");
        assert!(!content.text.contains("**") && !content.markdown.contains("**"), "{name}");
        insta::assert_json_snapshot!(name, content);
    }
}

#[test]
fn the_indent_of_a_fixture_does_not_change_its_content() {
    let body: serde_json::Value = serde_json::from_str(include_str!("fixtures/completed_one_space.json")).unwrap();
    let one_space = body["answer"].as_str().unwrap();
    let two_spaces = one_space.replace("\n - ", "\n  - ");
    assert_ne!(one_space, two_spaces);
    assert_eq!(
        crate::content::markdown::sections_from_markdown(&two_spaces),
        crate::content::markdown::sections_from_markdown(one_space)
    );
}
