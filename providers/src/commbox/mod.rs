//! CommBox AI Conversation Summary: text in, asynchronous.
//!
//! - [`CommBox`]: the adapter — request validation (150 characters, language),
//!   submit (`POST /ai-services/summary_conversation`), poll (`GET ...?action_id=`),
//!   the four differently shaped error bodies, markdown → canonical content.
//! - the bold-header markdown answer → sections: [`crate::content::markdown`]
//!   (shared with `type: http`).
//! - [`simulator`]: a faithful stand-in for CommBox, used by tests and the demo.
//!
//! Vendor facts (PROVIDERS.md): submit answers **200** `{"status":"Initialized",
//! "action_id"}` (`answer` null, `""` or absent); a poll answers `Pending`,
//! `Completed` with `answer`, or `Failed` with an optional `error_message`;
//! results expire after 12 hours. The gateway turns that into its own job
//! lifecycle (`pending` → `completed` | `failed`); the schedule lives in the
//! gateway, the policy ([`JobPolicy`]) comes from this provider's config.

#[cfg(any(test, feature = "sim"))]
pub mod simulator;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_config::providers::commbox::CommBoxConfig;
use gateway_config::{CommonConfig, Secret};
use http::HeaderValue;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use crate::canonical::{Content, Kind};
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::mapping::{Mappings, SectionSpec};
use crate::metrics::VendorCodes;
use crate::outbound::{Answer, AnswerBudget, Outbound};
use crate::vendor::{Completed, Input, JobFailure, JobPolicy, Polled, Started, SummaryRequest, Vendor};

/// CommBox's errors carry no code of their own: the statuses its adapter tells
/// apart are the `vendor_code` label's values.
pub const VENDOR_CODES: VendorCodes =
    VendorCodes { codes: &[], statuses: &["200", "400", "401", "403", "404", "429", "500", "502", "503", "504"] };

/// CommBox refuses shorter texts; the gateway refuses them first, without a call.
pub const MIN_TEXT_CHARS: usize = 150;

/// BCP 47 primary language subtag → the language name CommBox wants.
const LANGUAGES: &[(&str, &str)] = &[
    ("ar", "arabic"),
    ("cs", "czech"),
    ("da", "danish"),
    ("de", "german"),
    ("el", "greek"),
    ("en", "english"),
    ("es", "spanish"),
    ("fi", "finnish"),
    ("fr", "french"),
    ("he", "hebrew"),
    ("hi", "hindi"),
    ("hu", "hungarian"),
    ("id", "indonesian"),
    ("it", "italian"),
    ("iw", "hebrew"),
    ("ja", "japanese"),
    ("ko", "korean"),
    ("ms", "malay"),
    ("nb", "norwegian"),
    ("nl", "dutch"),
    ("nn", "norwegian"),
    ("no", "norwegian"),
    ("pl", "polish"),
    ("pt", "portuguese"),
    ("ro", "romanian"),
    ("ru", "russian"),
    ("sv", "swedish"),
    ("th", "thai"),
    ("tr", "turkish"),
    ("uk", "ukrainian"),
    ("vi", "vietnamese"),
    ("zh", "chinese"),
];

/// The language name CommBox wants for a BCP 47 tag (`pt-BR` → `portuguese`), by its primary subtag.
pub fn language_name(tag: &str) -> Option<&'static str> {
    let primary = tag.split('-').next()?.to_ascii_lowercase();
    LANGUAGES.binary_search_by(|(code, _)| (*code).cmp(primary.as_str())).ok().map(|i| LANGUAGES[i].1)
}

/// The BCP 47 primary subtags CommBox can write in, for error messages.
fn supported_languages() -> String {
    LANGUAGES.iter().map(|(code, _)| *code).collect::<Vec<_>>().join(", ")
}

/// The CommBox adapter of one configured provider.
pub struct CommBox {
    provider: Arc<str>,
    out: Outbound,
    url: Url,
    authorization: HeaderValue,
    default_language: String,
    policy: JobPolicy,
    callback_token: Option<Secret<String>>,
    /// Set while CommBox answers 401 to the gateway's key (shown by `/v1/providers`).
    key_rejected: AtomicBool,
    mappings: Mappings,
}

