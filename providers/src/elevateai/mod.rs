//! ElevateAI (NICE): generative-AI results of interactions the vendor already
//! has (reference in, synchronous), and questions about them.
//!
//! - [`ElevateAi`]: the adapter — GUID validation, the kind → route table of
//!   both variants, `X-API-Token`, `Accept-Language` for summaries, retries of
//!   408/429 inside the request's deadline, the vendor's codes mapped to the
//!   gateway's table, questions (`gen-ai[/cx]/ask`).
//! - [`mapping`]: every kind's answer → content and `data`, as JSONPath defaults.
//! - [`simulator`]: a faithful stand-in for ElevateAI, used by tests and the demo.
//! - `fixtures/`: the simulator's interactions, and which shapes are assumptions.
//!
//! Vendor facts (PROVIDERS.md): at most 10 concurrent gen-AI requests per
//! account (429 past that: the provider's `max_concurrency` defaults to 10, so
//! the gateway queues instead of being refused; with a shared store the cap is
//! for the whole fleet, `elevateai:<provider>:slots`); 408 when the model timed out;
//! 409 while an audio interaction is still processing (and when the question
//! allowance is spent); 5 questions per interaction.

pub mod mapping;
#[cfg(any(test, feature = "sim"))]
pub mod simulator;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_config::CommonConfig;
use gateway_config::providers::elevateai::{ElevateAiConfig, ElevateAiVariant};
use http::HeaderValue;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use crate::canonical::Kind;
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::mapping::Mappings;
use crate::metrics::VendorCodes;
use crate::outbound::{Answer, AnswerBudget, Outbound};
use crate::shared::SharedState;
use crate::vendor::{
    Asked, AskedQuestion, Completed, Input, JobFailure, QuestionRules, Started, SummaryRequest, Vendor,
};

/// The vendor's limit on a question's length.
pub const MAX_QUESTION_CHARS: usize = 250;

/// Questions the vendor answers per interaction.
pub const QUESTION_ALLOWANCE: usize = 5;

/// The `code`s of ElevateAI's error bodies (unpublished: the ones the simulator
/// assumes, see `fixtures/README.md`) and the statuses its adapter tells apart:
/// the `vendor_code` label's values.
pub const VENDOR_CODES: VendorCodes = VendorCodes {
    codes: &[
        "UNAUTHORIZED",
        "INTERACTION_NOT_FOUND",
        "MODEL_TIMEOUT",
        "INTERACTION_NOT_PROCESSED",
        "QUESTION_LIMIT_REACHED",
        "QUESTION_TOO_LONG",
        "QUESTION_NOT_ANSWERABLE",
        "INVALID_REQUEST",
        "TOO_MANY_REQUESTS",
        "INTERNAL_ERROR",
        "GATEWAY_TIMEOUT",
    ],
    statuses: &["200", "401", "403", "404", "408", "409", "422", "429", "500", "502", "503", "504"],
};

/// Header carrying the API token.
const TOKEN_HEADER: &str = "x-api-token";

/// First wait before retrying a 408 or 429; doubled on each retry (with jitter).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The ElevateAI adapter of one configured provider.
pub struct ElevateAi {
    provider: Arc<str>,
    out: Outbound,
    /// `{base_url}/v1/interactions/`.
    interactions: Url,
    token: HeaderValue,
    variant: ElevateAiVariant,
    not_ready_retry_after: Duration,
    mappings: Mappings,
    /// Set while ElevateAI answers 401/403 to the gateway's token (shown by `/v1/providers`).
    token_rejected: AtomicBool,
}

impl ElevateAi {
    /// Kinds of the `cx` variant.
    pub const CX_KINDS: &'static [Kind] =
        &[Kind::Summary, Kind::Details, Kind::ActionItems, Kind::Coaching, Kind::Topics, Kind::Composition];
    /// Kinds of the `standard` variant.
    pub const STANDARD_KINDS: &'static [Kind] = &[Kind::Summary, Kind::Details, Kind::ActionItems, Kind::Topics];

    /// `shared`: where the replicas of the gateway share the account's
    /// concurrency (`max_concurrency` for the fleet); None: per replica.
    /// `budget`: the bytes of answers the process's providers buffer at once.
    pub fn new(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &ElevateAiConfig,
        shared: Option<Arc<dyn SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        Mappings::build_adapter(mapping::TABLE, &common.mappings, |m| {
            Self::with_mappings(provider, common, config, m, shared, budget)
        })
    }

