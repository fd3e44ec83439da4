//! A CommBox AI Conversation Summary service, as far as the gateway talks to one.
//!
//! Faithful to PROVIDERS.md: a static `Authorization: Bearer <key>`;
//! `POST /ai-services/summary_conversation` `{text, language, callback_url?}` wants
//! at least 150 characters of text and a language *name* and answers **200**
//! `{"status":"Initialized","answer":null,"action_id":"AI_API_SUMMARY_<uuid>"}`,
//! with `answer` in turn `null`, `""` and absent (all three are documented);
//! `GET /ai-services/summary_conversation?action_id=...` answers `Pending`, then
//! `Completed` with a markdown `answer` or `Failed` with an optional
//! `error_message`; actions expire after 12 hours *on the simulator's own clock*
//! (tests move it with [`CommBoxSimulator::advance`] or `POST /_sim/clock`); every
//! error status has its own body shape (401 `{"error":"true","message"}`, 400
//! `{"error","status":400}`, 404 `{"status":404,"description","response_time"}`,
//! 500 `{"error","status":"error"}`).
//!
//! The completed markdown is three bullet sections with bold headers, as CommBox
//! writes them: the client's reason for contact, the agent's actions and the outcome,
//! picked out of the submitted conversation by speaker and cue words and told in the
//! third person (see [`summary`]); headers translated for english, spanish,
//! portuguese, french and german. The nested items are indented by one space (as in
//! the vendor's docs, which CommonMark reads as siblings, not children) on every other
//! action and by two on the rest, so a parser has to cope with both.
//!
//! An action is final `processing` ([`SimOptions`]) after it was submitted. Markers in
//! the submitted text choose how it ends: `[sim:fail]` fails it with an
//! `error_message`, `[sim:fail-silent]` fails it without one, `[sim:hold]` keeps it
//! `Pending` until [`CommBoxSimulator::release`] (or `POST /_sim/release`).
//!
//! Run it in-process ([`CommBoxSimulator::start`]) or serve [`CommBoxSimulator::router`].
//!
//! Test hooks (not part of CommBox's API): `GET /_sim/stats` (a [`SimStats`]),
//! `POST /_sim/clock {"advance_secs"}`, `POST /_sim/latency {"millis"}`,
//! `POST /_sim/fail_next {"status","count"}` (the next `count` requests to the two
//! summary routes, after authentication, answer `status`) and `POST /_sim/release`
//! (releases every held action).
//!
//! [guess]es, where CommBox's docs are silent: an expired or unknown `action_id`, a
//! poll without one and an unknown path answer the 404 body; throttling is 429
//! `{"error":"Too many requests","status":429}`; a language name must be lowercase;
//! a non-string field, like a missing one, is a 400; the callback is a `POST` of the
//! body a poll would answer once the action is final, sent once, never retried;
//! `error_message` is "Summary generation failed".

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::sim_hooks::{self, SimControls};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

mod summary;

/// The one vendor route: `POST` submits, `GET` polls.
pub const SUMMARY_PATH: &str = "/ai-services/summary_conversation";

/// The language names CommBox accepts (lowercase).
pub const LANGUAGES: &[&str] = &[
    "english",
    "spanish",
    "portuguese",
    "french",
    "german",
    "italian",
    "dutch",
    "hebrew",
    "arabic",
    "russian",
    "chinese",
    "japanese",
    "korean",
    "hindi",
    "turkish",
    "polish",
    "ukrainian",
    "swedish",
    "danish",
    "norwegian",
    "finnish",
    "greek",
    "czech",
    "romanian",
    "hungarian",
    "thai",
    "vietnamese",
    "indonesian",
    "malay",
];

/// Shorter texts are refused.
pub const MIN_TEXT_CHARS: usize = 150;

/// How long an action can be polled, on the simulator's clock.
pub const RETENTION: Duration = Duration::from_secs(12 * 3600);

