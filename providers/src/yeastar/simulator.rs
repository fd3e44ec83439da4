//! A Yeastar P-Series PBX, as far as the gateway talks to one.
//!
//! Faithful to PROVIDERS.md: tokens from `get_token` live 30 minutes and refresh
//! tokens 24 hours *on the simulator's own clock* (tests move it with
//! [`YeastarSimulator::advance`] or `POST /_sim/clock`); `refresh_token` rotates
//! the refresh token; 5 consecutive failed authentications block the caller
//! (errcode 70004); every error is HTTP 200 with a non-zero errcode; a request
//! without `User-Agent` is refused; `getaisummary` is v2.0 only, wants exactly one
//! of `src_ext_id` / `dst_ext_id`, and answers under `data.src` or `data.dst` —
//! for the docs' example under `dst` although it is asked with `src_ext_id`.
//!
//! Run it in-process ([`YeastarSimulator::start`]) or as a process
//! (`summary-gateway simulate yeastar --listen 127.0.0.1:9001`).
//!
//! Test hooks (not part of Yeastar's API): `GET /_sim/stats` (with the last
//! W3C `traceparent` received, to check trace propagation),
//! `POST /_sim/clock {"advance_secs"}`, `POST /_sim/latency {"millis"}`,
//! `POST /_sim/records` (a [`SimRecord`]).
//!
//! [guess]es, where Yeastar's docs are silent: a wrong client id/secret is
//! errcode 20002; an unknown or expired access token is 10004 ("TOKEN EXPIRED");
//! a missing `User-Agent` gets HTTP 403 with an empty body; the AI receptionist's
//! summaries answer 60001.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::sim_hooks::{self, SimControls};

/// How the simulated PBX is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub client_id: String,
    pub client_secret: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Added before each `getaisummary` answer (the vendor's own time).
    pub latency: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            client_id: "demo-client-id".into(),
            client_secret: "demo-client-secret".into(),
            access_ttl: Duration::from_secs(1800),
            refresh_ttl: Duration::from_secs(86_400),
            latency: Duration::ZERO,
        }
    }
}

/// The state of a call leg's summary at the PBX.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    #[default]
    Ready,
    /// Still being summarized: errcode 2.
    Processing,
    /// Made by the AI receptionist: cannot be fetched.
    AiReceptionist,
}

/// One summary the PBX holds: a call leg, the party (`src`/`dst`) and extension
/// asked for, and the record it answers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimRecord {
    pub cdr_id: String,
    /// `src` (asked with `src_ext_id`) or `dst` (`dst_ext_id`).
    pub party: String,
    pub ext_id: u64,
    /// The key the answer is under, when it differs from `party` (the docs' quirk).
    #[serde(default)]
    pub answer_key: Option<String>,
    #[serde(default)]
    pub state: RecordState,
    /// The object under `data.<key>`.
    pub summary: Value,
}

impl SimRecord {
    fn key(&self) -> (String, String, u64) {
        (self.cdr_id.clone(), self.party.clone(), self.ext_id)
    }
}

/// What the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Successful `get_token` calls.
    pub logins: u64,
    /// `get_token` / `refresh_token` calls refused for bad credentials.
    pub failed_logins: u64,
    /// Successful `refresh_token` calls.
    pub refreshes: u64,
    /// `getaisummary` calls (any outcome).
    pub summary_calls: u64,
    /// Answers with errcode 10004.
    pub expired_token_answers: u64,
    /// Requests refused for a missing `User-Agent`.
    pub missing_user_agent: u64,
    /// The `traceparent` header of the last request that had one.
    #[serde(default)]
    pub last_traceparent: Option<String>,
}

struct Tokens {
    /// access token → expiry on the simulator's clock.
    access: HashMap<String, Instant>,
    /// refresh token → expiry.
    refresh: HashMap<String, Instant>,
}

struct SimState {
    clock_offset: Duration,
    tokens: Tokens,
    consecutive_failures: u32,
    /// (cdr_id, party, ext_id) → record.
    records: HashMap<(String, String, u64), SimRecord>,
    stats: SimStats,
    latency: Duration,
    /// Every access and refresh token handed out, for tests that look for leaks.
    issued: Vec<String>,
}

struct Inner {
    options: SimOptions,
    state: Mutex<SimState>,
}

/// A simulated Yeastar PBX. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct YeastarSimulator {
    inner: Arc<Inner>,
}

/// A simulator serving on a local port (stops when dropped).
pub type RunningSimulator = sim_hooks::Running<YeastarSimulator>;