    fn with_mappings(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &ElevateAiConfig,
        mappings: Mappings,
        shared: Option<Arc<dyn SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, String> {
        let mut interactions = config.base_url.clone().ok_or("base_url is required")?;
        if !interactions.path().ends_with('/') {
            interactions.set_path(&format!("{}/", interactions.path()));
        }
        let interactions = interactions.join("v1/interactions/").map_err(|e| format!("base_url: {e}"))?;
        let mut token = HeaderValue::try_from(config.token().expose().as_str())
            .map_err(|_| "token: not a valid HTTP header value".to_owned())?;
        token.set_sensitive(true);
        let mut out = Outbound::new(common, concat!("summary-gateway/", env!("CARGO_PKG_VERSION")), budget.clone())
            .map_err(|e| format!("HTTP client: {e}"))?;
        if let Some(shared) = shared {
            // The vendor's limit is per account, whichever replica calls.
            out = out.with_fleet_slots(shared, format!("elevateai:{provider}:slots"), common.max_concurrency);
        }
        Ok(Self {
            provider,
            out,
            interactions,
            token,
            variant: config.variant,
            not_ready_retry_after: config.not_ready_retry_after,
            mappings,
            token_rejected: AtomicBool::new(false),
        })
    }

    /// The kinds this provider's variant produces.
    pub const fn kinds(&self) -> &'static [Kind] {
        match self.variant {
            ElevateAiVariant::Cx => Self::CX_KINDS,
            ElevateAiVariant::Standard => Self::STANDARD_KINDS,
        }
    }

    /// False while ElevateAI refuses the gateway's token.
    pub fn is_available(&self) -> bool {
        !self.token_rejected.load(Ordering::Relaxed)
    }

    /// The summary's language: only summaries are written in a chosen language
    /// (English unless asked); other kinds have none.
    pub fn language(kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        let canonical = match tag {
            Some(t) => Some(
                crate::language::canonical(t)
                    .ok_or_else(|| RequestProblem::Invalid(format!("language: `{t}` is not a BCP 47 language tag")))?,
            ),
            None => None,
        };
        Ok((kind == Kind::Summary).then(|| canonical.unwrap_or_else(|| "en".to_owned())))
    }

    /// Checks a request's conversation fits ElevateAI, before any call.
    pub fn validate(req: &SummaryRequest) -> Result<(), RequestProblem> {
        let c = &req.conversation;
        if c.text.is_some() || c.party.is_some() || c.extension_id.is_some() {
            return Err(RequestProblem::Invalid(
                "conversation: elevateai providers take the interaction's id only (`conversation.id`)".into(),
            ));
        }
        validate_interaction_id(c.id.as_deref())
    }

    /// Fetches one kind's result of an interaction.
    pub async fn summarize(&self, req: &SummaryRequest) -> Result<Completed, ProviderError> {
        let id = req.conversation.id.as_deref().unwrap_or_default();
        let url = self.url(id, self.route(req.kind))?;
        let language = match (req.kind, req.language.as_deref()) {
            (Kind::Summary, Some(tag)) => HeaderValue::try_from(tag).ok(),
            _ => None,
        };
        let answer = self
            .exchange(|| {
                let builder = self.out.client().get(url.clone());
                match &language {
                    Some(l) => builder.header(http::header::ACCEPT_LANGUAGE, l.clone()),
                    None => builder,
                }
            })
            .await?;
        let root = self.json(&answer)?;
        let (content, data) = mapping::map_kind(req.kind, self.mappings.section(req.kind.as_str()), &root)?;
        Ok(Completed {
            content,
            data,
            participants: Vec::new(),
            provider_ref: Some(json!({ "interaction_id": id })),
            created_at: None,
            updated_at: None,
        })
    }

