//! An ElevateAI (NICE) service, as far as the gateway talks to one: declared
//! interactions and their generative-AI results.
//!
//! Documented vendor behaviour it copies:
//! - every path starts `/v1/`; authentication is the `X-API-Token: <key>` header, a
//!   missing or wrong one gets 401;
//! - `POST /v1/interactions` `{type: "audio"|"transcript"|"chat", languageTag,
//!   vertical, ...}` declares an interaction and answers 201 `{"interactionIdentifier"}`;
//!   `GET /v1/interactions/{id}/status` answers `{identifier, status, declared,
//!   uploaded, downloaded, processed, errorMessage}`;
//! - audio has to be processed before it has gen-AI results (409 until then); chats
//!   and transcripts are usable at once;
//! - the gen-AI routes under `/v1/interactions/{id}/`, in two variants: cx
//!   (`gen-ai/cx/summary`, `gen-ai/cx/summary/details`, `gen-ai/cx/agent/action-items`,
//!   `gen-ai/cx/agent/coaching-assistant`, `gen-ai/cx/topics`,
//!   `gen-ai/cx/conversation-composition`, `gen-ai/cx/ask`) and standard
//!   (`gen-ai/summary`, `gen-ai/summary/details`, `gen-ai/action-items`,
//!   `gen-ai/topics`, `gen-ai/ask`); standard has no coaching and no composition, so
//!   those paths are unknown routes (404);
//! - summary `{"summary"}`; details `{"reasons","actionsTakenByAgent","entities":
//!   [{"type","value"}],"isResolved"}`;
//! - `Accept-Language` (e.g. `pt-BR`) changes the language of the summary kind only,
//!   English by default;
//! - ask: `POST {"question"}` of up to 250 characters (longer: 422), at most 5
//!   answered and 5 failed questions per interaction (then 409), the answer carries
//!   `answer`; `GET` lists the earlier questions;
//! - status codes 200, 404 (unknown interaction), 408 (the model timed out, retry),
//!   409 (not processed yet, or the question limit reached), 422 (invalid), 429 (more
//!   than 10 concurrent gen-AI requests per account), 500, 504.
//!
//! \[assumption\]s, where the vendor's docs are silent (also in `fixtures/README.md`):
//! - every error body is `{"code": "<UPPER_SNAKE>", "message"}`: 401 `UNAUTHORIZED`,
//!   404 `INTERACTION_NOT_FOUND` (an id that is not a GUID too), 408 `MODEL_TIMEOUT`,
//!   409 `INTERACTION_NOT_PROCESSED` or `QUESTION_LIMIT_REACHED`, 422
//!   `QUESTION_TOO_LONG`, `QUESTION_NOT_ANSWERABLE` or `INVALID_REQUEST` (a body that
//!   is not the expected JSON), 429 `TOO_MANY_REQUESTS`, 500 `INTERNAL_ERROR`, 504
//!   `GATEWAY_TIMEOUT`; an unknown route is 404 `{"code":"NOT_FOUND","message":"No such
//!   route"}` (before authentication), a wrong method 405 `METHOD_NOT_ALLOWED`;
//! - no error carries `Retry-After` (409 and 429 included: none is documented);
//! - action items `{"actionItems":[{"description","owner":"agent"|"customer"}]}`,
//!   coaching `{"coachingPoints":[{"category","feedback":[..]}]}`, topics
//!   `{"topics":[..]}`, composition `{"concerns":[{"concern","actions":[..],
//!   "resolutionStatus":"resolved"|"partiallyResolved"|"unresolved"}]}`; the standard
//!   variant answers the same shapes as cx, and both share one question log per
//!   interaction;
//! - the summary language is the primary subtag of the most preferred
//!   `Accept-Language` range the interaction has (`en`, `es`, `pt`, `de`, `fr`),
//!   else English; ask answers are always English;
//! - `POST ask` answers 200 `{"question","answer"}`; the answer is
//!   `Regarding "<question>": <the summary sentence sharing most words with it>`; a
//!   question containing [`MARK_UNANSWERABLE`] fails with 422
//!   `QUESTION_NOT_ANSWERABLE` and uses up one of the 5 failed questions; the limit
//!   is checked before answering, each outcome against its own allowance, so the 6th
//!   answerable (or 6th unanswerable) question is a 409 `QUESTION_LIMIT_REACHED`,
//!   which is not recorded; a too long question is not counted either;
//! - `GET ask` answers `{"questions":[{"question","answer"|null,"status":"answered"|
//!   "failed","askedAt":"<RFC 3339 UTC, seconds>"}]}` in the order asked;
//! - status timestamps are RFC 3339 UTC or `null`; `uploaded` and `downloaded` are
//!   the declaration time, `processed` is `null` until processed; an audio
//!   interaction is `processing` from its declaration (no upload is needed) until
//!   [`SimOptions::audio_processing`] has passed on the simulator's clock;
//! - declaring needs a JSON body with `type` (one of the three) and `languageTag`
//!   (strings), else 422 `INVALID_REQUEST`; declared interactions get generic content
//!   built from their identifier.
//!
//! Simulator behaviour: the interactions of `fixtures/interactions.json` are seeded
//! ([`BILLING_CALL`], [`OUTAGE_CHAT`] processed; [`PROCESSING_CALL`] processed once
//! `audio_processing` has passed on the simulator's clock, or [`set_processed`]).
//! Every gen-AI and ask request takes [`SimOptions::latency`] and, after
//! authentication, holds one of [`SimOptions::max_concurrent`] slots while it does; one
//! arriving when all are taken answers 429 at once.
//!
//! Not ElevateAI's at all, off unless [`SimOptions::oauth`] is set: an OAuth 2.0
//! authorization server beside the API, so that `type: http` providers with
//! `auth: oauth2` have a vendor to talk to. ElevateAI documents only
//! `X-API-Token`; what follows is RFC 6749 and RFC 6750, and \[assumption\]s where
//! they leave a choice:
//! - `POST /oauth/token` ([`TOKEN_PATH`]) with a form body
//!   `grant_type=client_credentials[&scope=...]` (RFC 6749 §4.4.2), the client
//!   authenticated by HTTP Basic (§2.3.1), answers 200 `{"access_token",
//!   "token_type":"Bearer","expires_in"[,"scope"]}` with `Cache-Control: no-store`
//!   (§5.1); errors are §5.2's `{"error"[,"error_description"]}`: a wrong, missing or
//!   malformed client authentication 401 `invalid_client` with `WWW-Authenticate:
//!   Basic`, a body without `grant_type` (or not a form) 400 `invalid_request`, another
//!   grant 400 `unsupported_grant_type`;
//! - \[assumption\] the client id and secret are compared as sent, without the
//!   form-decoding §2.3.1 asks of the server; only HTTP Basic authenticates the
//!   client (no `client_secret` in the body); any `scope` is granted and echoed; a
//!   token request takes [`SimOptions::latency`] like a gen-AI request, without a
//!   concurrency slot;
//! - every `/v1/` route then also takes `Authorization: Bearer <token>` in place of
//!   `X-API-Token`: a token it issued that has not expired, on the simulator's clock,
//!   [`OAuthOptions::token_lifetime`] after it was issued (`expires_in`), and was not
//!   revoked ([`ElevateAiSimulator::revoke_tokens`]); any other bearer token is 401
//!   with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1) and the
//!   ElevateAI body `{"code":"UNAUTHORIZED","message"}`.
//!
//! Run it in-process ([`ElevateAiSimulator::start`]) or serve
//! [`ElevateAiSimulator::router`].
//!
//! Test hooks (not part of ElevateAI's API): `GET /_sim/stats` (a [`SimStats`]),
//! `POST /_sim/clock {"advance_secs"}`, `POST /_sim/latency {"millis"}`,
//! `POST /_sim/fail_next {"status","count"}` (the next `count` gen-AI or ask requests,
//! after authentication and the concurrency check, answer `status`),
//! `POST /_sim/processed {"identifier"}` (finishes processing an interaction) and
//! `POST /_sim/revoke_tokens` (every access token issued so far stops working).
//!
//! [`set_processed`]: ElevateAiSimulator::set_processed

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::canonical::Kind;
use crate::sim_hooks::{self, SimControls};

