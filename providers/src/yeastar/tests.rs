use std::sync::Arc;
use std::time::Duration;

use gateway_config::Config;
use gateway_config::providers::yeastar::YeastarConfig;

use super::simulator::{RunningSimulator, SimOptions, YeastarSimulator};
use super::*;
use crate::Provider;
use crate::canonical::{Conversation, Kind, Party};
use crate::shared::{DownSharedState, MemorySharedState, SharedState};

fn request(cdr: &str, party: Party, ext: u64) -> SummaryRequest {
    SummaryRequest {
        kind: Kind::Summary,
        language: None,
        conversation: Conversation {
            id: Some(cdr.into()),
            party: Some(party),
            extension_id: Some(ext),
            ..Conversation::default()
        },
    }
}

fn docs_request() -> SummaryRequest {
    request("20260513223234-3EE9E", Party::Caller, 3202)
}

fn adapter(sim: &RunningSimulator, secret: &str) -> Yeastar {
    adapter_at(&sim.base_url(), secret, "5s")
}

fn config(base_url: &str, secret: &str, timeout: &str) -> Config {
    let yaml = format!(
        "auth: {{ keys: {{ t: {{ key: k }} }} }}\nproviders:\n  pbx:\n    type: yeastar\n    base_url: {base_url}\n    client_id: demo-client-id\n    client_secret: {secret}\n    timeout: {timeout}\n"
    );
    Config::from_yaml(&crate::registry::config_types(), &yaml, &|_| None).unwrap()
}

fn adapter_at(base_url: &str, secret: &str, timeout: &str) -> Yeastar {
    let config = config(base_url, secret, timeout);
    let p = &config.providers["pbx"];
    let Some(y) = p.vendor.settings::<YeastarConfig>() else { panic!("not yeastar") };
    Yeastar::new(Arc::from("pbx"), &p.common, y, None, &AnswerBudget::default()).unwrap()
}

#[test]
fn maps_the_docs_example() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/getaisummary_docs.json")).unwrap();
    let Value::Object(rest) = fixture else { panic!() };
    let completed = adapter_at("http://127.0.0.1:9", "s", "1s").map_summary(Party::Caller, rest).unwrap();
    assert_eq!(completed.content.sections.len(), 3);
    assert!(completed.content.sections.iter().all(|s| s.items.len() == 3));
    assert!(!completed.content.text.contains('<') && !completed.content.markdown.contains("<p>"));
    insta::assert_json_snapshot!("docs_example_content", completed.content);
    assert_eq!(completed.provider_ref, Some(json!({"summary_id": 53, "call_id": "20260513223234-3EE9E"})));
    assert_eq!(completed.created_at, Some(UNIX_EPOCH + Duration::from_secs(1_778_682_824)));
    assert_eq!(completed.participants[0].extension.as_deref(), Some("3202"));
}

#[test]
fn accepts_src_or_dst_and_string_timestamps() {
    let rest = json!({"data": {"src": {"summary": "<p>T</p><ul><li>x</li></ul>", "created_at": "1778682830", "updated_at": 1_778_682_831, "ext_num": 3201}}});
    let Value::Object(rest) = rest else { panic!() };
    let c = adapter_at("http://127.0.0.1:9", "s", "1s").map_summary(Party::Callee, rest).unwrap();
    assert_eq!(c.created_at, Some(UNIX_EPOCH + Duration::from_secs(1_778_682_830)));
    assert_eq!(c.updated_at, Some(UNIX_EPOCH + Duration::from_secs(1_778_682_831)));
    assert_eq!(c.participants[0].extension.as_deref(), Some("3201"));
    assert_eq!(c.participants[0].role, "callee");
}

#[test]
fn a_mapping_override_follows_a_renamed_field() {
    let yaml = "auth: { keys: { t: { key: k } } }\nproviders:\n  pbx:\n    type: yeastar\n    base_url: http://127.0.0.1:9\n    client_id: i\n    client_secret: s\n    mappings: { summary: { text: \"$.data.*.summary_html\", participant_name: \"$.data.*.agent\" } }\n";
    let config = Config::from_yaml(&crate::registry::config_types(), yaml, &|_| None).unwrap();
    let p = &config.providers["pbx"];
    let Some(y) = p.vendor.settings::<YeastarConfig>() else { panic!("not yeastar") };
    let yeastar = Yeastar::new(Arc::from("pbx"), &p.common, y, None, &AnswerBudget::default()).unwrap();
    let rest = json!({"data": {"dst": {"summary_html": "<p>T</p><ul><li>x</li></ul>", "agent": "Leo"}}});
    let Value::Object(rest) = rest else { panic!() };
    let c = yeastar.map_summary(Party::Callee, rest).unwrap();
    assert_eq!(c.content.sections[0].items, ["x"]);
    assert_eq!(c.participants[0].name.as_deref(), Some("Leo"));
}

