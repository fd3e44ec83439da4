use std::sync::Arc;
use std::time::Duration;

use gateway_config::{Config, VendorConfig};

use super::simulator::{RunningSimulator, SimOptions, YeastarSimulator};
use super::*;
use crate::canonical::{Conversation, Kind, Party};

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

fn adapter_at(base_url: &str, secret: &str, timeout: &str) -> Yeastar {
    let yaml = format!(
        "auth: {{ keys: {{ t: {{ key: k }} }} }}\nproviders:\n  pbx:\n    type: yeastar\n    base_url: {base_url}\n    client_id: demo-client-id\n    client_secret: {secret}\n    timeout: {timeout}\n"
    );
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let p = &config.providers["pbx"];
    let VendorConfig::Yeastar(y) = &p.vendor else { panic!("not yeastar") };
    Yeastar::new(Arc::from("pbx"), &p.common, y).unwrap()
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
    let config = Config::from_yaml(yaml, &|_| None).unwrap();
    let p = &config.providers["pbx"];
    let VendorConfig::Yeastar(y) = &p.vendor else { panic!("not yeastar") };
    let yeastar = Yeastar::new(Arc::from("pbx"), &p.common, y).unwrap();
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