/// The built-in mapping of a poll's answer: `text` is the markdown summary,
/// `error_message` why a `Failed` job failed.
pub const MAPPING: &[SectionSpec] = &[SectionSpec {
    name: "summary",
    fields: &[("text", Some("$.answer")), ("error_message", Some("$.error_message"))],
    content: true,
}];

#[derive(Serialize)]
struct Submit<'a> {
    text: &'a str,
    language: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

impl CommBox {
    /// Kinds CommBox produces.
    pub const KINDS: &'static [Kind] = &[Kind::Summary];

    /// `budget`: the bytes of answers the process's providers buffer at once.
    pub fn new(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &CommBoxConfig,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        Mappings::build_adapter(MAPPING, &common.mappings, |m| Self::with_mappings(provider, common, config, m, budget))
    }

    fn with_mappings(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &CommBoxConfig,
        mappings: Mappings,
        budget: &AnswerBudget,
    ) -> Result<Self, String> {
        let mut base = config.base_url.clone().ok_or("base_url is required")?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base.join("ai-services/summary_conversation").map_err(|e| format!("base_url: {e}"))?;
        let default_language = crate::language::canonical(&config.default_language)
            .filter(|tag| language_name(tag).is_some())
            .ok_or_else(|| {
                format!(
                    "default_language: `{}` is not a language CommBox writes (BCP 47 tags: {})",
                    config.default_language,
                    supported_languages()
                )
            })?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", config.token().expose()))
            .map_err(|_| "token: not a valid HTTP header value".to_owned())?;
        authorization.set_sensitive(true);
        let out = Outbound::new(common, concat!("summary-gateway/", env!("CARGO_PKG_VERSION")), budget.clone())
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            provider,
            out,
            url,
            authorization,
            default_language,
            policy: JobPolicy {
                poll_interval: config.poll_interval,
                poll_backoff_max: config.poll_backoff_max,
                job_timeout: config.job_timeout,
            },
            callback_token: config.resolved_callback_token.clone(),
            key_rejected: AtomicBool::new(false),
            mappings,
        })
    }

    /// False while CommBox refuses the gateway's API key.
    pub fn is_available(&self) -> bool {
        !self.key_rejected.load(Ordering::Relaxed)
    }

    pub const fn policy(&self) -> &JobPolicy {
        &self.policy
    }

    /// The secret path segment of `/callbacks/{provider}/{token}`, if configured.
    pub const fn callback_token(&self) -> Option<&Secret<String>> {
        self.callback_token.as_ref()
    }

    /// The request's language, or the provider's default, as a canonical BCP 47 tag.
    pub fn language(&self, tag: Option<&str>) -> Result<String, RequestProblem> {
        let Some(tag) = tag else { return Ok(self.default_language.clone()) };
        match crate::language::canonical(tag) {
            Some(canonical) if language_name(&canonical).is_some() => Ok(canonical),
            Some(_) => Err(RequestProblem::UnsupportedLanguage(format!(
                "language: CommBox cannot write `{tag}`; it writes {}",
                supported_languages()
            ))),
            None => Err(RequestProblem::Invalid(format!("language: `{tag}` is not a BCP 47 language tag"))),
        }
    }

    /// Checks a request's conversation fits CommBox, before any call.
    pub fn validate(req: &SummaryRequest) -> Result<(), RequestProblem> {
        let c = &req.conversation;
        if c.id.is_some() || c.party.is_some() || c.extension_id.is_some() {
            return Err(RequestProblem::Invalid(
                "conversation: commbox providers summarize text; give conversation.text only".into(),
            ));
        }
        let Some(text) = &c.text else {
            return Err(RequestProblem::Invalid("conversation.text: required for commbox".into()));
        };
        let chars = text.trim().chars().count();
        if chars < MIN_TEXT_CHARS {
            return Err(RequestProblem::TextTooShort(format!(
                "conversation.text: CommBox needs at least {MIN_TEXT_CHARS} characters; this one has {chars}"
            )));
        }
        Ok(())
    }

    /// Submits the text. CommBox answers with an `action_id` to poll.
    pub async fn start(&self, req: &SummaryRequest, callback: Option<&Url>) -> Result<Started, ProviderError> {
        let text = req.conversation.text.as_deref().unwrap_or_default();
        let tag = req.language.as_deref().unwrap_or(&self.default_language);
        let language = language_name(tag).unwrap_or("english");
        let body = serde_json::to_vec(&Submit { text, language, callback_url: callback.map(Url::as_str) })
            .map_err(|_| ProviderError::bad_answer(0, "a request it could not encode"))?;
        let answer = self.exchange(|| self.out.client().post(self.url.clone()).body(body.clone())).await?;
        let status = self.answer_status(&answer)?;
        let action_id = string_field(&status, "action_id")
            .ok_or_else(|| ProviderError::bad_answer(answer.status, "a submission without action_id"))?;
        // CommBox answers "Initialized"; if it ever answers with the result at once, take it.
        match parse_status(&status) {
            Some(VendorState::Completed) => match self.map_answer(status, &action_id) {
                Ok(completed) => Ok(Started::Done(completed)),
                Err(_) => Ok(Started::Job(action_id)),
            },
            _ => Ok(Started::Job(action_id)),
        }
    }

    /// Asks CommBox where a submission is.
    pub async fn poll(&self, action_id: &str) -> Result<Polled, ProviderError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("action_id", action_id);
        let answer = self.exchange(|| self.out.client().get(url.clone())).await?;
        let status = self.answer_status(&answer)?;
        match parse_status(&status) {
            Some(VendorState::Pending) => Ok(Polled::Pending),
            Some(VendorState::Completed) => self.map_answer(status, action_id).map(Polled::Completed),
            Some(VendorState::Failed) => {
                let code = status.get("status").cloned();
                let message = self.mappings.section("summary").string("error_message", &Value::Object(status));
                Ok(Polled::Failed(JobFailure {
                    message: "CommBox could not summarize this conversation".into(),
                    vendor: VendorDetail::new(Some(answer.status), code, message.as_deref()),
                }))
            }
            None => Err(ProviderError::bad_answer(answer.status, "a status it does not document")),
        }
    }

    /// A `Completed` answer → canonical content, through the mapping.
    fn map_answer(&self, body: serde_json::Map<String, Value>, action_id: &str) -> Result<Completed, ProviderError> {
        let body = Value::Object(body);
        let m = self.mappings.section("summary");
        let mut sections = m
            .raw_text("text", &body)
            .filter(|t| !t.trim().is_empty())
            .map(crate::content::markdown::sections_from_markdown)
            .ok_or_else(|| {
                ProviderError::bad_answer(200, "`Completed` without an answer (check mappings.summary.text)")
            })?;
        sections.extend(m.listed_sections(&body, None));
        if sections.is_empty() {
            return Err(ProviderError::bad_answer(200, "an answer with no text"));
        }
        Ok(Completed {
            content: Content::from_sections(sections),
            data: None,
            participants: Vec::new(),
            provider_ref: Some(json!({ "action_id": action_id })),
            created_at: None,
            updated_at: None,
        })
    }

    /// One call with a slot, retrying 429 with backoff inside the deadline.
    async fn exchange(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        let _slot = self.out.slot().await?;
        let deadline = Instant::now() + self.out.timeout();
        let mut retries = 0_u32;
        loop {
            let builder = request()
                .header(http::header::AUTHORIZATION, self.authorization.clone())
                .header(http::header::CONTENT_TYPE, "application/json");
            let answer = self.out.send(builder).await?;
            if answer.status == 429 {
                let backoff = Duration::from_millis(250 * 4_u64.pow(retries));
                if retries < 2 && Instant::now() + backoff < deadline {
                    retries += 1;
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            return Ok(answer);
        }
    }

    /// The JSON object of a 200 answer, or the vendor's error mapped to the gateway's table.
    fn answer_status(&self, answer: &Answer) -> Result<serde_json::Map<String, Value>, ProviderError> {
        let body: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&answer.body).ok();
        if answer.status == 200 {
            self.key_rejected.store(false, Ordering::Relaxed);
            return body.ok_or_else(|| ProviderError::bad_answer(200, "something that is not a JSON object"));
        }
        let vendor = VendorDetail::new(Some(answer.status), None, body.as_ref().and_then(error_message).as_deref());
        Err(match answer.status {
            400 => {
                ProviderError::Rejected { message: "CommBox rejected the request (language or text)".into(), vendor }
            }
            401 | 403 => {
                if !self.key_rejected.swap(true, Ordering::Relaxed) {
                    tracing::error!(provider = %self.provider, "commbox: the API key was rejected; check token_env");
                }
                ProviderError::Rejected { message: "CommBox rejected the gateway's API key".into(), vendor }
            }
            404 => ProviderError::NotFound {
                message: "CommBox has no such summary job (its results expire after 12 hours)".into(),
                vendor,
            },
            429 => ProviderError::Unavailable {
                message: "CommBox is throttling the gateway".into(),
                retry_after: answer.retry_after().unwrap_or(Duration::from_secs(10)),
                vendor,
            },
            500..=599 => ProviderError::Unavailable {
                message: format!("CommBox failed (HTTP {})", answer.status),
                retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
                vendor,
            },
            other => ProviderError::bad_answer(other, &format!("HTTP {other}")),
        })
    }
}