/// The seeded audio call about a duplicate charge (processed).
pub const BILLING_CALL: &str = "3f6a2c1e-8b4d-4e7a-9c2f-5d1b7e9a0c41";
/// The seeded chat about a broadband outage (processed).
pub const OUTAGE_CHAT: &str = "b7e4d9a2-1c3f-4a6b-8e5d-2f9c0a7b6e13";
/// The seeded audio call about a cancellation, still processing until
/// [`SimOptions::audio_processing`] has passed on the simulator's clock.
pub const PROCESSING_CALL: &str = "e2c8f1a7-5d9b-4c3e-a1f6-7b0d4e2c9a58";

/// The header carrying the API key.
pub const TOKEN_HEADER: &str = "X-API-Token";

/// Where interactions are declared.
pub const INTERACTIONS_PATH: &str = "/v1/interactions";

/// The OAuth 2.0 token endpoint, with [`SimOptions::oauth`] (not ElevateAI's).
pub const TOKEN_PATH: &str = "/oauth/token";

/// Longer questions are refused (422 `QUESTION_TOO_LONG`).
pub const MAX_QUESTION_CHARS: usize = 250;
/// Answered questions per interaction.
pub const MAX_ANSWERED_QUESTIONS: usize = 5;
/// Failed questions per interaction.
pub const MAX_FAILED_QUESTIONS: usize = 5;

/// A question containing it cannot be answered (422 `QUESTION_NOT_ANSWERABLE`).
pub const MARK_UNANSWERABLE: &str = "[sim:unanswerable]";

/// The languages every seeded summary is written in.
pub const SUMMARY_LANGUAGES: &[&str] = &["en", "es", "pt", "de", "fr"];

/// How the simulated service is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The API key expected in `X-API-Token`.
    pub token: String,
    /// The time each gen-AI and ask request takes (while holding a concurrency slot).
    pub latency: Duration,
    /// Gen-AI and ask requests in flight at once; one more answers 429.
    pub max_concurrent: usize,
    /// Time from its declaration until an audio interaction is processed, on the
    /// simulator's clock (also for the seeded [`PROCESSING_CALL`]).
    pub audio_processing: Duration,
    /// An OAuth 2.0 token endpoint ([`TOKEN_PATH`]) whose bearer tokens the API
    /// takes besides `X-API-Token`. `None` (the default): neither, as at ElevateAI.
    pub oauth: Option<OAuthOptions>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            token: "demo-elevateai-token".into(),
            latency: Duration::from_millis(20),
            max_concurrent: 10,
            audio_processing: Duration::from_secs(60),
            oauth: None,
        }
    }
}