#[test]
fn errcodes_map_to_the_error_table() {
    assert!(matches!(errcode_error(60_001, None), ProviderError::NotFound { .. }));
    assert!(matches!(errcode_error(2, None), ProviderError::NotReady { .. }));
    assert!(matches!(errcode_error(70_004, None), ProviderError::Unavailable { .. }));
    let ProviderError::Rejected { vendor, .. } = errcode_error(10_005, Some("ACCESS DENIED")) else { panic!() };
    assert_eq!(vendor.code, Some(json!(10_005)));
    assert_eq!(vendor.message.as_deref(), Some("ACCESS DENIED"));
}

#[tokio::test]
async fn fetches_a_summary_with_one_login_and_a_user_agent() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = adapter(&sim, "demo-client-secret");
    for _ in 0..3 {
        let c = y.summarize(&docs_request()).await.unwrap();
        assert_eq!(c.content.sections[0].title.as_deref(), Some("Call Summary"));
    }
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.summary_calls, stats.missing_user_agent), (1, 3, 0));
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_for_many_concurrent_requests() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = Arc::new(adapter(&sim, "demo-client-secret"));
    y.summarize(&docs_request()).await.unwrap();
    // The PBX's clock passes the token's 30 minutes while the gateway's does not.
    sim.sim.advance(Duration::from_secs(31 * 60));
    sim.sim.set_latency(Duration::from_millis(20));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let y = Arc::clone(&y);
            tokio::spawn(async move { y.summarize(&docs_request()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let stats = sim.sim.stats();
    assert_eq!(stats.logins, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 1, "{stats:?}");
    assert!(stats.expired_token_answers >= 1);
}

#[tokio::test]
async fn an_expired_refresh_token_falls_back_to_one_login() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = adapter(&sim, "demo-client-secret");
    y.summarize(&docs_request()).await.unwrap();
    sim.sim.advance(Duration::from_secs(25 * 3600));
    y.summarize(&docs_request()).await.unwrap();
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.refreshes, stats.failed_logins), (2, 0, 1), "{stats:?}");
}

#[tokio::test]
async fn a_rejected_credential_is_never_retried() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = adapter(&sim, "wrong-secret");
    for _ in 0..10 {
        let err = y.summarize(&docs_request()).await.unwrap_err();
        let ProviderError::Rejected { vendor, .. } = err else { panic!("{err:?}") };
        assert_eq!(vendor.code, Some(json!(20_002)));
    }
    assert!(!y.is_available());
    let stats = sim.sim.stats();
    assert_eq!((stats.failed_logins, stats.summary_calls), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn vendor_states_map_to_errors() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = adapter(&sim, "demo-client-secret");
    let unknown = y.summarize(&request("20990101000000-00000", Party::Caller, 1)).await.unwrap_err();
    assert!(matches!(unknown, ProviderError::NotFound { .. }), "{unknown:?}");
    let processing = y.summarize(&request("20260513231500-7A1F0", Party::Caller, 3202)).await.unwrap_err();
    assert!(matches!(processing, ProviderError::NotReady { .. }), "{processing:?}");
    let callee = y.summarize(&request("20260513223234-3EE9E", Party::Callee, 3201)).await.unwrap();
    assert!(callee.content.text.contains("login problem & was transferred"), "{}", callee.content.text);
}

#[tokio::test]
async fn a_dead_vendor_is_unavailable_and_a_slow_one_times_out() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let y = adapter_at(&sim.base_url(), "demo-client-secret", "1s");
    y.summarize(&docs_request()).await.unwrap();
    sim.sim.set_latency(Duration::from_secs(30));
    let slow = tokio::time::timeout(Duration::from_secs(20), y.summarize(&docs_request())).await.unwrap();
    assert!(matches!(slow, Err(ProviderError::Timeout { .. })), "{slow:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = adapter_at(&format!("http://{closed}"), "demo-client-secret", "1s");
    let down = dead.summarize(&docs_request()).await.unwrap_err();
    assert!(matches!(down, ProviderError::Unavailable { .. }), "{down:?}");
}

/// Two replicas of the gateway: the same provider config, one shared store.
fn replicas(sim: &RunningSimulator, shared: &Arc<dyn SharedState>, timeout: &str) -> [Arc<Provider>; 2] {
    let config = config(&sim.base_url(), "demo-client-secret", timeout);
    let replica = || {
        Arc::new(
            Provider::from_config_shared(&config.providers["pbx"], Some(Arc::clone(shared)), &AnswerBudget::default())
                .unwrap(),
        )
    };
    [replica(), replica()]
}