    /// Asks a question about an interaction (spends one of its 5).
    pub async fn ask(&self, interaction: &str, question: &str) -> Result<Asked, ProviderError> {
        let url = self.url(interaction, self.ask_route())?;
        let body = serde_json::to_vec(&json!({ "question": question }))
            .map_err(|_| ProviderError::bad_answer(0, "a question it could not encode"))?;
        let answer = self
            .exchange(|| {
                self.out
                    .client()
                    .post(url.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        match answer.status {
            409 if is_limit(&answer) => Ok(Asked::LimitReached(detail(&answer))),
            // A question the model could not answer: it counts against the allowance.
            422 => Ok(Asked::Failed(JobFailure {
                message: "ElevateAI could not answer this question".into(),
                vendor: detail(&answer),
            })),
            _ => {
                let root = self.json(&answer)?;
                let answer_text = self
                    .mappings
                    .section("ask")
                    .raw_text("answer", &root)
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| {
                        ProviderError::bad_answer(200, "an answer without `answer` (check mappings.ask.answer)")
                    })?;
                Ok(Asked::Answered(answer_text.to_owned()))
            }
        }
    }

    /// The questions asked about an interaction so far, in order.
    pub async fn questions(&self, interaction: &str) -> Result<Vec<AskedQuestion>, ProviderError> {
        let url = self.url(interaction, self.ask_route())?;
        let answer = self.exchange(|| self.out.client().get(url.clone())).await?;
        let root = self.json(&answer)?;
        let m = self.mappings.section("ask");
        Ok(m.nodes("questions", &root)
            .into_iter()
            .filter_map(|node| {
                let question = m.string("questions.question", node)?;
                let answer = m.raw_text("questions.answer", node).map(str::trim).filter(|a| !a.is_empty());
                let failed = m
                    .string("questions.status", node)
                    .is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "failed" | "error" | "unanswered"));
                Some(AskedQuestion {
                    question,
                    answer: if failed { None } else { answer.map(str::to_owned) },
                    asked_at: m.string("questions.asked_at", node).and_then(|t| humantime::parse_rfc3339_weak(&t).ok()),
                })
            })
            .collect())
    }

    fn route(&self, kind: Kind) -> &'static str {
        let cx = self.variant == ElevateAiVariant::Cx;
        match kind {
            Kind::Summary if cx => "gen-ai/cx/summary",
            Kind::Summary => "gen-ai/summary",
            Kind::Details if cx => "gen-ai/cx/summary/details",
            Kind::Details => "gen-ai/summary/details",
            Kind::ActionItems if cx => "gen-ai/cx/agent/action-items",
            Kind::ActionItems => "gen-ai/action-items",
            Kind::Topics if cx => "gen-ai/cx/topics",
            Kind::Topics => "gen-ai/topics",
            // Only cx has these; `validate` keeps other variants from getting here.
            Kind::Coaching => "gen-ai/cx/agent/coaching-assistant",
            Kind::Composition => "gen-ai/cx/conversation-composition",
        }
    }

    fn ask_route(&self) -> &'static str {
        match self.variant {
            ElevateAiVariant::Cx => "gen-ai/cx/ask",
            ElevateAiVariant::Standard => "gen-ai/ask",
        }
    }

    fn url(&self, interaction: &str, route: &str) -> Result<Url, ProviderError> {
        // The id is a validated GUID: nothing in it can change the path.
        self.interactions
            .join(&format!("{interaction}/{route}"))
            .map_err(|_| ProviderError::bad_answer(0, "an interaction id it could not put in a URL"))
    }

    /// One call holding a slot of the provider's concurrency limit, retrying 408
    /// (model timed out) and 429 (account concurrency) with jittered exponential
    /// backoff while the request's deadline allows. Other statuses come back
    /// as they are for the caller to map; 401/403 and 5xx are mapped here.
    async fn exchange(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        let _slot = self.out.slot().await?;
        let deadline = Instant::now() + self.out.timeout();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let builder = request().header(TOKEN_HEADER, self.token.clone());
            let answer = match tokio::time::timeout_at(deadline, self.out.send(builder)).await {
                Ok(answer) => answer?,
                Err(_) => return Err(ProviderError::Timeout { after: self.out.timeout() }),
            };
            match answer.status {
                408 | 429 => {
                    let wait = answer.retry_after().unwrap_or(backoff).mul_f64(0.5 + fastrand::f64());
                    if Instant::now() + wait < deadline {
                        tracing::debug!(provider = %self.provider, status = answer.status, wait_ms = wait.as_millis(), "elevateai: retrying");
                        tokio::time::sleep(wait).await;
                        backoff = backoff.saturating_mul(2);
                        continue;
                    }
                    return Err(if answer.status == 408 {
                        ProviderError::Timeout { after: self.out.timeout() }
                    } else {
                        ProviderError::Overloaded {
                            retry_after: answer.retry_after().unwrap_or(Duration::from_secs(1)),
                        }
                    });
                }
                200..=299 | 409 | 422 => {
                    self.token_rejected.store(false, Ordering::Relaxed);
                    return Ok(answer);
                }
                _ => return Err(self.error(&answer)),
            }
        }
    }

    /// The JSON of a successful answer, or the vendor's error mapped.
    fn json(&self, answer: &Answer) -> Result<Value, ProviderError> {
        if !(200..300).contains(&answer.status) {
            return Err(self.error(answer));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|_| ProviderError::bad_answer(answer.status, "something that is not JSON"))
    }

    /// A vendor error status → the gateway's error table.
    fn error(&self, answer: &Answer) -> ProviderError {
        let vendor = detail(answer);
        match answer.status {
            401 | 403 => {
                if !self.token_rejected.swap(true, Ordering::Relaxed) {
                    tracing::error!(provider = %self.provider, "elevateai: the API token was rejected; check token_env");
                }
                ProviderError::Rejected { message: "ElevateAI rejected the gateway's API token".into(), vendor }
            }
            404 => ProviderError::NotFound { message: "ElevateAI has no such interaction".into(), vendor },
            409 => ProviderError::NotReady {
                message: "ElevateAI is still processing this interaction".into(),
                retry_after: answer.retry_after().unwrap_or(self.not_ready_retry_after),
                vendor,
            },
            422 => {
                ProviderError::Rejected { message: "ElevateAI cannot produce this for the interaction".into(), vendor }
            }
            504 => ProviderError::Timeout { after: self.out.timeout() },
            500..=599 => ProviderError::Unavailable {
                message: format!("ElevateAI failed (HTTP {})", answer.status),
                retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
                vendor,
            },
            other => ProviderError::bad_answer(other, &format!("HTTP {other}")),
        }
    }
}

