//! Declarative providers (`type: http`) and their credentials: OAuth 2.0 client
//! credentials at the ElevateAI simulator's token endpoint (one token shared by
//! every request, one renewal for many, a refused client not asked again in a
//! loop), a vendor header and a query parameter, and logs of the real binary that
//! carry none of these secrets.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use providers::elevateai::simulator::{self as elevateai, ElevateAiSimulator, OAuthOptions, TOKEN_HEADER};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{GatewayProcess, Setup, TestGateway, client, expect_problem};

const CLIENT_ID: &str = "oauth-client-id-that-must-never-be-logged";
const CLIENT_SECRET: &str = "oauth-client-secret-that-must-never-be-logged";
const WRONG_SECRET: &str = "wrong-client-secret-that-must-never-be-logged";
const API_TOKEN: &str = "elevateai-api-token-that-must-never-be-logged";
const QUERY_SECRET: &str = "query-api-key-that-must-never-be-logged";

/// ElevateAI's summary route described as `type: http`: the provider `name` at
/// `url`, authenticated by `auth` (a YAML flow mapping); YAML lines under `providers:`.
fn elevateai_http(name: &str, url: &str, auth: &str) -> String {
    r#"  NAME:
    type: http
    base_url: URL
    input: reference
    id_pattern: "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    auth: AUTH
    request: { path: "/v1/interactions/{conversation.id}/gen-ai/cx/summary" }
    mappings:
      summary: { text: "$.summary" }
    timeout: 5s
"#
    .replace("NAME", name)
    .replace("URL", url)
    .replace("AUTH", auth)
}

/// `auth` for the simulator's token endpoint at `url`, the client's secret `secret`.
fn oauth2(url: &str, secret: &str) -> String {
    format!(
        "{{ oauth2: {{ token_url: \"{url}{}\", client_id: {CLIENT_ID}, client_secret: {secret}, scope: summaries }} }}",
        elevateai::TOKEN_PATH
    )
}

/// The ElevateAI simulator with its token endpoint (tokens living an hour), room
/// for every concurrent request, its API key [`API_TOKEN`].
async fn oauth_simulator() -> elevateai::RunningSimulator {
    ElevateAiSimulator::start(elevateai::SimOptions {
        token: API_TOKEN.into(),
        max_concurrent: 64,
        oauth: Some(OAuthOptions {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            token_lifetime: Duration::from_secs(3600),
        }),
        ..elevateai::SimOptions::default()
    })
    .await
    .unwrap()
}

/// Declares `n` chats at the simulator (with its API key): their identifiers, each
/// a request of its own for the gateway (no cache hit, no shared flight).
async fn declare_chats(sim: &elevateai::RunningSimulator, n: usize) -> Vec<String> {
    let http = client();
    let mut ids = Vec::new();
    for _ in 0..n {
        let declared = http
            .post(format!("{}{}", sim.base_url(), elevateai::INTERACTIONS_PATH))
            .header(TOKEN_HEADER, API_TOKEN)
            .json(&json!({"type": "chat", "languageTag": "en-US"}))
            .send()
            .await
            .unwrap();
        assert_eq!(declared.status(), 201);
        let body: Value = declared.json().await.unwrap();
        ids.push(body["interactionIdentifier"].as_str().unwrap().to_owned());
    }
    ids
}

fn body(provider: &str, id: &str) -> Value {
    json!({"provider": provider, "conversation": {"id": id}})
}

/// POST /v1/summaries of interaction `id`, expecting the completed summary the
/// simulator wrote for it.
async fn summarized(gw: &TestGateway, provider: &str, id: &str) {
    let r = gw.summarize(&body(provider, id)).await;
    assert_eq!(r.status(), 200, "{provider} {id}");
    let s: Value = r.json().await.unwrap();
    assert_eq!((s["status"].as_str(), s["provider_type"].as_str()), (Some("completed"), Some("http")), "{s}");
    let text = s["content"]["text"].as_str().unwrap();
    assert!(text.contains(&format!("Interaction {}", &id[..8])), "{text}");
}