/// The client the token endpoint knows (client credentials, RFC 6749 §4.4).
#[derive(Debug, Clone)]
pub struct OAuthOptions {
    /// The client id expected as the HTTP Basic user.
    pub client_id: String,
    /// The client secret expected as the HTTP Basic password.
    pub client_secret: String,
    /// How long an access token works, on the simulator's clock (`expires_in`, in
    /// whole seconds).
    pub token_lifetime: Duration,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            client_id: "demo-elevateai-client".into(),
            client_secret: "demo-elevateai-client-secret".into(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Authenticated gen-AI requests per kind (`summary`, `details`, `action_items`,
    /// `coaching`, `topics`, `composition`), answered with any status.
    pub requests: BTreeMap<String, u64>,
    /// Authenticated gen-AI and ask requests per variant (`cx`, `standard`).
    pub variants: BTreeMap<String, u64>,
    /// `POST ask` requests that reached a known interaction.
    pub asks: u64,
    /// `GET ask` requests that reached a known interaction.
    pub ask_lists: u64,
    /// Interactions declared (201).
    pub declared: u64,
    /// Requests refused with 429 because `max_concurrent` were in flight.
    pub rejected_busy: u64,
    /// API requests refused with 401 (`stale_tokens` among them; not the token
    /// endpoint's refusals, which are `token_refusals`).
    pub unauthorized: u64,
    /// The most gen-AI and ask requests in flight at once (accepted ones only).
    pub max_in_flight: u64,
    /// The `Accept-Language` of every authenticated summary request, in order (`""`
    /// when absent).
    pub languages: Vec<String>,
    /// Requests to the token endpoint, answered with any status.
    pub token_requests: u64,
    /// Access tokens issued (200 answers of the token endpoint).
    pub tokens_issued: u64,
    /// Token requests refused (401 `invalid_client`, 400 `invalid_request` or
    /// `unsupported_grant_type`).
    pub token_refusals: u64,
    /// API requests refused with 401 for a bearer token that expired, was revoked
    /// or was never issued.
    pub stale_tokens: u64,
    /// The `scope` of every token issued, in order (`""` when the request had none).
    pub scopes: Vec<String>,
}

/// An interaction as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimInteraction {
    /// The GUID, lowercase and hyphenated.
    pub identifier: String,
    /// `audio`, `transcript` or `chat`.
    pub media: String,
    /// As declared (`languageTag`).
    pub language_tag: String,
    /// As declared (`vertical`).
    pub vertical: String,
    /// Whether its gen-AI results can be fetched now.
    pub processed: bool,
}

/// The gen-AI results of one interaction, in the vendor's field names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    /// By language subtag; `en` at least.
    summary: BTreeMap<String, String>,
    details: Details,
    action_items: Vec<ActionItem>,
    coaching_points: Vec<CoachingPoint>,
    topics: Vec<String>,
    concerns: Vec<Concern>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    reasons: Vec<String>,
    actions_taken_by_agent: Vec<String>,
    entities: Vec<Entity>,
    is_resolved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entity {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActionItem {
    description: String,
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CoachingPoint {
    category: String,
    feedback: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Concern {
    concern: String,
    actions: Vec<String>,
    resolution_status: String,
}

/// One entry of `fixtures/interactions.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seed {
    identifier: String,
    #[serde(rename = "type")]
    media: String,
    language_tag: String,
    vertical: String,
    /// `false`: processed once `audio_processing` has passed.
    processed: bool,
    #[serde(flatten)]
    content: Content,
}

fn seeds() -> Vec<Seed> {
    serde_json::from_str(include_str!("fixtures/interactions.json")).unwrap_or_else(|e| {
        tracing::error!(error = %e, "elevateai simulator: fixtures/interactions.json does not parse");
        Vec::new()
    })
}

/// The vendor's route of a kind under `/v1/interactions/{id}/`, if the variant has
/// it: the simulator's own table, not the adapter's, so a wrong route in the
/// adapter fails against the simulator.
const fn gen_ai_path(kind: Kind, variant: Variant) -> Option<&'static str> {
    match (variant, kind) {
        (Variant::Cx, Kind::Summary) => Some("gen-ai/cx/summary"),
        (Variant::Cx, Kind::Details) => Some("gen-ai/cx/summary/details"),
        (Variant::Cx, Kind::ActionItems) => Some("gen-ai/cx/agent/action-items"),
        (Variant::Cx, Kind::Coaching) => Some("gen-ai/cx/agent/coaching-assistant"),
        (Variant::Cx, Kind::Topics) => Some("gen-ai/cx/topics"),
        (Variant::Cx, Kind::Composition) => Some("gen-ai/cx/conversation-composition"),
        (Variant::Standard, Kind::Summary) => Some("gen-ai/summary"),
        (Variant::Standard, Kind::Details) => Some("gen-ai/summary/details"),
        (Variant::Standard, Kind::ActionItems) => Some("gen-ai/action-items"),
        (Variant::Standard, Kind::Topics) => Some("gen-ai/topics"),
        (Variant::Standard, Kind::Coaching | Kind::Composition) => None,
    }
}

/// The two families of gen-AI routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Cx,
    Standard,
}

impl Variant {
    const fn name(self) -> &'static str {
        match self {
            Self::Cx => "cx",
            Self::Standard => "standard",
        }
    }

    const fn ask_path(self) -> &'static str {
        match self {
            Self::Cx => "gen-ai/cx/ask",
            Self::Standard => "gen-ai/ask",
        }
    }
}

/// What a gated request is, for the stats.
#[derive(Debug, Clone, Copy)]
enum Call {
    GenAi(Kind),
    Ask,
    AskList,
}

/// One question asked of an interaction.
#[derive(Debug, Clone)]
struct Asked {
    question: String,
    /// `None` for a failed question.
    answer: Option<String>,
    /// On the simulator's clock.
    asked_at: Duration,
}

struct Interaction {
    recorded: SimInteraction,
    /// Simulator time (see [`SimState::now`]) of the declaration.
    declared_at: Duration,
    /// Simulator time from which it is processed; `None`: never (until `set_processed`).
    ready_at: Option<Duration>,
    content: Content,
    questions: Vec<Asked>,
}

impl Interaction {
    fn is_processed(&self, now: Duration) -> bool {
        self.ready_at.is_some_and(|ready| now >= ready)
    }

    fn answered(&self) -> usize {
        self.questions.iter().filter(|q| q.answer.is_some()).count()
    }

    fn failed(&self) -> usize {
        self.questions.len() - self.answered()
    }
}

/// An injected fault: the next `remaining` gen-AI/ask requests answer `status`.
struct Fault {
    status: StatusCode,
    remaining: u32,
}