/// The marker that makes an action fail with an `error_message`.
pub const MARK_FAIL: &str = "[sim:fail]";
/// The marker that makes an action fail without an `error_message`.
pub const MARK_FAIL_SILENT: &str = "[sim:fail-silent]";
/// The marker that keeps an action `Pending` until released.
pub const MARK_HOLD: &str = "[sim:hold]";

/// The `error_message` of a failed action.
pub const FAILURE_MESSAGE: &str = "Summary generation failed";

const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How the simulated service is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The API key expected after `Bearer `.
    pub token: String,
    /// Time from submission until an action is final (Completed or Failed).
    pub processing: Duration,
    /// Added before every answer of the two summary routes (the vendor's own time).
    pub latency: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self { token: "demo-commbox-token".into(), processing: Duration::from_secs(2), latency: Duration::ZERO }
    }
}

/// What the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Accepted submissions (HTTP 200).
    pub submits: u64,
    /// Submissions refused with HTTP 400.
    pub rejected: u64,
    /// Requests refused with HTTP 401.
    pub unauthorized: u64,
    /// Polls, answered with any status.
    pub polls: u64,
    /// The language of every accepted submission, in order.
    pub languages: Vec<String>,
    /// Callbacks answered with a 2xx.
    pub callbacks_sent: u64,
    /// Callbacks that could not be delivered or were answered otherwise.
    pub callbacks_failed: u64,
}

/// One submission as the simulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAction {
    pub action_id: String,
    pub text: String,
    pub language: String,
    pub callback_url: Option<String>,
}

/// How an action ends.
enum Outcome {
    Completed(String),
    Failed(Option<String>),
}

struct Action {
    recorded: SimAction,
    /// Real time, for `processing`.
    submitted_at: Instant,
    /// On the simulator's clock, for the 12 h expiry.
    created: Instant,
    held: bool,
    outcome: Outcome,
}

impl Action {
    fn is_final(&self, processing: Duration) -> bool {
        !self.held && Instant::now() >= self.submitted_at + processing
    }

    /// The body a poll answers (and, once final, the callback carries).
    fn body(&self, processing: Duration) -> Value {
        let id = &self.recorded.action_id;
        if !self.is_final(processing) {
            return json!({ "status": "Pending", "action_id": id });
        }
        match &self.outcome {
            Outcome::Completed(markdown) => json!({ "status": "Completed", "answer": markdown, "action_id": id }),
            Outcome::Failed(Some(message)) => json!({ "status": "Failed", "action_id": id, "error_message": message }),
            Outcome::Failed(None) => json!({ "status": "Failed", "action_id": id }),
        }
    }
}

/// An injected fault: the next `remaining` summary requests answer `status`.
struct Fault {
    status: StatusCode,
    remaining: u32,
}

struct SimState {
    clock_offset: Duration,
    latency: Duration,
    actions: HashMap<String, Action>,
    /// Action ids in submission order.
    order: Vec<String>,
    fault: Option<Fault>,
    stats: SimStats,
    /// The callback tasks still running, aborted with the simulator.
    callbacks: Vec<AbortHandle>,
}

impl SimState {
    /// Real time moved by `advance`.
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    /// An action that can still be polled.
    fn live(&self, id: &str) -> Option<&Action> {
        let now = self.now();
        self.actions.get(id).filter(|a| now.saturating_duration_since(a.created) <= RETENTION)
    }

    fn abort_callbacks(&mut self) {
        for task in self.callbacks.drain(..) {
            task.abort();
        }
    }
}

struct Inner {
    options: SimOptions,
    state: Mutex<SimState>,
    /// Woken by `release`; callback tasks of held actions wait on it.
    released: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner).abort_callbacks();
    }
}

/// A simulated CommBox. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CommBoxSimulator {
    inner: Arc<Inner>,
}

/// A simulator serving on a local port (stops when dropped).
pub type RunningSimulator = sim_hooks::Running<CommBoxSimulator>;