/// This simulator in the registry: `simulate yeastar`, and the demo's `pbx-demo`.
pub static SIMULATOR: sim_hooks::Simulator = sim_hooks::Simulator {
    vendor: "Yeastar",
    about: "Yeastar P-Series (`/openapi/...`), seeded with the docs' example",
    listen: "127.0.0.1:9001",
    flags: &[
        sim_hooks::SimFlag {
            long: "client-id",
            value_name: "CLIENT_ID",
            default: "demo-client-id",
            help: None,
            check: sim_hooks::parses_as::<String>,
        },
        sim_hooks::SimFlag {
            long: "client-secret",
            value_name: "CLIENT_SECRET",
            default: "demo-client-secret",
            help: None,
            check: sim_hooks::parses_as::<String>,
        },
    ],
    serve: |listener, flags| {
        let options = match flags {
            None => SimOptions::default(),
            Some(flags) => SimOptions {
                client_id: flags.get("client-id")?,
                client_secret: flags.get("client-secret")?,
                ..SimOptions::default()
            },
        };
        YeastarSimulator::new(options).serve_on(listener).map(Into::into).map_err(|e| e.to_string())
    },
    demo_banner: |addr, key| {
        format!(
            r#"  # Yeastar (synchronous): a call leg's summary
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {key}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"pbx-demo","conversation":{{"id":"20260513223234-3EE9E","party":"caller","extension_id":3202}}}}'
"#
        )
    },
};

/// The records of the fixtures: the docs' example plus `fixtures/records.json`.
pub fn fixture_records() -> Vec<SimRecord> {
    let docs: Value = serde_json::from_str(include_str!("fixtures/getaisummary_docs.json")).unwrap_or(Value::Null);
    let mut records = vec![SimRecord {
        cdr_id: "20260513223234-3EE9E".into(),
        party: "src".into(),
        ext_id: 3202,
        answer_key: Some("dst".into()),
        state: RecordState::Ready,
        summary: docs["data"]["dst"].clone(),
    }];
    records.extend(serde_json::from_str::<Vec<SimRecord>>(include_str!("fixtures/records.json")).unwrap_or_default());
    records
}

impl YeastarSimulator {
    /// A simulator seeded with the fixtures.
    pub fn new(options: SimOptions) -> Self {
        let latency = options.latency;
        Self {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(SimState {
                    clock_offset: Duration::ZERO,
                    tokens: Tokens { access: HashMap::new(), refresh: HashMap::new() },
                    consecutive_failures: 0,
                    records: fixture_records().into_iter().map(|r| (r.key(), r)).collect(),
                    stats: SimStats::default(),
                    latency,
                    issued: Vec::new(),
                }),
            }),
        }
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(options: SimOptions) -> std::io::Result<RunningSimulator> {
        sim_hooks::Running::start(Self::new(options)).await
    }

    /// Serves on a bound listener in a background task.
    pub fn serve_on(self, listener: TcpListener) -> std::io::Result<RunningSimulator> {
        sim_hooks::Running::serve(self, listener)
    }

    /// The simulator's HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/openapi/v1.0/get_token", post(get_token))
            .route("/openapi/v1.0/refresh_token", post(refresh_token))
            .route("/openapi/v1.0/del_token", get(del_token))
            .route("/openapi/v2.0/cdr/getaisummary", get(get_ai_summary))
            .route("/_sim/stats", get(stats))
            .route("/_sim/clock", post(sim_hooks::advance_clock::<Self>))
            .route("/_sim/latency", post(sim_hooks::set_latency::<Self>))
            .route("/_sim/records", post(add_record))
            .fallback(no_such_interface)
            .layer(axum::middleware::from_fn_with_state(self.clone(), note_traceparent))
            .with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panicking handler must not wedge the simulator for the rest of a test.
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the simulator's clock forward (tokens expire on it).
    pub fn advance(&self, by: Duration) {
        self.state().clock_offset += by;
    }

    /// What it has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats.clone()
    }

    /// Sets the time each `getaisummary` answer takes.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Every access and refresh token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Adds (or replaces) a summary record.
    pub fn add_record(&self, record: SimRecord) {
        self.state().records.insert(record.key(), record);
    }
}

impl SimState {
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn issue(&mut self, options: &SimOptions) -> Value {
        let now = self.now();
        let access = uuid::Uuid::new_v4().simple().to_string();
        let refresh = uuid::Uuid::new_v4().simple().to_string();
        self.tokens.access.insert(access.clone(), now + options.access_ttl);
        self.tokens.refresh.insert(refresh.clone(), now + options.refresh_ttl);
        self.issued.extend([access.clone(), refresh.clone()]);
        self.consecutive_failures = 0;
        json!({
            "errcode": 0,
            "errmsg": "SUCCESS",
            "access_token_expire_time": options.access_ttl.as_secs(),
            "access_token": access,
            "refresh_token_expire_time": options.refresh_ttl.as_secs(),
            "refresh_token": refresh,
        })
    }

    /// Counts a failed authentication; the 5th in a row blocks the caller.
    fn auth_failed(&mut self) {
        self.stats.failed_logins += 1;
        self.consecutive_failures += 1;
    }

    fn blocked(&self) -> bool {
        self.consecutive_failures >= 5
    }
}

fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({ "errcode": code, "errmsg": msg })).into_response()
}

fn has_user_agent(headers: &HeaderMap) -> bool {
    headers.get(header::USER_AGENT).is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
}