/// Reference in, synchronous; kinds by variant; questions about an interaction.
#[async_trait::async_trait]
impl Vendor for ElevateAi {
    fn input(&self) -> Input {
        Input::Reference
    }

    fn vendor_codes(&self) -> &'static VendorCodes {
        &VENDOR_CODES
    }

    fn kinds(&self) -> &[Kind] {
        Self::kinds(self)
    }

    fn is_available(&self) -> bool {
        Self::is_available(self)
    }

    fn language(&self, kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        Self::language(kind, tag)
    }

    fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        Self::validate(req)
    }

    async fn start(&self, req: &SummaryRequest, _callback: Option<&Url>) -> Result<Started, ProviderError> {
        self.summarize(req).await.map(Started::Done)
    }

    fn questions(&self) -> Option<QuestionRules> {
        Some(QuestionRules { max_chars: MAX_QUESTION_CHARS, allowance: QUESTION_ALLOWANCE })
    }

    fn validate_question_conversation(&self, conversation_id: Option<&str>) -> Result<(), RequestProblem> {
        validate_interaction_id(conversation_id)
    }

    async fn ask(&self, conversation_id: &str, question: &str) -> Result<Asked, ProviderError> {
        Self::ask(self, conversation_id, question).await
    }

    async fn asked_questions(&self, conversation_id: &str) -> Result<Vec<AskedQuestion>, ProviderError> {
        self.questions(conversation_id).await
    }
}

/// An interaction id: a GUID (`8-4-4-4-12` hex digits).
pub fn validate_interaction_id(id: Option<&str>) -> Result<(), RequestProblem> {
    let Some(id) = id else {
        return Err(RequestProblem::Invalid("conversation.id: required (the ElevateAI interaction's GUID)".into()));
    };
    if id.len() != 36 || uuid::Uuid::try_parse(id).is_err() {
        return Err(RequestProblem::Invalid(format!(
            "conversation.id: `{}` is not a GUID (ElevateAI interaction ids look like 6b1a2c3d-...)",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// What the vendor said in an error answer.
fn detail(answer: &Answer) -> VendorDetail {
    let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let (code, message) = body.as_ref().map_or((None, None), error_parts);
    VendorDetail::new(Some(answer.status), code, message.as_deref())
}

/// The vendor's error code and message, wherever its (unpublished) error body puts them.
fn error_parts(body: &Value) -> (Option<Value>, Option<String>) {
    let nested = body.get("error").filter(|e| e.is_object());
    let code = body.get("code").or_else(|| nested.and_then(|e| e.get("code"))).filter(|c| !c.is_null()).cloned();
    let message = ["message", "detail", "title", "error"]
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_str))
        .or_else(|| nested.and_then(|e| e.get("message")).and_then(Value::as_str))
        .map(str::to_owned);
    (code, message)
}

/// Whether a 409 to a question means the allowance is spent (not "still processing").
fn is_limit(answer: &Answer) -> bool {
    let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let (code, message) = body.as_ref().map_or((None, None), error_parts);
    let text = format!("{} {}", code.map(|c| c.to_string()).unwrap_or_default(), message.unwrap_or_default())
        .to_ascii_lowercase();
    text.contains("limit") || text.contains("allowance") || text.contains("quota")
}

#[cfg(test)]
mod tests;