struct SimState {
    /// Added to real time by `advance`.
    clock_offset: Duration,
    latency: Duration,
    interactions: HashMap<Uuid, Interaction>,
    /// Identifiers in the order they were seeded or declared.
    order: Vec<Uuid>,
    in_flight: usize,
    fault: Option<Fault>,
    /// Access tokens that work → their expiry on the simulator's clock.
    tokens: HashMap<String, Duration>,
    /// Every access token issued, revoked ones too, for tests that look for leaks.
    issued: Vec<String>,
    stats: SimStats,
}

impl SimState {
    /// Simulator time: real time since the simulator was made plus the clock offset.
    fn now(&self, started: Instant) -> Duration {
        started.elapsed().saturating_add(self.clock_offset)
    }
}

struct Inner {
    options: SimOptions,
    /// Simulator time zero, as an instant and as wall-clock time.
    started: Instant,
    started_wall: SystemTime,
    state: Mutex<SimState>,
}

/// A simulated ElevateAI. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct ElevateAiSimulator {
    inner: Arc<Inner>,
}

/// A simulator serving on a local port (stops when dropped).
pub type RunningSimulator = sim_hooks::Running<ElevateAiSimulator>;

/// This simulator in the registry: `simulate elevateai`, and the demo's `elevateai-demo`.
pub static SIMULATOR: sim_hooks::Simulator = sim_hooks::Simulator {
    vendor: "ElevateAI",
    about: "ElevateAI gen-AI results (`/v1/interactions/...`), seeded with two processed interactions",
    listen: "127.0.0.1:9003",
    flags: &[
        sim_hooks::SimFlag {
            long: "token",
            value_name: "TOKEN",
            default: "demo-elevateai-token",
            help: Some("The API token it accepts (`X-API-Token`)"),
            check: sim_hooks::parses_as::<String>,
        },
        sim_hooks::SimFlag {
            long: "max-concurrent",
            value_name: "MAX_CONCURRENT",
            default: "10",
            help: Some("Gen-AI requests in flight at once before it answers 429 (the account limit)"),
            check: sim_hooks::parses_as::<usize>,
        },
    ],
    serve: |listener, flags| {
        let options = match flags {
            None => SimOptions::default(),
            Some(flags) => SimOptions {
                token: flags.get("token")?,
                max_concurrent: flags.parse("max-concurrent")?,
                ..SimOptions::default()
            },
        };
        ElevateAiSimulator::new(options).serve_on(listener).map(Into::into).map_err(|e| e.to_string())
    },
    demo_banner: |addr, key| {
        format!(
            r#"  # ElevateAI: any kind of an interaction (summary, details, action_items, coaching, topics, composition)
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {key}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"elevateai-demo","kind":"details","conversation":{{"id":"{BILLING_CALL}"}}}}'

  # ...and a question about it (5 per interaction; a repeated one is answered from the store)
  curl -s http://{addr}/v1/questions -H 'Authorization: Bearer {key}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"elevateai-demo","conversation":{{"id":"{BILLING_CALL}"}},"question":"Was the customer refunded?"}}'
"#
        )
    },
};

