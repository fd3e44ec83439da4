//! The one interface the gateway uses for every vendor.
//!
//! An enum rather than a trait object: the set of vendors is known at build
//! time, dispatch is a match, and each vendor's adapter keeps its own
//! concrete async methods.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway_config::{ProviderConfig, Secret, VendorConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::breaker::{Breaker, CircuitState};
use crate::canonical::{Content, Conversation, Kind, Participant};
use crate::commbox::CommBox;
use crate::elevateai::ElevateAi;
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::metrics::VendorCodes;
use crate::outbound::AnswerBudget;
use crate::yeastar::Yeastar;

/// What the caller asked for, validated against the API's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SummaryRequest {
    pub kind: Kind,
    /// BCP 47 tag, if the caller gave one.
    pub language: Option<String>,
    pub conversation: Conversation,
}

/// A vendor's completed result, mapped to the canonical parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub content: Content,
    pub data: Option<Value>,
    pub participants: Vec<Participant>,
    pub provider_ref: Option<Value>,
    /// When the vendor made it, if it says.
    pub created_at: Option<SystemTime>,
    pub updated_at: Option<SystemTime>,
}

/// What starting a summary gave.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "returned once per vendor call and consumed at once, never stored")]
pub enum Started {
    /// The result (synchronous vendors).
    Done(Completed),
    /// A job at the vendor, known by this reference (CommBox's `action_id`), to poll.
    Job(String),
}

/// Where a vendor job is.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "returned once per vendor call and consumed at once, never stored")]
pub enum Polled {
    Pending,
    Completed(Completed),
    /// The vendor gave up on it (a final state, not a transport error).
    Failed(JobFailure),
}

/// Why the vendor says a job failed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    pub message: String,
    pub vendor: VendorDetail,
}

/// What asking a question gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    Answered(String),
    /// The vendor could not answer it; it still counts against the allowance.
    Failed(JobFailure),
    /// The vendor's per-interaction allowance is spent.
    LimitReached(VendorDetail),
}

/// A question the vendor lists as asked about an interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedQuestion {
    pub question: String,
    /// `None`: the vendor could not answer it.
    pub answer: Option<String>,
    pub asked_at: Option<SystemTime>,
}

/// How the gateway runs an asynchronous provider's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPolicy {
    /// Mean time between polls (each wait is drawn from [2/3, 5/3] of it).
    pub poll_interval: Duration,
    /// Longest wait between polls while the vendor keeps failing.
    pub poll_backoff_max: Duration,
    /// Give up (`failed` / `provider_timeout`) this long after submission.
    pub job_timeout: Duration,
}

/// What a provider takes as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The conversation's text (`conversation.text`).
    Text,
    /// A reference to a conversation the vendor already has (`conversation.id`).
    Reference,
}

/// Whether the provider can currently be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    Available,
    /// The vendor rejected the gateway's own credentials; requests fail fast.
    CredentialsRejected,
    /// The vendor kept failing: its circuit breaker is open (or half-open, trying
    /// it again with a few requests); others get 503 `provider_unavailable`
    /// with `Retry-After` without a vendor call.
    CircuitOpen,
}

/// One configured provider: its name and its vendor's adapter.
pub struct Provider {
    name: Arc<str>,
    adapter: Adapter,
    /// Around every vendor operation.
    breaker: Breaker,
}

#[allow(clippy::large_enum_variant, reason = "one per configured provider, built once and shared behind an Arc")]
enum Adapter {
    CommBox(CommBox),
    ElevateAi(ElevateAi),
    Yeastar(Yeastar),
}

impl Provider {
    /// Builds the adapter of a configured provider (clients, token state,
    /// compiled mappings). Errors are every problem found, each with its path
    /// under the provider (`mappings.topics.items: ...`). Its answers are
    /// buffered within a budget of its own (the default size).
    pub fn from_config(config: &ProviderConfig) -> Result<Self, Vec<String>> {
        Self::from_config_shared(config, None, &AnswerBudget::default())
    }