fn refuse_without_user_agent(sim: &YeastarSimulator, headers: &HeaderMap) -> Option<Response> {
    if has_user_agent(headers) {
        return None;
    }
    sim.state().stats.missing_user_agent += 1;
    Some(StatusCode::FORBIDDEN.into_response())
}

async fn get_token(State(sim): State<YeastarSimulator>, headers: HeaderMap, body: Option<Json<Value>>) -> Response {
    if let Some(r) = refuse_without_user_agent(&sim, &headers) {
        return r;
    }
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let (Some(username), Some(password)) = (body["username"].as_str(), body["password"].as_str()) else {
        return errcode(40_002, "PARAMETER ERROR");
    };
    let options = &sim.inner.options;
    let mut state = sim.state();
    if state.blocked() {
        return errcode(70_004, "IP BLOCKED");
    }
    if username != options.client_id || password != options.client_secret {
        state.auth_failed();
        return errcode(20_002, "USERNAME OR PASSWORD ERROR");
    }
    state.stats.logins += 1;
    Json(state.issue(options)).into_response()
}

async fn refresh_token(State(sim): State<YeastarSimulator>, headers: HeaderMap, body: Option<Json<Value>>) -> Response {
    if let Some(r) = refuse_without_user_agent(&sim, &headers) {
        return r;
    }
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let Some(refresh) = body["refresh_token"].as_str() else {
        return errcode(40_002, "PARAMETER ERROR");
    };
    let options = &sim.inner.options;
    let mut state = sim.state();
    if state.blocked() {
        return errcode(70_004, "IP BLOCKED");
    }
    let now = state.now();
    // Rotation: a refresh token works once.
    match state.tokens.refresh.remove(refresh) {
        Some(expiry) if now < expiry => {
            state.stats.refreshes += 1;
            Json(state.issue(options)).into_response()
        }
        _ => {
            state.auth_failed();
            errcode(10_004, "TOKEN EXPIRED")
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn del_token(State(sim): State<YeastarSimulator>, Query(q): Query<TokenQuery>) -> Response {
    if let Some(token) = q.access_token {
        sim.state().tokens.access.remove(&token);
    }
    errcode(0, "SUCCESS")
}

async fn get_ai_summary(
    State(sim): State<YeastarSimulator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = refuse_without_user_agent(&sim, &headers) {
        return r;
    }
    let latency = {
        let mut state = sim.state();
        state.stats.summary_calls += 1;
        state.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut state = sim.state();
    let now = state.now();
    let valid = q.get("access_token").and_then(|t| state.tokens.access.get(t)).is_some_and(|expiry| now < *expiry);
    if !valid {
        state.stats.expired_token_answers += 1;
        return errcode(10_004, "TOKEN EXPIRED");
    }
    let Some(cdr_id) = q.get("cdr_id").filter(|c| !c.is_empty()) else {
        return errcode(40_002, "PARAMETER ERROR");
    };
    let (party, ext) = match (q.get("src_ext_id"), q.get("dst_ext_id")) {
        (Some(e), None) => ("src", e),
        (None, Some(e)) => ("dst", e),
        _ => return errcode(40_002, "PARAMETER ERROR"),
    };
    let Ok(ext) = ext.parse::<u64>() else {
        return errcode(40_001, "PARAMETER FORMAT ERROR");
    };
    let found = state.records.get(&(cdr_id.clone(), party.to_owned(), ext));
    match found {
        None => errcode(60_001, "DATA NOT FOUND"),
        Some(r) if r.state == RecordState::Processing => errcode(2, "PROCESSING"),
        Some(r) if r.state == RecordState::AiReceptionist => errcode(60_001, "DATA NOT FOUND"),
        Some(r) => {
            let key = r.answer_key.clone().unwrap_or_else(|| party.to_owned());
            Json(json!({ "errcode": 0, "errmsg": "SUCCESS", "data": { key: r.summary } })).into_response()
        }
    }
}

/// Keeps the request's `traceparent`, if any, in the stats.
async fn note_traceparent(
    State(sim): State<YeastarSimulator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(traceparent) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        sim.state().stats.last_traceparent = Some(traceparent.to_owned());
    }
    next.run(request).await
}

async fn no_such_interface() -> Response {
    errcode(10_001, "INTERFACE NOT EXISTED")
}

async fn stats(State(sim): State<YeastarSimulator>) -> Json<SimStats> {
    Json(sim.stats())
}

impl SimControls for YeastarSimulator {
    const NAME: &'static str = "yeastar";

    fn routes(&self) -> Router {
        self.router()
    }

    fn advance(&self, by: Duration) {
        Self::advance(self, by);
    }

    fn set_latency(&self, latency: Duration) {
        Self::set_latency(self, latency);
    }
}

async fn add_record(State(sim): State<YeastarSimulator>, Json(r): Json<SimRecord>) -> StatusCode {
    sim.add_record(r);
    StatusCode::NO_CONTENT
}