/// Holds one concurrency slot; gives it back when dropped, also when the client goes
/// away and the request's future is dropped mid-way.
struct Slot {
    sim: ElevateAiSimulator,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.sim.state();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl ElevateAiSimulator {
    /// A simulator seeded with `fixtures/interactions.json`.
    pub fn new(options: SimOptions) -> Self {
        let mut interactions = HashMap::new();
        let mut order = Vec::new();
        for seed in seeds() {
            let Ok(identifier) = Uuid::parse_str(&seed.identifier) else {
                tracing::error!(identifier = %seed.identifier, "elevateai simulator: a fixture's identifier is no GUID");
                continue;
            };
            let interaction = Interaction {
                recorded: SimInteraction {
                    identifier: identifier.to_string(),
                    media: seed.media,
                    language_tag: seed.language_tag,
                    vertical: seed.vertical,
                    processed: seed.processed,
                },
                declared_at: Duration::ZERO,
                ready_at: if seed.processed { Some(Duration::ZERO) } else { Some(options.audio_processing) },
                content: seed.content,
                questions: Vec::new(),
            };
            order.push(identifier);
            interactions.insert(identifier, interaction);
        }
        let latency = options.latency;
        Self {
            inner: Arc::new(Inner {
                options,
                started: Instant::now(),
                started_wall: SystemTime::now(),
                state: Mutex::new(SimState {
                    clock_offset: Duration::ZERO,
                    latency,
                    interactions,
                    order,
                    in_flight: 0,
                    fault: None,
                    tokens: HashMap::new(),
                    issued: Vec::new(),
                    stats: SimStats::default(),
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
        let mut router =
            Router::new().route(INTERACTIONS_PATH, post(declare)).route("/v1/interactions/{id}/status", get(status));
        for variant in [Variant::Cx, Variant::Standard] {
            for kind in Kind::ALL {
                if let Some(path) = gen_ai_path(kind, variant) {
                    router = router.route(&format!("/v1/interactions/{{id}}/{path}"), gen_ai_route(kind, variant));
                }
            }
            router = router.route(&format!("/v1/interactions/{{id}}/{}", variant.ask_path()), ask_route(variant));
        }
        if self.inner.options.oauth.is_some() {
            router = router.route(TOKEN_PATH, post(token));
        }
        router
            .route("/_sim/stats", get(stats))
            .route("/_sim/clock", post(sim_hooks::advance_clock::<Self>))
            .route("/_sim/latency", post(sim_hooks::set_latency::<Self>))
            .route("/_sim/fail_next", post(fail_next))
            .route("/_sim/processed", post(processed))
            .route("/_sim/revoke_tokens", post(revoke_tokens))
            .fallback(unknown_route)
            .method_not_allowed_fallback(wrong_method)
            .with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panicking handler must not wedge the simulator for the rest of a test.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the simulator's clock forward (audio interactions finish processing on it).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.clock_offset = state.clock_offset.saturating_add(by);
    }

    /// Sets the time each gen-AI and ask request takes.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// What it has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats.clone()
    }

    /// Gen-AI and ask requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// The next `count` gen-AI or ask requests (after authentication and the
    /// concurrency check) answer `status` with its ElevateAI body, after the usual
    /// latency. A status that is not an HTTP status is taken as 500; `count` 0 clears
    /// the fault.
    pub fn fail_next(&self, status: u16, count: u32) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.state().fault = (count > 0).then_some(Fault { status, remaining: count });
    }

    /// Finishes processing an interaction now; `false` if it is unknown.
    pub fn set_processed(&self, id: &str) -> bool {
        let mut state = self.state();
        let now = state.now(self.inner.started);
        let Some(interaction) = Uuid::parse_str(id).ok().and_then(|id| state.interactions.get_mut(&id)) else {
            return false;
        };
        if !interaction.is_processed(now) {
            interaction.ready_at = Some(now);
        }
        true
    }

    /// Revokes every access token issued so far: each is refused (401) from now
    /// on, as if the authorization server had revoked them before their
    /// `expires_in`. Returns how many still worked.
    pub fn revoke_tokens(&self) -> usize {
        let mut state = self.state();
        let now = state.now(self.inner.started);
        let working = state.tokens.values().filter(|expiry| now < **expiry).count();
        state.tokens.clear();
        working
    }

    /// Every access token issued so far (revoked and expired ones too).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// The identifiers of the seeded and then the declared interactions, in order.
    pub fn interaction_ids(&self) -> Vec<String> {
        self.state().order.iter().map(Uuid::to_string).collect()
    }

    /// One interaction as it stands now.
    pub fn interaction(&self, id: &str) -> Option<SimInteraction> {
        let state = self.state();
        let now = state.now(self.inner.started);
        let interaction = state.interactions.get(&Uuid::parse_str(id).ok()?)?;
        Some(SimInteraction { processed: interaction.is_processed(now), ..interaction.recorded.clone() })
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| given.trim() == self.inner.options.token)
    }

    /// Authentication alone (declaration and status): the API key, or with
    /// [`SimOptions::oauth`] a bearer token it issued that still works. `Err` is the 401.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), VendorError> {
        if self.authorized(headers) {
            return Ok(());
        }
        let bearer = self.inner.options.oauth.as_ref().and_then(|_| bearer_token(headers));
        let mut state = self.state();
        if let Some(bearer) = bearer {
            let now = state.now(self.inner.started);
            if state.tokens.get(bearer).is_some_and(|expiry| now < *expiry) {
                return Ok(());
            }
            state.stats.unauthorized += 1;
            state.stats.stale_tokens += 1;
            return Err(invalid_token());
        }
        state.stats.unauthorized += 1;
        Err(unauthorized())
    }

    /// `POST /oauth/token`: a client-credentials grant (RFC 6749 §4.4), or its §5.2 error.
    async fn token(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(oauth) = &self.inner.options.oauth else {
            return unknown_route().await.into_response();
        };
        let latency = {
            let mut state = self.state();
            state.stats.token_requests += 1;
            state.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        let client = basic_credentials(headers);
        if client.as_ref().is_none_or(|(id, secret)| *id != oauth.client_id || *secret != oauth.client_secret) {
            state.stats.token_refusals += 1;
            let challenge = HeaderValue::from_static("Basic realm=\"elevateai-simulator\"");
            let refusal = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
            return ([(header::WWW_AUTHENTICATE, challenge)], refusal).into_response();
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim() == "application/x-www-form-urlencoded"));
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let repeated = form.iter().enumerate().any(|(i, (k, _))| form[..i].iter().any(|(earlier, _)| earlier == k));
        let refusal = match param("grant_type") {
            _ if !is_form || repeated => Some(("invalid_request", "The body must be a form with each parameter once")),
            None => Some(("invalid_request", "grant_type is required")),
            Some("client_credentials") => None,
            Some(_) => Some(("unsupported_grant_type", "Only grant_type=client_credentials is supported")),
        };
        if let Some((code, description)) = refusal {
            state.stats.token_refusals += 1;
            return oauth_error(StatusCode::BAD_REQUEST, code, description).into_response();
        }
        let scope = param("scope").map(str::to_owned);
        let access = Uuid::new_v4().simple().to_string();
        let now = state.now(self.inner.started);
        state.tokens.retain(|_, expiry| now < *expiry);
        state.tokens.insert(access.clone(), now.saturating_add(oauth.token_lifetime));
        state.issued.push(access.clone());
        state.stats.tokens_issued += 1;
        state.stats.scopes.push(scope.clone().unwrap_or_default());
        let mut answer = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": oauth.token_lifetime.as_secs(),
        });
        if let Some(scope) = scope {
            answer["scope"] = json!(scope);
        }
        let no_store = [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")];
        (no_store, Json(answer)).into_response()
    }

    /// What every gen-AI and ask request goes through first: authentication, the
    /// concurrency limit, an injected fault and the latency. `Ok` holds the slot the
    /// request keeps until its answer is made.
    async fn gate(&self, headers: &HeaderMap, call: Call, variant: Variant) -> Result<Slot, VendorError> {
        self.authenticate(headers)?;
        let (slot, fault, latency) = {
            let mut state = self.state();
            *state.stats.variants.entry(variant.name().into()).or_default() += 1;
            if let Call::GenAi(kind) = call {
                *state.stats.requests.entry(kind.as_str().into()).or_default() += 1;
                if kind == Kind::Summary {
                    let language = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
                    state.stats.languages.push(language.unwrap_or_default().to_owned());
                }
            }
            if state.in_flight >= self.inner.options.max_concurrent {
                state.stats.rejected_busy += 1;
                return Err(too_many_requests(self.inner.options.max_concurrent));
            }
            state.in_flight += 1;
            let in_flight = u64::try_from(state.in_flight).unwrap_or(u64::MAX);
            state.stats.max_in_flight = state.stats.max_in_flight.max(in_flight);
            let fault = state.fault.as_mut().map(|fault| {
                fault.remaining = fault.remaining.saturating_sub(1);
                fault.status
            });
            if state.fault.as_ref().is_some_and(|f| f.remaining == 0) {
                state.fault = None;
            }
            (Slot { sim: self.clone() }, fault, state.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(status) => Err(status_body(status, self.inner.options.max_concurrent)),
            None => Ok(slot),
        }
    }

    /// A gen-AI result.
    async fn gen_ai(&self, id: &str, headers: &HeaderMap, kind: Kind, variant: Variant) -> Answer {
        let _slot = self.gate(headers, Call::GenAi(kind), variant).await?;
        let state = self.state();
        let now = state.now(self.inner.started);
        let key = ready(&state, id, now)?;
        let content = &state.interactions.get(&key).ok_or_else(|| interaction_not_found(id))?.content;
        let body = match kind {
            Kind::Summary => {
                let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
                json!({ "summary": summary_in(&content.summary, accept) })
            }
            Kind::Details => json!(content.details),
            Kind::ActionItems => json!({ "actionItems": content.action_items }),
            Kind::Coaching => json!({ "coachingPoints": content.coaching_points }),
            Kind::Topics => json!({ "topics": content.topics }),
            Kind::Composition => json!({ "concerns": content.concerns }),
        };
        Ok(Json(body))
    }

    /// `POST ask`.
    async fn ask(&self, id: &str, headers: &HeaderMap, variant: Variant, body: &[u8]) -> Answer {
        let _slot = self.gate(headers, Call::Ask, variant).await?;
        let mut guard = self.state();
        let state = &mut *guard;
        let now = state.now(self.inner.started);
        if known(state, id).is_some() {
            state.stats.asks += 1;
        }
        let key = ready(state, id, now)?;
        let Some(question) = parse_question(body) else {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                "The body must be {\"question\": \"...\"}",
            ));
        };
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "QUESTION_TOO_LONG",
                format!("A question can have at most {MAX_QUESTION_CHARS} characters"),
            ));
        }
        let interaction = state.interactions.get_mut(&key).ok_or_else(|| interaction_not_found(id))?;
        if question.contains(MARK_UNANSWERABLE) {
            if interaction.failed() >= MAX_FAILED_QUESTIONS {
                return Err(question_limit("failed", MAX_FAILED_QUESTIONS));
            }
            interaction.questions.push(Asked { question, answer: None, asked_at: now });
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "QUESTION_NOT_ANSWERABLE",
                "The question cannot be answered from this interaction",
            ));
        }
        if interaction.answered() >= MAX_ANSWERED_QUESTIONS {
            return Err(question_limit("answered", MAX_ANSWERED_QUESTIONS));
        }
        let answer = answer_for(&question, &interaction.content);
        interaction.questions.push(Asked { question: question.clone(), answer: Some(answer.clone()), asked_at: now });
        Ok(Json(json!({ "question": question, "answer": answer })))
    }

    /// `GET ask`.
    async fn ask_list(&self, id: &str, headers: &HeaderMap, variant: Variant) -> Answer {
        let _slot = self.gate(headers, Call::AskList, variant).await?;
        let mut state = self.state();
        let now = state.now(self.inner.started);
        if known(&state, id).is_some() {
            state.stats.ask_lists += 1;
        }
        let key = ready(&state, id, now)?;
        let interaction = state.interactions.get(&key).ok_or_else(|| interaction_not_found(id))?;
        let questions: Vec<Value> = interaction.questions.iter().map(|q| self.asked_json(q)).collect();
        Ok(Json(json!({ "questions": questions })))
    }

    fn asked_json(&self, asked: &Asked) -> Value {
        json!({
            "question": asked.question,
            "answer": asked.answer,
            "status": if asked.answer.is_some() { "answered" } else { "failed" },
            "askedAt": self.wall(asked.asked_at),
        })
    }

    /// Simulator time as RFC 3339 UTC.
    fn wall(&self, at: Duration) -> String {
        rfc3339(self.inner.started_wall.checked_add(at).unwrap_or(self.inner.started_wall))
    }

    /// Records a declaration and answers its identifier.
    fn declare(&self, declaration: Declaration) -> Uuid {
        let identifier = Uuid::new_v4();
        let mut state = self.state();
        let now = state.now(self.inner.started);
        let ready_at =
            if declaration.media == "audio" { now.checked_add(self.inner.options.audio_processing) } else { Some(now) };
        let interaction = Interaction {
            content: generic_content(&identifier, &declaration.media),
            recorded: SimInteraction {
                identifier: identifier.to_string(),
                media: declaration.media,
                language_tag: declaration.language_tag,
                vertical: declaration.vertical.unwrap_or_else(|| "default".into()),
                processed: false,
            },
            declared_at: now,
            ready_at,
            questions: Vec::new(),
        };
        state.interactions.insert(identifier, interaction);
        state.order.push(identifier);
        state.stats.declared += 1;
        identifier
    }

    /// The status body of a known interaction.
    fn status_json(&self, interaction: &Interaction, now: Duration) -> Value {
        let declared = self.wall(interaction.declared_at);
        let processed = interaction.ready_at.filter(|_| interaction.is_processed(now)).map(|at| self.wall(at));
        json!({
            "identifier": interaction.recorded.identifier,
            "status": if processed.is_some() { "processed" } else { "processing" },
            "declared": declared,
            "uploaded": declared,
            "downloaded": declared,
            "processed": processed,
            "errorMessage": null,
        })
    }
}