    /// [`Self::from_config`] for one replica of several: what must be one for
    /// the whole fleet (Yeastar's token, ElevateAI's account concurrency) is
    /// kept in `shared`. If the shared store fails, each replica falls back to
    /// its own token and its own cap. `None`: this replica alone. `budget`:
    /// the bytes of vendor answers all of the process's providers buffer at once.
    pub fn from_config_shared(
        config: &ProviderConfig,
        shared: Option<Arc<dyn crate::shared::SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let breaker = Breaker::new(Arc::clone(&name), &config.common.circuit_breaker, shared.clone());
        let adapter = match &config.vendor {
            // CommBox's key has no login and no account-wide concurrency: nothing to share.
            VendorConfig::CommBox(c) => Adapter::CommBox(CommBox::new(Arc::clone(&name), &config.common, c, budget)?),
            VendorConfig::ElevateAi(e) => {
                Adapter::ElevateAi(ElevateAi::new(Arc::clone(&name), &config.common, e, shared, budget)?)
            }
            VendorConfig::Yeastar(y) => {
                Adapter::Yeastar(Yeastar::new(Arc::clone(&name), &config.common, y, shared, budget)?)
            }
        };
        Ok(Self { name, adapter, breaker })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (metrics labels take it without copying).
    pub const fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The provider's `type`.
    pub const fn type_name(&self) -> &'static str {
        match self.adapter {
            Adapter::CommBox(_) => "commbox",
            Adapter::ElevateAi(_) => "elevateai",
            Adapter::Yeastar(_) => "yeastar",
        }
    }