/// `per_replica` concurrent summaries on each replica; all must succeed.
async fn summarize_on(replicas: &[Arc<Provider>], per_replica: usize) {
    let calls: Vec<_> = replicas
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, per_replica))
        .map(|p| {
            let p = Arc::clone(p);
            tokio::spawn(async move { p.start(&docs_request(), None).await })
        })
        .collect();
    for call in calls {
        let started = call.await.unwrap().unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(started, crate::Started::Done(_)));
    }
}

/// The fleet's token record, as stored.
async fn fleet_record(shared: &MemorySharedState) -> Value {
    let json = shared.get("yeastar:pbx:token").await.unwrap().expect("a fleet token record");
    serde_json::from_str(&json).unwrap()
}

#[tokio::test]
async fn two_replicas_sharing_a_store_log_in_once_and_refresh_once() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let memory = Arc::new(MemorySharedState::new());
    let shared: Arc<dyn SharedState> = memory.clone();
    let both = replicas(&sim, &shared, "5s");
    summarize_on(&both, 20).await;
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.refreshes, stats.summary_calls), (1, 0, 40), "{stats:?}");
    let record = fleet_record(&memory).await;
    assert_eq!(record["generation"], 1);
    assert!(sim.sim.issued_tokens().contains(&record["access_token"].as_str().unwrap().to_owned()));
    assert!(record["refresh_token_expires_at_ms"].as_u64() > record["access_token_expires_at_ms"].as_u64());

    // A valid local token is used without asking the store.
    let calls = memory.calls();
    summarize_on(&both, 5).await;
    assert_eq!(memory.calls(), calls, "the hot path went to the shared store");

    // The PBX's clock passes the token's 30 minutes while the gateway's does not:
    // every request on both replicas meets errcode 10004 at once.
    sim.sim.advance(Duration::from_secs(31 * 60));
    sim.sim.set_latency(Duration::from_millis(20));
    summarize_on(&both, 20).await;
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.refreshes, stats.failed_logins), (1, 1, 0), "{stats:?}");
    assert!(stats.expired_token_answers >= 2, "{stats:?}");
    assert_eq!(fleet_record(&memory).await["generation"], 2);
}

#[tokio::test]
async fn replicas_renew_on_their_own_when_the_store_is_down() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let shared: Arc<dyn SharedState> = Arc::new(DownSharedState);
    let both = replicas(&sim, &shared, "5s");
    summarize_on(&both, 10).await;
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.summary_calls), (2, 20), "one login per replica: {stats:?}");
    sim.sim.advance(Duration::from_secs(31 * 60));
    summarize_on(&both, 10).await;
    let stats = sim.sim.stats();
    assert_eq!((stats.logins, stats.refreshes, stats.failed_logins), (2, 2, 0), "{stats:?}");
}

#[tokio::test]
async fn a_renewal_lock_left_by_a_dead_replica_is_waited_out_then_taken() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let memory = Arc::new(MemorySharedState::new());
    let shared: Arc<dyn SharedState> = memory.clone();
    // A replica took the lock and died: it is held for 2 × the 500 ms timeout.
    let lock_ttl = Duration::from_secs(1);
    assert!(memory.try_lock("yeastar:pbx:renew", lock_ttl).await.unwrap().is_some());
    let started = tokio::time::Instant::now();
    let both = replicas(&sim, &shared, "500ms");
    summarize_on(&both, 5).await;
    assert!(started.elapsed() >= lock_ttl, "waited for the lock's holder: {:?}", started.elapsed());
    assert_eq!(sim.sim.stats().logins, 1);
    assert_eq!(fleet_record(&memory).await["generation"], 1);
}

#[test]
fn an_http_5xx_from_the_pbx_is_unavailable_and_other_non_200_a_bad_answer() {
    let answer = |status: u16| Answer::for_test(status, bytes::Bytes::new());
    for status in [500, 502, 504] {
        let err = parse_envelope(&answer(status)).err().unwrap();
        assert!(matches!(&err, ProviderError::Unavailable { vendor, .. } if vendor.status == Some(status)), "{err:?}");
    }
    for status in [301, 404, 418] {
        let err = parse_envelope(&answer(status)).err().unwrap();
        assert!(matches!(err, ProviderError::Rejected { .. }), "{status}: {err:?}");
    }
}

/// The docs' HTML (`content::html`) as the PBX sends it.
#[test]
fn docs_example_has_three_sections_of_three_items() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/getaisummary_docs.json")).unwrap();
    let html = fixture["data"]["dst"]["summary"].as_str().unwrap();
    let sections = crate::content::html::sections_from_html(html);
    let titles: Vec<Option<&str>> = sections.iter().map(|s| s.title.as_deref()).collect();
    assert_eq!(titles, [Some("Call Summary"), Some("Key Points"), Some("Follow-Up Actions")]);
    assert!(sections.iter().all(|s| s.items.len() == 3), "{sections:?}");
    assert_eq!(sections[0].items[0], "Kristin Hale was transferred to a human agent regarding a login issue.");
}
