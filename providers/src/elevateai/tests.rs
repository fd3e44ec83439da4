//! The adapter against the simulator: routes per variant, the vendor's codes,
//! retries inside the deadline, questions.

use std::sync::Arc;
use std::time::Duration;

use gateway_config::Config;
use gateway_config::providers::elevateai::ElevateAiConfig;

use super::simulator::{
    BILLING_CALL, ElevateAiSimulator, MARK_UNANSWERABLE, OUTAGE_CHAT, PROCESSING_CALL, RunningSimulator, SimOptions,
};
use super::*;
use crate::canonical::Conversation;
use crate::shared::{DownSharedState, MemorySharedState};

fn adapter(sim: &RunningSimulator, extra: &str) -> ElevateAi {
    adapter_at(&sim.base_url(), "demo-elevateai-token", extra)
}

fn adapter_at(base_url: &str, token: &str, extra: &str) -> ElevateAi {
    adapter_sharing(base_url, token, extra, None)
}

fn adapter_sharing(base_url: &str, token: &str, extra: &str, shared: Option<Arc<dyn SharedState>>) -> ElevateAi {
    let yaml = format!(
        "auth: {{ keys: {{ t: {{ key: k }} }} }}\nproviders:\n  ai:\n    type: elevateai\n    base_url: {base_url}\n    token: {token}\n    timeout: 3s\n{extra}\n"
    );
    let config =
        Config::from_yaml(&crate::registry::config_types(), &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let p = &config.providers["ai"];
    let Some(e) = p.vendor.settings::<ElevateAiConfig>() else { panic!("not elevateai") };
    ElevateAi::new(Arc::from("ai"), &p.common, e, shared, &AnswerBudget::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn request(kind: Kind, id: &str) -> SummaryRequest {
    SummaryRequest {
        kind,
        language: ElevateAi::language(kind, None).unwrap(),
        conversation: Conversation { id: Some(id.into()), ..Conversation::default() },
    }
}

#[tokio::test]
async fn every_kind_of_each_variant_reaches_its_route_and_maps() {
    let sim = ElevateAiSimulator::start(SimOptions { latency: Duration::ZERO, ..SimOptions::default() }).await.unwrap();
    for (variant, kinds) in [("cx", ElevateAi::CX_KINDS), ("standard", ElevateAi::STANDARD_KINDS)] {
        let ai = adapter(&sim, &format!("    variant: {variant}"));
        assert_eq!(ai.kinds(), kinds);
        for kind in kinds {
            let done = ai.summarize(&request(*kind, BILLING_CALL)).await.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert!(!done.content.sections.is_empty(), "{variant} {kind:?}");
            assert_eq!(done.provider_ref, Some(json!({"interaction_id": BILLING_CALL})));
            assert_eq!(done.data.is_some(), matches!(kind, Kind::Details | Kind::Topics | Kind::Composition));
        }
        assert_eq!(sim.stats().variants.get(variant).copied(), Some(kinds.len() as u64), "{variant}");
    }
}

#[tokio::test]
async fn summaries_ask_in_the_requested_language() {
    let sim = ElevateAiSimulator::start(SimOptions::default()).await.unwrap();
    let ai = adapter(&sim, "");
    let mut req = request(Kind::Summary, BILLING_CALL);
    let english = ai.summarize(&req).await.unwrap();
    req.language = ElevateAi::language(Kind::Summary, Some("pt-br")).unwrap();
    assert_eq!(req.language.as_deref(), Some("pt-BR"));
    let portuguese = ai.summarize(&req).await.unwrap();
    assert_ne!(english.content.text, portuguese.content.text);
    assert_eq!(sim.stats().languages, ["en", "pt-BR"]);
    assert_eq!(ElevateAi::language(Kind::Topics, Some("pt-BR")).unwrap(), None, "only summaries have a language");
    assert!(ElevateAi::language(Kind::Summary, Some("not a tag!")).is_err());
}

#[tokio::test]
async fn vendor_codes_map_to_the_error_table() {
    let sim = ElevateAiSimulator::start(SimOptions::default()).await.unwrap();
    let ai = adapter(&sim, "    not_ready_retry_after: 7s");
    let err = ai.summarize(&request(Kind::Summary, PROCESSING_CALL)).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::NotReady { retry_after, .. } if retry_after == Duration::from_secs(7)),
        "{err:?}"
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert!(matches!(ai.summarize(&request(Kind::Summary, unknown)).await, Err(ProviderError::NotFound { .. })));
    sim.fail_next(500, 1);
    let err = ai.summarize(&request(Kind::Topics, BILLING_CALL)).await.unwrap_err();
    let ProviderError::Unavailable { vendor, .. } = err else { panic!("{err:?}") };
    assert_eq!((vendor.status, vendor.code), (Some(500), Some(json!("INTERNAL_ERROR"))));

    let wrong = adapter_at(&sim.base_url(), "not-the-token", "");
    assert!(wrong.is_available());
    assert!(matches!(
        wrong.summarize(&request(Kind::Summary, BILLING_CALL)).await,
        Err(ProviderError::Rejected { .. })
    ));
    assert!(!wrong.is_available(), "a rejected token shows in /v1/providers");
}

#[tokio::test]
async fn model_timeouts_are_retried_inside_the_deadline_then_504() {
    let sim = ElevateAiSimulator::start(SimOptions { latency: Duration::ZERO, ..SimOptions::default() }).await.unwrap();
    let ai = adapter(&sim, "");
    sim.fail_next(408, 2);
    ai.summarize(&request(Kind::Summary, BILLING_CALL)).await.expect("retried past two 408s");
    assert_eq!(sim.stats().requests["summary"], 3);

    let short = adapter_at(&sim.base_url(), "demo-elevateai-token", "    timeout: 400ms");
    sim.fail_next(408, 1000);
    let started = tokio::time::Instant::now();
    let err = short.summarize(&request(Kind::Summary, BILLING_CALL)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1200), "gave up within the deadline: {:?}", started.elapsed());
    sim.fail_next(408, 0);
}

#[tokio::test]
async fn the_vendors_concurrency_refusals_are_retried() {
    // The vendor allows 2 at once; this provider (wrongly) allows 6: the vendor's
    // 429s are retried with backoff and every call still succeeds.
    let sim = ElevateAiSimulator::start(SimOptions {
        latency: Duration::from_millis(40),
        max_concurrent: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let ai = Arc::new(adapter(&sim, "    max_concurrency: 6"));
    let calls: Vec<_> = ElevateAi::CX_KINDS
        .iter()
        .map(|kind| {
            let ai = Arc::clone(&ai);
            let kind = *kind;
            tokio::spawn(async move { ai.summarize(&request(kind, OUTAGE_CHAT)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("retried until a slot was free");
    }
    let stats = sim.stats();
    assert!(stats.rejected_busy > 0, "the vendor did refuse some: {stats:?}");
    assert!(stats.max_in_flight <= 2);
}

/// Two replicas with `max_concurrency: 3` each, sharing `shared`, send 12
/// summaries at once (6 each) to a slow vendor; what the vendor saw.
async fn twelve_calls_on_two_replicas(shared: Option<Arc<dyn SharedState>>) -> super::simulator::SimStats {
    let sim = ElevateAiSimulator::start(SimOptions { latency: Duration::from_millis(150), ..SimOptions::default() })
        .await
        .unwrap();
    let extra = "    max_concurrency: 3\n    queue_timeout: 10s";
    let replica = || Arc::new(adapter_sharing(&sim.base_url(), "demo-elevateai-token", extra, shared.clone()));
    let both = [replica(), replica()];
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let ai = Arc::clone(&both[i % 2]);
            tokio::spawn(async move { ai.summarize(&request(Kind::Summary, BILLING_CALL)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap_or_else(|e| panic!("{e:?}"));
    }
    sim.stats()
}

#[tokio::test]
async fn replicas_sharing_a_store_share_the_accounts_concurrency() {
    let memory = Arc::new(MemorySharedState::new());
    let stats = twelve_calls_on_two_replicas(Some(memory.clone())).await;
    assert_eq!(stats.requests["summary"], 12);
    assert!(stats.max_in_flight <= 3, "{stats:?}");
    assert_eq!(stats.rejected_busy, 0);
    // Every slot is given back (in the background, as the calls end).
    let ttl = Duration::from_secs(60);
    let all_free = async {
        loop {
            let mut taken = Vec::new();
            while let Some(token) = memory.try_acquire_slot("elevateai:ai:slots", 3, ttl).await.unwrap() {
                taken.push(token);
            }
            for token in &taken {
                memory.release_slot("elevateai:ai:slots", token).await.unwrap();
            }
            if taken.len() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), all_free).await.expect("the fleet's slots are released");
}

#[tokio::test]
async fn without_a_shared_store_each_replica_has_its_own_cap() {
    let stats = twelve_calls_on_two_replicas(None).await;
    assert!(stats.max_in_flight > 3, "{stats:?}");
}

#[tokio::test]
async fn replicas_keep_their_own_cap_when_the_store_is_down() {
    let stats = twelve_calls_on_two_replicas(Some(Arc::new(DownSharedState))).await;
    assert_eq!(stats.requests["summary"], 12);
    assert!(stats.max_in_flight <= 6, "{stats:?}");
}

#[tokio::test]
async fn questions_are_answered_failed_or_refused_past_the_allowance() {
    let sim = ElevateAiSimulator::start(SimOptions { latency: Duration::ZERO, ..SimOptions::default() }).await.unwrap();
    let ai = adapter(&sim, "");
    let Asked::Answered(answer) = ai.ask(OUTAGE_CHAT, "When will the outage be fixed?").await.unwrap() else {
        panic!("not answered")
    };
    assert!(!answer.is_empty());
    let failed = ai.ask(OUTAGE_CHAT, &format!("What colour is the router? {MARK_UNANSWERABLE}")).await.unwrap();
    assert!(matches!(failed, Asked::Failed(_)), "{failed:?}");
    for i in 0..4 {
        assert!(matches!(ai.ask(OUTAGE_CHAT, &format!("Question {i}?")).await.unwrap(), Asked::Answered(_)));
    }
    let refused = ai.ask(OUTAGE_CHAT, "One too many?").await.unwrap();
    let Asked::LimitReached(vendor) = refused else { panic!("{refused:?}") };
    assert_eq!(vendor.status, Some(409));
    let listed = ai.questions(OUTAGE_CHAT).await.unwrap();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert_eq!(listed[0].question, "When will the outage be fixed?");
    assert_eq!(listed[0].answer.as_deref(), Some(answer.as_str()));
    assert!(listed[1].answer.is_none(), "the failed one has no answer");
    assert!(listed.iter().all(|q| q.asked_at.is_some()));
}

#[test]
fn interaction_ids_must_be_guids() {
    assert!(validate_interaction_id(Some(BILLING_CALL)).is_ok());
    assert!(validate_interaction_id(Some(&BILLING_CALL.to_uppercase())).is_ok());
    for bad in
        ["", "123", "3f6a2c1e8b4d4e7a9c2f5d1b7e9a0c41", "../../v1/interactions", "3f6a2c1e-8b4d-4e7a-9c2f-5d1b7e9a0c4g"]
    {
        assert!(matches!(validate_interaction_id(Some(bad)), Err(RequestProblem::Invalid(_))), "{bad}");
    }
    assert!(validate_interaction_id(None).is_err());
}

#[test]
fn bad_mappings_are_all_reported_with_their_paths() {
    let yaml = "auth: { keys: { t: { key: k } } }\nproviders:\n  ai:\n    type: elevateai\n    base_url: http://127.0.0.1:9\n    token: t\n    variant: standard\n    mappings:\n      summary: { text: \"$.[\" }\n      topics: { colour: \"$.x\" }\n      nonsense: { items: \"$.x\" }\n";
    let config = Config::from_yaml(&crate::registry::config_types(), yaml, &|_| None).unwrap();
    let p = &config.providers["ai"];
    let Some(e) = p.vendor.settings::<ElevateAiConfig>() else { panic!("not elevateai") };
    let Err(errors) = ElevateAi::new(Arc::from("ai"), &p.common, e, None, &AnswerBudget::default()) else {
        panic!("bad mappings accepted")
    };
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("mappings.nonsense: "), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("mappings.summary.text: `$.[` is not a valid JSONPath")));
    assert!(errors.iter().any(|e| e.starts_with("mappings.topics.colour: unknown field")));
}

/// The interactions the simulator is seeded with (`fixtures/interactions.json`).
fn fixture_interactions() -> Vec<serde_json::Value> {
    serde_json::from_str(include_str!("fixtures/interactions.json")).unwrap()
}

/// One kind's answer for an interaction, shaped as the vendor's route answers it
/// (the simulator's `gen_ai`). Both variants answer the same shape.
fn vendor_answer(interaction: &serde_json::Value, kind: Kind, language: &str) -> serde_json::Value {
    let i = interaction;
    match kind {
        Kind::Summary => serde_json::json!({ "summary": i["summary"][language] }),
        Kind::Details => i["details"].clone(),
        Kind::ActionItems => serde_json::json!({ "actionItems": i["actionItems"] }),
        Kind::Coaching => serde_json::json!({ "coachingPoints": i["coachingPoints"] }),
        Kind::Topics => serde_json::json!({ "topics": i["topics"] }),
        Kind::Composition => serde_json::json!({ "concerns": i["concerns"] }),
    }
}

/// One fixture interaction's answer of a kind, mapped: what fills the
/// summary's `content` and `data`.
#[derive(serde::Serialize)]
struct Mapped {
    interaction: String,
    content: crate::canonical::Content,
    data: Option<serde_json::Value>,
}

/// Every fixture interaction's answer of `kind` (summaries in English, the
/// default) through the built-in mapping, in the order of the file.
fn mapped_fixtures(kind: Kind) -> Vec<Mapped> {
    let mappings = crate::mapping::Mappings::build(super::mapping::TABLE, &std::collections::BTreeMap::new()).unwrap();
    let mapped: Vec<Mapped> = fixture_interactions()
        .iter()
        .map(|interaction| {
            let answer = vendor_answer(interaction, kind, "en");
            let (content, data) = super::mapping::map_kind(kind, mappings.section(kind.as_str()), &answer)
                .unwrap_or_else(|e| panic!("{kind:?} of {}: {e}", interaction["identifier"]));
            Mapped { interaction: interaction["identifier"].as_str().unwrap().to_owned(), content, data }
        })
        .collect();
    let ids: Vec<&str> = mapped.iter().map(|m| m.interaction.as_str()).collect();
    assert_eq!(ids, [BILLING_CALL, OUTAGE_CHAT, PROCESSING_CALL]);
    mapped
}

// One snapshot per kind, the same for both variants: the mapping does not see
// the variant, and the standard routes answer the cx shapes (coaching and
// composition are cx only).

#[test]
fn the_fixtures_summaries_map_to_one_paragraph_in_every_language() {
    insta::assert_json_snapshot!("summary", mapped_fixtures(Kind::Summary));
    let mappings = crate::mapping::Mappings::build(super::mapping::TABLE, &std::collections::BTreeMap::new()).unwrap();
    for interaction in fixture_interactions() {
        let summaries = interaction["summary"].as_object().unwrap();
        let mut languages: Vec<&str> = summaries.keys().map(String::as_str).collect();
        languages.sort_unstable();
        assert_eq!(languages, ["de", "en", "es", "fr", "pt"]);
        for (language, text) in summaries {
            let answer = vendor_answer(&interaction, Kind::Summary, language);
            let (content, data) =
                super::mapping::map_kind(Kind::Summary, mappings.section("summary"), &answer).unwrap();
            let text = text.as_str().unwrap();
            assert_eq!(content.text, text, "{language}");
            assert_eq!(content.sections, [crate::canonical::Section { title: None, items: vec![text.to_owned()] }]);
            assert_eq!(data, None);
        }
    }
}

#[test]
fn the_fixtures_details_map_to_sections_and_data() {
    insta::assert_json_snapshot!("details", mapped_fixtures(Kind::Details));
}

#[test]
fn the_fixtures_action_items_map_to_one_section() {
    insta::assert_json_snapshot!("action_items", mapped_fixtures(Kind::ActionItems));
}

#[test]
fn the_fixtures_coaching_points_map_to_a_section_per_category() {
    insta::assert_json_snapshot!("coaching", mapped_fixtures(Kind::Coaching));
}

#[test]
fn the_fixtures_topics_map_to_one_section_and_data() {
    insta::assert_json_snapshot!("topics", mapped_fixtures(Kind::Topics));
}

#[test]
fn the_fixtures_concerns_map_to_a_section_per_concern_and_data() {
    insta::assert_json_snapshot!("composition", mapped_fixtures(Kind::Composition));
}