    /// The kinds it can produce.
    pub const fn kinds(&self) -> &'static [Kind] {
        match &self.adapter {
            Adapter::CommBox(_) => CommBox::KINDS,
            Adapter::ElevateAi(e) => e.kinds(),
            Adapter::Yeastar(_) => Yeastar::KINDS,
        }
    }

    pub const fn input(&self) -> Input {
        match self.adapter {
            Adapter::CommBox(_) => Input::Text,
            Adapter::ElevateAi(_) | Adapter::Yeastar(_) => Input::Reference,
        }
    }

    /// Whether `POST /v1/questions` works with it.
    pub const fn questions(&self) -> bool {
        match self.adapter {
            Adapter::ElevateAi(_) => true,
            Adapter::CommBox(_) | Adapter::Yeastar(_) => false,
        }
    }

    /// The summary's language as part of the request: the caller's BCP 47 tag
    /// (canonical case) or the provider's default for vendors that write in a
    /// chosen language; `None` for vendors that do not, so it is not part of the
    /// request's identity and the resource's `language` is null.
    pub fn language(&self, kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        match &self.adapter {
            Adapter::CommBox(c) => c.language(tag).map(Some),
            Adapter::ElevateAi(_) => ElevateAi::language(kind, tag),
            Adapter::Yeastar(_) => match tag {
                Some(t) if crate::language::canonical(t).is_none() => {
                    Err(RequestProblem::Invalid(format!("language: `{t}` is not a BCP 47 language tag")))
                }
                _ => Ok(None),
            },
        }
    }

    pub fn status(&self) -> ProviderStatus {
        let available = match &self.adapter {
            Adapter::CommBox(c) => c.is_available(),
            Adapter::ElevateAi(e) => e.is_available(),
            Adapter::Yeastar(y) => y.is_available(),
        };
        if !available {
            ProviderStatus::CredentialsRejected
        } else if self.breaker.state() == CircuitState::Closed {
            ProviderStatus::Available
        } else {
            ProviderStatus::CircuitOpen
        }
    }

    /// Where its circuit breaker is.
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// One vendor operation: through the breaker (refused at once while it is
    /// open), in a `vendor_call` span with its metrics.
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let codes = self.vendor_codes();
        self.breaker.run(crate::metrics::record(&self.name, self.type_name(), codes, operation, call)).await
    }

    /// The codes its adapter knows (the `vendor_code` label's values).
    const fn vendor_codes(&self) -> &'static VendorCodes {
        match self.adapter {
            Adapter::CommBox(_) => &crate::commbox::VENDOR_CODES,
            Adapter::ElevateAi(_) => &crate::elevateai::VENDOR_CODES,
            Adapter::Yeastar(_) => &crate::yeastar::VENDOR_CODES,
        }
    }

    /// How to run its jobs, for vendors that answer asynchronously.
    pub const fn job_policy(&self) -> Option<&JobPolicy> {
        match &self.adapter {
            Adapter::CommBox(c) => Some(c.policy()),
            Adapter::ElevateAi(_) | Adapter::Yeastar(_) => None,
        }
    }

    /// The secret path segment vendor callbacks must carry, if the vendor calls back.
    pub const fn callback_token(&self) -> Option<&Secret<String>> {
        match &self.adapter {
            Adapter::CommBox(c) => c.callback_token(),
            Adapter::ElevateAi(_) | Adapter::Yeastar(_) => None,
        }
    }

    /// Checks the request fits this provider (kind, conversation shape); no vendor call.
    pub fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        if !self.kinds().contains(&req.kind) {
            let kinds: Vec<&str> = self.kinds().iter().map(|k| k.as_str()).collect();
            return Err(RequestProblem::UnsupportedKind(format!(
                "provider `{}` ({}) does not produce `{}`; it produces {}",
                self.name,
                self.type_name(),
                req.kind.as_str(),
                kinds.join(", ")
            )));
        }
        match &self.adapter {
            Adapter::CommBox(_) => CommBox::validate(req),
            Adapter::ElevateAi(_) => ElevateAi::validate(req),
            Adapter::Yeastar(_) => Yeastar::validate(req),
        }
    }

    /// Starts the summary: the result from a synchronous vendor, or a job to poll.
    /// `callback` is where the vendor may report the job's end (vendors that call back).
    pub async fn start(&self, req: &SummaryRequest, callback: Option<&url::Url>) -> Result<Started, ProviderError> {
        let call = async {
            match &self.adapter {
                Adapter::CommBox(c) => c.start(req, callback).await,
                Adapter::ElevateAi(e) => e.summarize(req).await.map(Started::Done),
                Adapter::Yeastar(y) => y.summarize(req).await.map(Started::Done),
            }
        };
        self.call("start", call).await
    }

    /// Where a job started by [`Self::start`] is.
    pub async fn poll(&self, job_ref: &str) -> Result<Polled, ProviderError> {
        let call = async {
            match &self.adapter {
                Adapter::CommBox(c) => c.poll(job_ref).await,
                Adapter::ElevateAi(_) | Adapter::Yeastar(_) => Err(no_such_feature("jobs to poll")),
            }
        };
        self.call("poll", call).await
    }

    /// Checks a question is one this provider can ask about this conversation; no vendor call.
    pub fn validate_question(&self, conversation_id: Option<&str>, question: &str) -> Result<(), RequestProblem> {
        self.validate_questions_about(conversation_id)?;
        // Counted as sent: whitespace runs collapse to one space.
        let chars = crate::content::normalize_whitespace(question).chars().count();
        if chars == 0 {
            return Err(RequestProblem::Invalid("question: must not be empty".into()));
        }
        if chars > crate::elevateai::MAX_QUESTION_CHARS {
            return Err(RequestProblem::QuestionTooLong(format!(
                "question: at most {} characters; this one has {chars}",
                crate::elevateai::MAX_QUESTION_CHARS
            )));
        }
        Ok(())
    }

    /// Checks this provider answers questions, about a conversation of this id; no vendor call.
    pub fn validate_questions_about(&self, conversation_id: Option<&str>) -> Result<(), RequestProblem> {
        if !self.questions() {
            return Err(RequestProblem::UnsupportedKind(format!(
                "provider `{}` ({}) does not answer questions; providers that do have `questions: true` in GET /v1/providers",
                self.name,
                self.type_name()
            )));
        }
        crate::elevateai::validate_interaction_id(conversation_id)
    }

    /// Asks a question about a conversation (vendors with questions).
    pub async fn ask(&self, conversation_id: &str, question: &str) -> Result<Asked, ProviderError> {
        let call = async {
            match &self.adapter {
                Adapter::ElevateAi(e) => e.ask(conversation_id, question).await,
                Adapter::CommBox(_) | Adapter::Yeastar(_) => Err(no_such_feature("questions")),
            }
        };
        self.call("ask", call).await
    }

    /// The questions the vendor lists as asked about a conversation, in order.
    pub async fn asked_questions(&self, conversation_id: &str) -> Result<Vec<AskedQuestion>, ProviderError> {
        let call = async {
            match &self.adapter {
                Adapter::ElevateAi(e) => e.questions(conversation_id).await,
                Adapter::CommBox(_) | Adapter::Yeastar(_) => Err(no_such_feature("questions")),
            }
        };
        self.call("list_questions", call).await
    }
}

fn no_such_feature(what: &str) -> ProviderError {
    ProviderError::Rejected { message: format!("this provider has no {what}"), vendor: VendorDetail::default() }
}