/// `status` of `provider` in GET /v1/providers.
async fn status_of(gw: &TestGateway, provider: &str) -> String {
    let list: Value = gw.get("/v1/providers").send().await.unwrap().json().await.unwrap();
    let entry = list["data"].as_array().unwrap().iter().find(|p| p["name"] == provider).unwrap();
    assert_eq!(entry["type"], "http", "{entry}");
    entry["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn oauth_one_token_serves_every_request_and_a_revocation_costs_one_renewal() {
    let sim = oauth_simulator().await;
    let ids = declare_chats(&sim, 46).await;
    let providers = elevateai_http("ai-oauth", &sim.base_url(), &oauth2(&sim.base_url(), CLIENT_SECRET));
    let gw = TestGateway::start_with(Setup { providers, ..Setup::default() }).await;

    summarized(&gw, "ai-oauth", &ids[0]).await;
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (1, 1), "the first request gets a token");
    assert_eq!(stats.scopes, ["summaries"]);
    for id in &ids[1..6] {
        summarized(&gw, "ai-oauth", id).await;
    }
    futures::future::join_all(ids[6..26].iter().map(|id| summarized(&gw, "ai-oauth", id))).await;
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued, stats.stale_tokens), (1, 1, 0), "{stats:?}");
    assert_eq!(stats.requests["summary"], 26);
    assert!(stats.max_in_flight > 1, "the 20 were at the vendor together: {stats:?}");

    // Revoked before its expires_in: every request that carried it is refused,
    // and one renewal serves them all.
    assert_eq!(sim.revoke_tokens(), 1);
    futures::future::join_all(ids[26..46].iter().map(|id| summarized(&gw, "ai-oauth", id))).await;
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2), "one renewal for 20 requests: {stats:?}");
    assert!((1..=20).contains(&stats.stale_tokens), "{stats:?}");
    assert_eq!(stats.unauthorized, stats.stale_tokens, "no request went without a token");
    assert_eq!(stats.requests["summary"], 46);
    assert_eq!(status_of(&gw, "ai-oauth").await, "available");
}

#[tokio::test]
async fn a_refused_client_is_credentials_rejected_and_not_asked_again() {
    let sim = oauth_simulator().await;
    let ids = declare_chats(&sim, 11).await;
    let providers = elevateai_http("ai-oauth", &sim.base_url(), &oauth2(&sim.base_url(), WRONG_SECRET));
    let gw = TestGateway::start_with(Setup { providers, ..Setup::default() }).await;
    assert_eq!(status_of(&gw, "ai-oauth").await, "available");

    let problem = expect_problem(gw.summarize(&body("ai-oauth", &ids[0])).await, 502, "provider_error").await;
    assert_eq!(problem["provider_status"], 401, "{problem}");
    assert_eq!(problem["provider_code"], "invalid_client", "{problem}");
    assert_eq!(status_of(&gw, "ai-oauth").await, "credentials_rejected");
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.token_refusals), (1, 1));

    // Within the 30 s the refusal stands for, requests fail at once: no token request, no vendor call.
    for id in &ids[1..] {
        expect_problem(gw.summarize(&body("ai-oauth", id)).await, 502, "provider_error").await;
    }
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.token_refusals, stats.tokens_issued), (1, 1, 0), "{stats:?}");
    assert!(stats.requests.is_empty(), "{stats:?}");
    assert_eq!(status_of(&gw, "ai-oauth").await, "credentials_rejected");
}

/// A vendor that takes its key as the `api_key` query parameter:
/// `GET /v2/summaries/{id}` → `{"answer"}`, or 401 with a wrong key. Records each query.
#[derive(Clone, Default)]
struct QueryVendor {
    queries: Arc<Mutex<Vec<String>>>,
}

async fn by_query(State(vendor): State<QueryVendor>, Path(id): Path<String>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    vendor.queries.lock().unwrap().push(query.clone());
    if query.split('&').any(|pair| pair == format!("api_key={QUERY_SECRET}")) {
        axum::Json(json!({"answer": format!("Interaction {id}: the customer asked and the agent answered.")}))
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "invalid api_key"}))).into_response()
    }
}

async fn start_query_vendor() -> (String, QueryVendor) {
    let vendor = QueryVendor::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v2/summaries/{id}", get(by_query)).with_state(vendor.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, vendor)
}

/// The provider `name` at the query vendor, its key given by `value` (a YAML mapping entry).
fn query_provider(name: &str, url: &str, value: &str) -> String {
    format!(
        "  {name}:\n    type: http\n    base_url: {url}\n    input: reference\n    auth: {{ query: {{ name: api_key, {value} }} }}\n    request: {{ path: \"/v2/summaries/{{conversation.id}}\", query: {{ lang: en }} }}\n    mappings: {{ summary: {{ text: \"$.answer\" }} }}\n"
    )
}