impl SimControls for ElevateAiSimulator {
    const NAME: &'static str = "elevateai";

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

/// What the gen-AI and ask routes answer.
type Answer = Result<Json<Value>, VendorError>;

/// The key of a known interaction.
fn known(state: &SimState, id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok().filter(|key| state.interactions.contains_key(key))
}

/// The key of a known interaction with results: else the 404 or the 409.
fn ready(state: &SimState, id: &str, now: Duration) -> Result<Uuid, VendorError> {
    let key = known(state, id).ok_or_else(|| interaction_not_found(id))?;
    if state.interactions.get(&key).is_some_and(|i| i.is_processed(now)) {
        Ok(key)
    } else {
        Err(error(StatusCode::CONFLICT, "INTERACTION_NOT_PROCESSED", "The interaction has not been processed yet"))
    }
}

fn gen_ai_route(kind: Kind, variant: Variant) -> MethodRouter<ElevateAiSimulator> {
    get(move |State(sim): State<ElevateAiSimulator>, Path(id): Path<String>, headers: HeaderMap| async move {
        sim.gen_ai(&id, &headers, kind, variant).await
    })
}

fn ask_route(variant: Variant) -> MethodRouter<ElevateAiSimulator> {
    post(move |State(sim): State<ElevateAiSimulator>, Path(id): Path<String>, headers: HeaderMap, body: Bytes| async move {
        sim.ask(&id, &headers, variant, &body).await
    })
    .get(move |State(sim): State<ElevateAiSimulator>, Path(id): Path<String>, headers: HeaderMap| async move {
        sim.ask_list(&id, &headers, variant).await
    })
}

/// An ElevateAI error answer: `{"code", "message"}` with its status.
#[derive(Debug)]
struct VendorError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    /// `WWW-Authenticate`, for a refused bearer token.
    challenge: Option<HeaderValue>,
}