/// This simulator in the registry: `simulate commbox`, and the demo's `commbox-demo`.
pub static SIMULATOR: sim_hooks::Simulator = sim_hooks::Simulator {
    vendor: "CommBox",
    about: "CommBox AI Conversation Summary (`/ai-services/summary_conversation`)",
    listen: "127.0.0.1:9002",
    flags: &[
        sim_hooks::SimFlag {
            long: "token",
            value_name: "TOKEN",
            default: "demo-commbox-token",
            help: Some("The API key it accepts (`Authorization: Bearer`)"),
            check: sim_hooks::parses_as::<String>,
        },
        sim_hooks::SimFlag {
            long: "processing",
            value_name: "PROCESSING",
            default: "2s",
            help: Some("Time from submission until a summary is final"),
            check: sim_hooks::is_duration,
        },
    ],
    serve: |listener, flags| {
        let options = match flags {
            None => SimOptions::default(),
            Some(flags) => SimOptions {
                token: flags.get("token")?,
                processing: flags.duration("processing")?,
                ..SimOptions::default()
            },
        };
        CommBoxSimulator::new(options).serve_on(listener).map(Into::into).map_err(|e| e.to_string())
    },
    demo_banner: |addr, key| {
        format!(
            r#"  # CommBox (asynchronous): 202 + Location at once, or hold up to 10 s for the result
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {key}' \
       -H 'Content-Type: application/json' -H 'Prefer: wait=10' \
       -d '{{"provider":"commbox-demo","language":"en","conversation":{{"text":"Agent: Good morning, Acme support. Client: Hi, my March invoice was charged twice and I would like the duplicate refunded. Agent: I see it, I have refunded the duplicate charge."}}}}'
"#
        )
    },
};

impl CommBoxSimulator {
    /// A simulator without actions.
    pub fn new(options: SimOptions) -> Self {
        let latency = options.latency;
        Self {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(SimState {
                    clock_offset: Duration::ZERO,
                    latency,
                    actions: HashMap::new(),
                    order: Vec::new(),
                    fault: None,
                    stats: SimStats::default(),
                    callbacks: Vec::new(),
                }),
                released: Arc::new(Notify::new()),
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
            .route(SUMMARY_PATH, post(submit).get(poll))
            .route("/_sim/stats", get(stats))
            .route("/_sim/clock", post(sim_hooks::advance_clock::<Self>))
            .route("/_sim/latency", post(sim_hooks::set_latency::<Self>))
            .route("/_sim/fail_next", post(fail_next))
            .route("/_sim/release", post(release))
            .fallback(not_found_route)
            .with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panicking handler must not wedge the simulator for the rest of a test.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the simulator's clock forward (actions expire on it).
    pub fn advance(&self, by: Duration) {
        self.state().clock_offset += by;
    }

    /// What it has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats.clone()
    }

    /// Sets the time each answer of the summary routes takes.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// The next `count` requests to the summary routes (after authentication) answer
    /// `status` with that status's CommBox body. A status that is not an HTTP status
    /// is taken as 500; `count` 0 clears the fault.
    pub fn fail_next(&self, status: u16, count: u32) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.state().fault = (count > 0).then_some(Fault { status, remaining: count });
    }

    /// Releases every held (`[sim:hold]`) action: each becomes final once its
    /// processing time has passed, at once if it already has.
    pub fn release(&self) {
        for action in self.state().actions.values_mut() {
            action.held = false;
        }
        self.inner.released.notify_waiters();
    }

    /// The ids of the accepted submissions, in order.
    pub fn action_ids(&self) -> Vec<String> {
        self.state().order.clone()
    }

    /// The accepted submissions, in order.
    pub fn actions(&self) -> Vec<SimAction> {
        let state = self.state();
        state.order.iter().filter_map(|id| state.actions.get(id)).map(|a| a.recorded.clone()).collect()
    }