#[tokio::test]
async fn header_and_query_credentials_reach_the_vendor() {
    let sim = oauth_simulator().await;
    let ids = declare_chats(&sim, 2).await;
    let (query_url, query_vendor) = start_query_vendor().await;
    let providers = [
        elevateai_http(
            "ai-header",
            &sim.base_url(),
            &format!("{{ header: {{ name: X-API-Token, value: {API_TOKEN} }} }}"),
        ),
        elevateai_http("ai-wrong-header", &sim.base_url(), "{ header: { name: X-API-Token, value: not-the-token } }"),
        query_provider("by-query", &query_url, &format!("value: {QUERY_SECRET}")),
    ]
    .concat();
    let gw = TestGateway::start_with(Setup { providers, ..Setup::default() }).await;

    summarized(&gw, "ai-header", &ids[0]).await;
    let stats = sim.stats();
    assert_eq!((stats.requests["summary"], stats.unauthorized, stats.token_requests), (1, 0, 0));
    expect_problem(gw.summarize(&body("ai-wrong-header", &ids[1])).await, 502, "provider_error").await;
    assert_eq!(sim.stats().unauthorized, 1);
    assert_eq!(status_of(&gw, "ai-wrong-header").await, "credentials_rejected");
    assert_eq!(status_of(&gw, "ai-header").await, "available");

    let r = gw.summarize(&body("by-query", "call-1")).await;
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert!(s["content"]["text"].as_str().unwrap().contains("Interaction call-1"), "{s}");
    assert_eq!(*query_vendor.queries.lock().unwrap(), [format!("lang=en&api_key={QUERY_SECRET}")]);
}

#[tokio::test]
async fn logs_contain_no_client_secret_access_token_or_query_key() {
    let sim = oauth_simulator().await;
    let ids = declare_chats(&sim, 3).await;
    let (query_url, query_vendor) = start_query_vendor().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let url = sim.base_url();
    let token_url = format!("{url}{}", elevateai::TOKEN_PATH);
    let yaml = [
        "server:\n  listen: 127.0.0.1:0\nauth:\n  keys:\n    crm:\n      key_env: CRM_KEY\nproviders:\n".to_owned(),
        elevateai_http(
            "ai-oauth",
            &url,
            &format!("{{ oauth2: {{ token_url: \"{token_url}\", client_id_env: OAUTH_ID, client_secret_env: OAUTH_SECRET }} }}"),
        ),
        elevateai_http(
            "ai-refused",
            &url,
            &format!("{{ oauth2: {{ token_url: \"{token_url}\", client_id_env: OAUTH_ID, client_secret_env: WRONG_SECRET }} }}"),
        ),
        elevateai_http("ai-header", &url, "{ header: { name: X-API-Token, value_env: API_TOKEN } }"),
        query_provider("by-query", &query_url, "value_env: QUERY_KEY"),
        query_provider("by-query-down", &format!("http://{closed}"), "value_env: QUERY_KEY"),
    ]
    .concat();
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let caller_key = "caller-key-of-the-declared-logs-test";
    let mut gw = GatewayProcess::spawn(
        file.path(),
        &[
            ("CRM_KEY", caller_key),
            ("OAUTH_ID", CLIENT_ID),
            ("OAUTH_SECRET", CLIENT_SECRET),
            ("WRONG_SECRET", WRONG_SECRET),
            ("API_TOKEN", API_TOKEN),
            ("QUERY_KEY", QUERY_SECRET),
        ],
    );
    let http = client();
    let summarize = async |provider: &str, id: &str| {
        let r = http
            .post(format!("{}/v1/summaries", gw.url()))
            .bearer_auth(caller_key)
            .json(&body(provider, id))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };

    // A token, a refused token and its renewal, a refused client, a header key,
    // a query key at a vendor that answers and at one that is down.
    assert_eq!(summarize("ai-oauth", &ids[0]).await, 200);
    sim.revoke_tokens();
    assert_eq!(summarize("ai-oauth", &ids[1]).await, 200);
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(summarize("ai-refused", &ids[2]).await, 502);
    assert_eq!(sim.stats().token_refusals, 1);
    assert_eq!(summarize("ai-header", &ids[2]).await, 200);
    assert_eq!(summarize("by-query", "call-1").await, 200);
    assert_eq!(query_vendor.queries.lock().unwrap().len(), 1);
    assert_eq!(summarize("by-query-down", "call-2").await, 503);

    assert_eq!(gw.terminate(), Some(0));
    let logs = gw.output();
    // The logs are really captured: the token, the refusal, the vendor error.
    for logged in [
        "obtained an OAuth 2.0 access token for the provider",
        "the OAuth 2.0 token endpoint refused the gateway's client",
        "\"provider\":\"by-query-down\"",
    ] {
        assert!(logs.contains(logged), "`{logged}` not in the logs:\n{logs}");
    }
    let mut secrets =
        [CLIENT_ID, CLIENT_SECRET, WRONG_SECRET, API_TOKEN, QUERY_SECRET, caller_key].map(str::to_owned).to_vec();
    secrets.extend(sim.issued_tokens());
    assert_eq!(secrets.len(), 8, "the simulator issued two tokens: {secrets:?}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "`{secret}` appears in the logs:\n{logs}");
    }
}