/// Where a CommBox submission is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VendorState {
    Pending,
    Completed,
    Failed,
}

fn parse_status(body: &serde_json::Map<String, Value>) -> Option<VendorState> {
    let status = body.get("status")?.as_str()?.trim().to_ascii_lowercase();
    match status.as_str() {
        "initialized" | "pending" | "processing" | "in_progress" | "inprogress" => Some(VendorState::Pending),
        "completed" | "done" | "success" => Some(VendorState::Completed),
        "failed" | "error" => Some(VendorState::Failed),
        _ => None,
    }
}

fn string_field(body: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The message in any of CommBox's four error shapes: `error` (unless it is the
/// string `"true"`), `message`, or `description`.
fn error_message(body: &serde_json::Map<String, Value>) -> Option<String> {
    ["message", "error", "description"]
        .into_iter()
        .filter_map(|field| string_field(body, field))
        .find(|m| !m.eq_ignore_ascii_case("true"))
}

/// The `action_id` of a vendor callback's body, if it has one (the body is not
/// trusted beyond that: the job is confirmed by polling).
pub fn callback_action_id(body: &[u8]) -> Option<String> {
    let body: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    string_field(&body, "action_id")
}

/// Text in, asynchronous: a job per submission, polled (or called back) until it ends.
#[async_trait::async_trait]
impl Vendor for CommBox {
    fn input(&self) -> Input {
        Input::Text
    }

    fn vendor_codes(&self) -> &'static VendorCodes {
        &VENDOR_CODES
    }

    fn kinds(&self) -> &[Kind] {
        Self::KINDS
    }

    fn is_available(&self) -> bool {
        Self::is_available(self)
    }

    fn language(&self, _kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        Self::language(self, tag).map(Some)
    }

    fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        Self::validate(req)
    }

    async fn start(&self, req: &SummaryRequest, callback: Option<&Url>) -> Result<Started, ProviderError> {
        Self::start(self, req, callback).await
    }

    fn job_policy(&self) -> Option<&JobPolicy> {
        Some(self.policy())
    }

    async fn poll(&self, job_ref: &str) -> Result<Polled, ProviderError> {
        Self::poll(self, job_ref).await
    }

    fn callback_token(&self) -> Option<&Secret<String>> {
        Self::callback_token(self)
    }

    fn callback_job_ref(&self, body: &[u8]) -> Option<String> {
        callback_action_id(body)
    }
}

#[cfg(test)]
mod tests;