impl IntoResponse for VendorError {
    fn into_response(self) -> Response {
        let body = (self.status, Json(json!({ "code": self.code, "message": self.message })));
        match self.challenge {
            Some(challenge) => ([(header::WWW_AUTHENTICATE, challenge)], body).into_response(),
            None => body.into_response(),
        }
    }
}

fn error(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> VendorError {
    VendorError { status, code: code.into(), message: message.into(), challenge: None }
}

fn unauthorized() -> VendorError {
    error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Missing or invalid X-API-Token")
}

/// A bearer token that is not (or no longer) one the simulator issued (RFC 6750 §3.1).
fn invalid_token() -> VendorError {
    VendorError {
        challenge: Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        ..error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "The access token expired, was revoked or is unknown")
    }
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({ "error": code, "error_description": description }))).into_response()
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The (id, secret) of `Authorization: Basic <base64 of id:secret>` (RFC 7617).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn interaction_not_found(id: &str) -> VendorError {
    error(StatusCode::NOT_FOUND, "INTERACTION_NOT_FOUND", format!("No interaction with identifier {id}"))
}

fn too_many_requests(limit: usize) -> VendorError {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        format!("More than {limit} concurrent generative AI requests for this account"),
    )
}

fn question_limit(which: &str, limit: usize) -> VendorError {
    error(
        StatusCode::CONFLICT,
        "QUESTION_LIMIT_REACHED",
        format!("This interaction already has {limit} {which} questions"),
    )
}

/// The body ElevateAI answers an error status with (for injected faults); `limit` is
/// the concurrency limit a 429 names.
fn status_body(status: StatusCode, limit: usize) -> VendorError {
    let (code, message) = match status {
        StatusCode::UNAUTHORIZED => return unauthorized(),
        StatusCode::TOO_MANY_REQUESTS => return too_many_requests(limit),
        StatusCode::NOT_FOUND => ("INTERACTION_NOT_FOUND", "No such interaction"),
        StatusCode::REQUEST_TIMEOUT => ("MODEL_TIMEOUT", "The model timed out; retry the request"),
        StatusCode::CONFLICT => ("INTERACTION_NOT_PROCESSED", "The interaction has not been processed yet"),
        StatusCode::UNPROCESSABLE_ENTITY => ("INVALID_REQUEST", "The request cannot be processed"),
        StatusCode::INTERNAL_SERVER_ERROR => ("INTERNAL_ERROR", "Internal server error"),
        StatusCode::GATEWAY_TIMEOUT => ("GATEWAY_TIMEOUT", "The gateway timed out"),
        other => {
            let reason = other.canonical_reason().unwrap_or("Error");
            return error(other, upper_snake(reason), reason);
        }
    };
    error(status, code, message)
}

/// `Service Unavailable` → `SERVICE_UNAVAILABLE`.
fn upper_snake(reason: &str) -> String {
    reason
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect::<Vec<_>>()
        .join("_")
}

#[derive(Deserialize)]
struct Declaration {
    #[serde(rename = "type")]
    media: String,
    #[serde(rename = "languageTag")]
    language_tag: String,
    #[serde(default)]
    vertical: Option<String>,
}

/// A valid declaration, or `None` for the 422.
fn parse_declaration(body: &[u8]) -> Option<Declaration> {
    let declaration: Declaration = serde_json::from_slice(body).ok()?;
    ["audio", "transcript", "chat"].contains(&declaration.media.as_str()).then_some(declaration)
}

/// The question of a `POST ask` body, if it is one (a non-blank string).
fn parse_question(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Ask {
        question: String,
    }
    let ask: Ask = serde_json::from_slice(body).ok()?;
    (!ask.question.trim().is_empty()).then_some(ask.question)
}