    /// What every summary request goes through first: latency, authentication and an
    /// injected fault. `Some` is the answer to give instead of the route's own.
    async fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        let latency = self.state().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        if !authorized(headers, &self.inner.options.token) {
            state.stats.unauthorized += 1;
            return Some(unauthorized());
        }
        let fault = state.fault.as_mut()?;
        fault.remaining -= 1;
        let status = fault.status;
        if fault.remaining == 0 {
            state.fault = None;
        }
        Some(status_body(status, state.clock_offset))
    }

    /// Records an accepted submission and answers it.
    fn accept(&self, submission: Submission) -> Value {
        let mut state = self.state();
        let index = state.order.len();
        let action_id = format!("AI_API_SUMMARY_{}", uuid::Uuid::new_v4());
        let text = &submission.text;
        let outcome = if text.contains(MARK_FAIL) {
            Outcome::Failed(Some(FAILURE_MESSAGE.into()))
        } else if text.contains(MARK_FAIL_SILENT) {
            Outcome::Failed(None)
        } else {
            // The docs' one-space indent on every other action, two spaces on the rest.
            let indent = if index.is_multiple_of(2) { " " } else { "  " };
            Outcome::Completed(summary::markdown(text, &submission.language, indent))
        };
        let action = Action {
            held: text.contains(MARK_HOLD),
            outcome,
            submitted_at: Instant::now(),
            created: state.now(),
            recorded: SimAction {
                action_id: action_id.clone(),
                text: submission.text,
                language: submission.language,
                callback_url: submission.callback_url.filter(|u| !u.is_empty()),
            },
        };
        state.stats.submits += 1;
        state.stats.languages.push(action.recorded.language.clone());
        let wants_callback = action.recorded.callback_url.is_some();
        state.actions.insert(action_id.clone(), action);
        state.order.push(action_id.clone());
        if wants_callback {
            let task = tokio::spawn(deliver_callback(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.released),
                action_id.clone(),
            ));
            state.callbacks.retain(|t| !t.is_finished());
            state.callbacks.push(task.abort_handle());
        }
        // All three shapes of `answer` are documented; hand them out in turn.
        match index % 3 {
            0 => json!({ "status": "Initialized", "answer": null, "action_id": action_id }),
            1 => json!({ "status": "Initialized", "answer": "", "action_id": action_id }),
            _ => json!({ "status": "Initialized", "action_id": action_id }),
        }
    }

    /// Where an action's callback stands.
    fn callback_due(&self, id: &str) -> CallbackDue {
        let state = self.state();
        let Some(action) = state.live(id) else {
            return CallbackDue::Never;
        };
        if action.held {
            return CallbackDue::Held;
        }
        let processing = self.inner.options.processing;
        if !action.is_final(processing) {
            return CallbackDue::NotYet(action.submitted_at + processing);
        }
        match &action.recorded.callback_url {
            Some(url) => CallbackDue::Now(url.clone(), action.body(processing)),
            None => CallbackDue::Never,
        }
    }
}

enum CallbackDue {
    Held,
    /// Released, but its processing time has not passed.
    NotYet(Instant),
    Now(String, Value),
    /// Expired (or no callback wanted).
    Never,
}

/// Waits until the action is final (its processing time passed, then a release if
/// held — or the other way round), then posts its poll body to its callback URL once.
/// Holds only a weak reference so a dropped simulator is not kept alive by its tasks.
async fn deliver_callback(sim: Weak<Inner>, released: Arc<Notify>, id: String) {
    let (url, body) = loop {
        // Registered before the check, so a release between the check and the wait is not missed.
        let mut notified = pin!(released.notified());
        notified.as_mut().enable();
        let Some(inner) = sim.upgrade() else { return };
        let due = CommBoxSimulator { inner }.callback_due(&id);
        match due {
            CallbackDue::Now(url, body) => break (url, body),
            CallbackDue::Never => return,
            CallbackDue::NotYet(ready_at) => {
                tokio::time::sleep_until(ready_at).await;
                continue;
            }
            CallbackDue::Held => {}
        }
        notified.await;
    };
    let result = post_callback(&url, &body).await;
    let Some(inner) = sim.upgrade() else { return };
    let sim = CommBoxSimulator { inner };
    let mut state = sim.state();
    match result {
        Ok(()) => state.stats.callbacks_sent += 1,
        Err(e) => {
            tracing::warn!(action_id = %id, error = %e, "commbox simulator: callback not delivered");
            state.stats.callbacks_failed += 1;
        }
    }
}