async fn declare(State(sim): State<ElevateAiSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = sim.authenticate(&headers) {
        return refused.into_response();
    }
    let Some(declaration) = parse_declaration(&body) else {
        let message = "The body needs \"type\" (audio, transcript or chat) and \"languageTag\"";
        return error(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST", message).into_response();
    };
    let identifier = sim.declare(declaration);
    (StatusCode::CREATED, Json(json!({ "interactionIdentifier": identifier.to_string() }))).into_response()
}

async fn status(State(sim): State<ElevateAiSimulator>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    sim.authenticate(&headers)?;
    let state = sim.state();
    let now = state.now(sim.inner.started);
    let interaction =
        known(&state, &id).and_then(|key| state.interactions.get(&key)).ok_or_else(|| interaction_not_found(&id))?;
    Ok(Json(sim.status_json(interaction, now)))
}

async fn unknown_route() -> VendorError {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such route")
}

async fn wrong_method() -> VendorError {
    error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "Method not allowed on this route")
}

async fn stats(State(sim): State<ElevateAiSimulator>) -> Json<SimStats> {
    Json(sim.stats())
}

#[derive(Deserialize)]
struct FailNext {
    status: u16,
    count: u32,
}

async fn fail_next(State(sim): State<ElevateAiSimulator>, Json(f): Json<FailNext>) -> StatusCode {
    if !(400..=599).contains(&f.status) {
        return StatusCode::BAD_REQUEST;
    }
    sim.fail_next(f.status, f.count);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Processed {
    identifier: String,
}

async fn processed(State(sim): State<ElevateAiSimulator>, Json(p): Json<Processed>) -> StatusCode {
    if sim.set_processed(&p.identifier) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn token(State(sim): State<ElevateAiSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    sim.token(&headers, &body).await
}

async fn revoke_tokens(State(sim): State<ElevateAiSimulator>) -> StatusCode {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT
}

/// The summary in the most preferred language of `accept` the interaction has, else English.
fn summary_in<'c>(summaries: &'c BTreeMap<String, String>, accept: Option<&str>) -> &'c str {
    let mut ranges: Vec<(f32, String)> = accept
        .unwrap_or_default()
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
            (quality > 0.0 && !primary.is_empty()).then_some((quality, primary))
        })
        .collect();
    // Stable: equally preferred ranges keep their order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges
        .iter()
        .find_map(|(_, primary)| summaries.get(primary))
        .or_else(|| summaries.get("en"))
        .map_or("", String::as_str)
}

/// `Regarding "<question>": <the English summary sentence sharing most words with it>`.
fn answer_for(question: &str, content: &Content) -> String {
    let summary = content.summary.get("en").map_or("", String::as_str);
    let asked = words(question);
    let mut best: Option<(usize, &str)> = None;
    for sentence in sentences(summary) {
        let shared = words(sentence).iter().filter(|w| asked.contains(w)).count();
        if best.is_none_or(|(most, _)| shared > most) {
            best = Some((shared, sentence));
        }
    }
    let basis = best.map_or("The interaction does not say.", |(_, sentence)| sentence);
    format!("Regarding \"{question}\": {basis}")
}

/// Lowercase words of four letters or more (shorter ones are mostly filler).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 4).map(str::to_lowercase).collect()
}

/// Sentences ending with `.`, `!` or `?` followed by whitespace (or the end).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_end = chars.peek().is_none_or(|(_, next)| next.is_whitespace());
        if matches!(c, '.' | '!' | '?') && at_end {
            let end = i + c.len_utf8();
            let sentence = text[start..end].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Deterministic results of a declared interaction, built from its identifier.
fn generic_content(identifier: &Uuid, media: &str) -> Content {
    let id = identifier.to_string();
    let reference = &id[..8];
    let summary = [
        (
            "en",
            format!(
                "Interaction {reference} ({media}): the customer contacted support with a question about their \
                 account. The agent verified the customer's identity and answered the question. The customer \
                 confirmed that nothing else was needed."
            ),
        ),
        (
            "es",
            format!(
                "Interacción {reference} ({media}): el cliente contactó con soporte con una pregunta sobre su \
                 cuenta. El agente verificó la identidad del cliente y respondió a la pregunta. El cliente confirmó \
                 que no necesitaba nada más."
            ),
        ),
        (
            "pt",
            format!(
                "Interação {reference} ({media}): o cliente entrou em contato com o suporte com uma dúvida sobre a \
                 conta. O agente verificou a identidade do cliente e respondeu à dúvida. O cliente confirmou que não \
                 precisava de mais nada."
            ),
        ),
        (
            "de",
            format!(
                "Interaktion {reference} ({media}): Der Kunde wandte sich mit einer Frage zu seinem Konto an den \
                 Support. Der Agent überprüfte die Identität des Kunden und beantwortete die Frage. Der Kunde \
                 bestätigte, dass er nichts weiter benötigte."
            ),
        ),
        (
            "fr",
            format!(
                "Interaction {reference} ({media}) : le client a contacté le support au sujet d'une question sur \
                 son compte. L'agent a vérifié l'identité du client et a répondu à la question. Le client a confirmé \
                 qu'il n'avait besoin de rien d'autre."
            ),
        ),
    ]
    .into_iter()
    .map(|(language, text)| (language.to_owned(), text))
    .collect();
    Content {
        summary,
        details: Details {
            reasons: vec![format!("Question about account {reference}")],
            actions_taken_by_agent: vec!["Verified the customer's identity".into(), "Answered the question".into()],
            entities: vec![Entity { kind: "ACCOUNT".into(), value: reference.to_owned() }],
            is_resolved: true,
        },
        action_items: vec![ActionItem {
            description: format!("Add a note about the question to account {reference}"),
            owner: "agent".into(),
        }],
        coaching_points: vec![CoachingPoint {
            category: "Communication".into(),
            feedback: vec![
                "Verified the customer's identity before discussing the account.".into(),
                "Could have confirmed the answer was understood before closing.".into(),
            ],
        }],
        topics: vec!["Account inquiry".into(), format!("Account {reference}")],
        concerns: vec![Concern {
            concern: format!("Question about account {reference}"),
            actions: vec!["Answered the question".into()],
            resolution_status: "resolved".into(),
        }],
    }
}

/// `2026-05-13T22:32:34Z`: UTC, whole seconds.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