async fn post_callback(url: &str, body: &Value) -> Result<(), String> {
    crate::outbound::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(CALLBACK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client.post(url).json(body).send().await.map_err(|e| e.without_url().to_string())?;
    if answer.status().is_success() { Ok(()) } else { Err(format!("answered HTTP {}", answer.status())) }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split_once(' ').is_some_and(|(scheme, given)| scheme.eq_ignore_ascii_case("bearer") && given.trim() == token)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": "true", "message": "Invalid or missing authentication token" })))
        .into_response()
}

fn bad_request() -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": "Invalid language parameter or Text too short", "status": 400 })))
        .into_response()
}

/// `response_time` is on the simulator's clock.
fn not_found(clock_offset: Duration) -> Response {
    let response_time = rfc3339_millis(SystemTime::now() + clock_offset);
    let body = json!({ "status": 404, "description": "Not found", "response_time": response_time });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The body CommBox answers an error status with.
fn status_body(status: StatusCode, clock_offset: Duration) -> Response {
    let body = match status {
        StatusCode::INTERNAL_SERVER_ERROR => json!({ "error": "Internal server error occurred", "status": "error" }),
        StatusCode::TOO_MANY_REQUESTS => json!({ "error": "Too many requests", "status": 429 }),
        StatusCode::BAD_REQUEST => return bad_request(),
        StatusCode::UNAUTHORIZED => return unauthorized(),
        StatusCode::NOT_FOUND => return not_found(clock_offset),
        other => json!({ "error": other.canonical_reason().unwrap_or("Error"), "status": other.as_u16() }),
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Submission {
    text: String,
    language: String,
    #[serde(default)]
    callback_url: Option<String>,
}

/// A valid submission, or `None` for the 400.
fn parse_submission(body: &[u8]) -> Option<Submission> {
    let submission: Submission = serde_json::from_slice(body).ok()?;
    let long_enough = submission.text.chars().count() >= MIN_TEXT_CHARS;
    (long_enough && LANGUAGES.contains(&submission.language.as_str())).then_some(submission)
}

async fn submit(State(sim): State<CommBoxSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = sim.gate(&headers).await {
        return answer;
    }
    let Some(submission) = parse_submission(&body) else {
        sim.state().stats.rejected += 1;
        return bad_request();
    };
    Json(sim.accept(submission)).into_response()
}

async fn poll(State(sim): State<CommBoxSimulator>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    sim.state().stats.polls += 1;
    if let Some(answer) = sim.gate(&headers).await {
        return answer;
    }
    let query = query.unwrap_or_default();
    let action_id = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "action_id").map(|(_, v)| v);
    let state = sim.state();
    match action_id.as_deref().and_then(|id| state.live(id)) {
        Some(action) => Json(action.body(sim.inner.options.processing)).into_response(),
        None => not_found(state.clock_offset),
    }
}

async fn not_found_route(State(sim): State<CommBoxSimulator>) -> Response {
    let clock_offset = sim.state().clock_offset;
    not_found(clock_offset)
}

async fn stats(State(sim): State<CommBoxSimulator>) -> Json<SimStats> {
    Json(sim.stats())
}

impl SimControls for CommBoxSimulator {
    const NAME: &'static str = "commbox";

    fn routes(&self) -> Router {
        self.router()
    }

    fn advance(&self, by: Duration) {
        Self::advance(self, by);
    }

    fn set_latency(&self, latency: Duration) {
        Self::set_latency(self, latency);
    }

    fn stop(&self) {
        self.state().abort_callbacks();
    }
}

#[derive(Deserialize)]
struct FailNext {
    status: u16,
    count: u32,
}

async fn fail_next(State(sim): State<CommBoxSimulator>, Json(f): Json<FailNext>) -> StatusCode {
    if !(400..=599).contains(&f.status) {
        return StatusCode::BAD_REQUEST;
    }
    sim.fail_next(f.status, f.count);
    StatusCode::NO_CONTENT
}

async fn release(State(sim): State<CommBoxSimulator>) -> StatusCode {
    sim.release();
    StatusCode::NO_CONTENT
}

/// `2025-12-14T07:26:35.970Z`: UTC with milliseconds, as in CommBox's 404 body.
fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "demo-commbox-token";

    async fn start(processing: Duration) -> RunningSimulator {
        CommBoxSimulator::start(SimOptions { processing, ..SimOptions::default() }).await.unwrap()
    }

    /// A text of more than 150 characters with three sentences and `marker` in it.
    fn text(marker: &str) -> String {
        format!(
            "The client noticed a double charge on the March invoice and asked for a refund. {marker} \
             The agent checked the billing history and confirmed the duplicate payment. \
             The refund was issued and the client was satisfied."
        )
    }

    fn client() -> reqwest::Client {
        crate::outbound::install_crypto_provider();
        reqwest::Client::new()
    }

    async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
        let answer = req.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap())
    }

    async fn submit(sim: &RunningSimulator, body: Value) -> (u16, Value) {
        let url = format!("{}{SUMMARY_PATH}", sim.base_url());
        send(client().post(url).bearer_auth(TOKEN).json(&body)).await
    }

    async fn submit_text(sim: &RunningSimulator, text: &str) -> String {
        let (status, body) = submit(sim, json!({ "text": text, "language": "english" })).await;
        assert_eq!(status, 200, "{body}");
        body["action_id"].as_str().unwrap().to_owned()
    }

    async fn poll(sim: &RunningSimulator, id: &str) -> (u16, Value) {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let url = format!("{}{SUMMARY_PATH}?action_id={id}", sim.base_url());
        send(client().get(url).bearer_auth(TOKEN)).await
    }

    async fn hook(sim: &RunningSimulator, path: &str, body: Value) {
        let answer = client().post(format!("{}{path}", sim.base_url())).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 204);
    }

    /// Polls until the action leaves `Pending` (bounded: about 2 s).
    async fn wait_final(sim: &RunningSimulator, id: &str) -> Value {
        for _ in 0..200 {
            let (status, body) = poll(sim, id).await;
            assert_eq!(status, 200, "{body}");
            if body["status"] != "Pending" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} stayed pending");
    }

    #[tokio::test]
    async fn refuses_a_missing_or_wrong_token() {
        let sim = start(Duration::ZERO).await;
        let url = format!("{}{SUMMARY_PATH}", sim.base_url());
        let client = client();
        let body = json!({ "text": text(""), "language": "english" });
        for req in [
            client.post(&url).json(&body),
            client.post(&url).bearer_auth("wrong").json(&body),
            client.get(format!("{url}?action_id=x")),
        ] {
            let (status, answer) = send(req).await;
            assert_eq!(status, 401);
            assert_eq!(answer, json!({"error": "true", "message": "Invalid or missing authentication token"}));
        }
        let stats = sim.sim.stats();
        assert_eq!((stats.unauthorized, stats.submits, stats.polls), (3, 0, 1));
    }

    #[tokio::test]
    async fn refuses_short_text_unknown_language_and_bad_json() {
        let sim = start(Duration::ZERO).await;
        let expected = json!({"error": "Invalid language parameter or Text too short", "status": 400});
        // 149 two-byte characters are more than 150 bytes but still too short.
        for body in [
            json!({ "text": "x".repeat(MIN_TEXT_CHARS - 1), "language": "english" }),
            json!({ "text": "é".repeat(MIN_TEXT_CHARS - 1), "language": "english" }),
            json!({ "text": text(""), "language": "klingon" }),
            json!({ "text": text(""), "language": "English" }),
            json!({ "text": text("") }),
            json!({ "text": 5, "language": "english" }),
        ] {
            assert_eq!(submit(&sim, body).await, (400, expected.clone()));
        }
        let url = format!("{}{SUMMARY_PATH}", sim.base_url());
        let not_json = client().post(url).bearer_auth(TOKEN).body("{");
        assert_eq!(send(not_json).await, (400, expected));
        let (code, _) = submit(&sim, json!({ "text": "y".repeat(MIN_TEXT_CHARS), "language": "malay" })).await;
        assert_eq!(code, 200);
        let seen = sim.stats();
        assert_eq!((seen.rejected, seen.submits), (7, 1));
        assert_eq!(seen.languages, ["malay"]);
    }

    #[tokio::test]
    async fn initialized_then_pending_then_completed() {
        let sim = start(Duration::from_millis(100)).await;
        let (status, first) = submit(&sim, json!({ "text": text(""), "language": "english" })).await;
        assert_eq!(status, 200);
        assert_eq!(first["status"], "Initialized");
        assert!(first.get("answer").is_some_and(Value::is_null));
        let id = first["action_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("AI_API_SUMMARY_") && uuid::Uuid::parse_str(&id["AI_API_SUMMARY_".len()..]).is_ok());

        assert_eq!(poll(&sim, &id).await, (200, json!({"status": "Pending", "action_id": id})));
        let done = wait_final(&sim, &id).await;
        assert_eq!(done["status"], "Completed");
        assert_eq!(done["action_id"], id.as_str());
        assert_eq!(
            done["answer"],
            "- **Client reason for contact**:\n \
             - The client noticed a double charge on the March invoice and asked for a refund.\n\
             - **Agent actions**:\n - The agent checked the billing history and confirmed the duplicate payment.\n\
             - **Outcome**:\n - The refund was issued and the client was satisfied."
        );

        // The `answer` quirk rotates: null, "", absent; the indent alternates.
        let (_, second) = submit(&sim, json!({ "text": text(""), "language": "german" })).await;
        assert_eq!(second["answer"], "");
        let (_, third) = submit(&sim, json!({ "text": text(""), "language": "english" })).await;
        assert!(third.get("answer").is_none());
        let german = wait_final(&sim, second["action_id"].as_str().unwrap()).await;
        assert!(german["answer"].as_str().unwrap().starts_with("- **Kontaktgrund des Kunden**:\n  - The client"));
        assert_eq!(
            sim.sim.action_ids(),
            [id.as_str(), second["action_id"].as_str().unwrap(), third["action_id"].as_str().unwrap()]
        );
        assert_eq!(sim.sim.stats().languages, ["english", "german", "english"]);
    }

    #[tokio::test]
    async fn markers_fail_and_hold() {
        let sim = start(Duration::ZERO).await;
        let fail = submit_text(&sim, &text(MARK_FAIL)).await;
        let silent = submit_text(&sim, &text(MARK_FAIL_SILENT)).await;
        let held = submit_text(&sim, &text(MARK_HOLD)).await;
        assert_eq!(
            poll(&sim, &fail).await,
            (200, json!({"status": "Failed", "action_id": fail, "error_message": FAILURE_MESSAGE}))
        );
        assert_eq!(poll(&sim, &silent).await, (200, json!({"status": "Failed", "action_id": silent})));
        assert_eq!(poll(&sim, &held).await, (200, json!({"status": "Pending", "action_id": held})));
        hook(&sim, "/_sim/release", json!({})).await;
        let (_, done) = poll(&sim, &held).await;
        assert_eq!(done["status"], "Completed");
        assert!(!done["answer"].as_str().unwrap().contains("[sim:"));
    }

    #[tokio::test]
    async fn unknown_and_expired_actions_are_not_found() {
        let sim = start(Duration::ZERO).await;
        let id = submit_text(&sim, &text("")).await;
        let (status, body) = poll(&sim, "AI_API_SUMMARY_nope").await;
        assert_eq!(status, 404);
        assert_eq!((body["status"].as_u64(), body["description"].as_str()), (Some(404), Some("Not found")));
        let time = body["response_time"].as_str().unwrap();
        assert_eq!((time.len(), &time[10..11], &time[19..20], &time[23..]), (24, "T", ".", "Z"), "{time}");
        let url = format!("{}{SUMMARY_PATH}", sim.base_url());
        assert_eq!(send(client().get(url).bearer_auth(TOKEN)).await.0, 404);

        hook(&sim, "/_sim/clock", json!({ "advance_secs": 12 * 3600 - 1 })).await;
        assert_eq!(poll(&sim, &id).await.0, 200);
        hook(&sim, "/_sim/clock", json!({ "advance_secs": 2 })).await;
        assert_eq!(poll(&sim, &id).await.0, 404);
        assert_eq!(sim.sim.stats().polls, 4);
    }

    #[tokio::test]
    async fn injected_faults() {
        let sim = start(Duration::ZERO).await;
        hook(&sim, "/_sim/fail_next", json!({ "status": 500, "count": 2 })).await;
        let server_error = json!({"error": "Internal server error occurred", "status": "error"});
        // Authentication comes first and does not use up the fault.
        let url = format!("{}{SUMMARY_PATH}", sim.base_url());
        assert_eq!(send(client().get(&url)).await.0, 401);
        assert_eq!(submit(&sim, json!({ "text": text(""), "language": "english" })).await, (500, server_error.clone()));
        assert_eq!(poll(&sim, "x").await, (500, server_error));
        assert_eq!(poll(&sim, "x").await.0, 404);

        sim.sim.fail_next(429, 1);
        let throttled = json!({"error": "Too many requests", "status": 429});
        assert_eq!(submit(&sim, json!({ "text": text(""), "language": "english" })).await, (429, throttled));
        assert_eq!(submit(&sim, json!({ "text": text(""), "language": "english" })).await.0, 200);
        assert_eq!(sim.sim.stats().submits, 1);
    }

    #[tokio::test]
    async fn latency_delays_answers() {
        let sim = start(Duration::ZERO).await;
        hook(&sim, "/_sim/latency", json!({ "millis": 50 })).await;
        let started = std::time::Instant::now();
        assert_eq!(poll(&sim, "x").await.0, 404);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn callbacks_carry_the_final_answer() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let receiver = Router::new().route(
            "/hook",
            post(move |Json(body): Json<Value>| {
                let tx = tx.clone();
                async move {
                    tx.send(body).unwrap();
                    StatusCode::OK
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

        let sim = start(Duration::from_millis(50)).await;
        let submit_with_callback = |text: String| {
            let body = json!({ "text": text, "language": "french", "callback_url": hook_url });
            submit(&sim, body)
        };
        let (_, held) = submit_with_callback(text(MARK_HOLD)).await;
        let (_, plain) = submit_with_callback(text("")).await;
        let wait = Duration::from_secs(2);

        // The held action's processing time passes first, yet only the other one calls back.
        let first = tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap();
        assert_eq!(first["action_id"], plain["action_id"]);
        assert_eq!(first["status"], "Completed");
        assert!(first["answer"].as_str().unwrap().starts_with("- **Motif de contact du client**:"));
        assert_eq!(poll(&sim, plain["action_id"].as_str().unwrap()).await.1, first);

        sim.sim.release();
        let second = tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap();
        assert_eq!(second["action_id"], held["action_id"]);
        assert_eq!(second["status"], "Completed");

        for _ in 0..200 {
            if sim.sim.stats().callbacks_sent == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((sim.sim.stats().callbacks_sent, sim.sim.stats().callbacks_failed), (2, 0));
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_callback_counts_as_failed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}/hook", listener.local_addr().unwrap());
        drop(listener);
        let sim = start(Duration::ZERO).await;
        let (status, _) = submit(&sim, json!({ "text": text(""), "language": "thai", "callback_url": dead })).await;
        assert_eq!(status, 200);
        for _ in 0..200 {
            if sim.sim.stats().callbacks_failed == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((sim.sim.stats().callbacks_sent, sim.sim.stats().callbacks_failed), (0, 1));
    }

    #[test]
    fn formats_response_time() {
        use std::time::UNIX_EPOCH;

        let at = UNIX_EPOCH + Duration::from_millis(1_765_697_195_970);
        assert_eq!(rfc3339_millis(at), "2025-12-14T07:26:35.970Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH + Duration::from_secs(951_868_799)), "2000-02-29T23:59:59.000Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
