//! The vocabulary every vendor speaks, and [`Vendor`], the interface each one implements.
//!
//! A vendor's adapter (`providers/src/<vendor>/`) implements [`Vendor`]: what it can
//! do (kinds, input, questions, jobs, callbacks) and how (start, poll, ask). Defaults
//! stand for what a vendor cannot do, so an adapter writes only what it has.
//! [`crate::registry`] builds adapters from the configuration; [`crate::Provider`]
//! wraps one with its name, circuit breaker and metrics. Nothing here names a vendor.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use gateway_config::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use utoipa::ToSchema;

use crate::canonical::{Content, Conversation, Kind, Participant};
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::metrics::VendorCodes;

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

/// What a vendor allows in questions about a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuestionRules {
    /// Longest question, in characters after whitespace runs collapse to one space.
    pub max_chars: usize,
    /// Questions it answers per conversation (failed ones do not count).
    pub allowance: usize,
}

/// One vendor's adapter: what it can do, with defaults for what it cannot.
///
/// Only [`Vendor::input`], [`Vendor::vendor_codes`] and [`Vendor::start`] are
/// required: a synchronous vendor of summaries writes those. Its `type` is not
/// its own to say: it is its registry entry's ([`crate::registry`]).
/// Methods take no breaker and record no metrics; [`crate::Provider`] does both
/// around every call.
#[async_trait]
pub trait Vendor: Send + Sync {
    /// What it takes as input.
    fn input(&self) -> Input;

    /// The error codes it knows: the values of the `vendor_code` metric label.
    fn vendor_codes(&self) -> &'static VendorCodes;

    /// The kinds it can produce.
    fn kinds(&self) -> &[Kind] {
        &[Kind::Summary]
    }

    /// Whether the vendor still accepts the gateway's own credentials.
    fn is_available(&self) -> bool {
        true
    }

    /// The summary's language as part of the request: the caller's BCP 47 tag
    /// (canonical case) or a default, for vendors that write in a chosen language;
    /// `None` for those that do not (the default), so it is not part of the
    /// request's identity. A tag that is not BCP 47 is refused either way.
    fn language(&self, kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        let _ = kind;
        match tag {
            Some(t) if crate::language::canonical(t).is_none() => {
                Err(RequestProblem::Invalid(format!("language: `{t}` is not a BCP 47 language tag")))
            }
            _ => Ok(None),
        }
    }

    /// Checks the conversation fits the vendor (its kind is already checked
    /// against [`Vendor::kinds`]); no vendor call.
    fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        let _ = req;
        Ok(())
    }

    /// Starts the summary: the result from a synchronous vendor, or a job to poll.
    /// `callback` is where the vendor may report the job's end (vendors that call back).
    async fn start(&self, req: &SummaryRequest, callback: Option<&Url>) -> Result<Started, ProviderError>;

    /// How the gateway runs its jobs; `None` for synchronous vendors.
    fn job_policy(&self) -> Option<&JobPolicy> {
        None
    }

    /// Where a job [`Vendor::start`] began is.
    async fn poll(&self, job_ref: &str) -> Result<Polled, ProviderError> {
        let _ = job_ref;
        Err(no_such_feature("jobs to poll"))
    }

    /// The secret path segment its callbacks must carry, if the vendor calls back.
    fn callback_token(&self) -> Option<&Secret<String>> {
        None
    }

    /// The job reference a callback's body names, if it names one (the body is
    /// not trusted beyond that: the job's end is confirmed by polling).
    fn callback_job_ref(&self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }

    /// What it allows in questions; `None` (the default): it answers none.
    fn questions(&self) -> Option<QuestionRules> {
        None
    }

    /// Checks questions can be asked about a conversation of this id; no vendor call.
    fn validate_question_conversation(&self, conversation_id: Option<&str>) -> Result<(), RequestProblem> {
        let _ = conversation_id;
        Ok(())
    }

    /// Asks a question about a conversation.
    async fn ask(&self, conversation_id: &str, question: &str) -> Result<Asked, ProviderError> {
        let _ = (conversation_id, question);
        Err(no_such_feature("questions"))
    }

    /// The questions the vendor lists as asked about a conversation, in order.
    async fn asked_questions(&self, conversation_id: &str) -> Result<Vec<AskedQuestion>, ProviderError> {
        let _ = conversation_id;
        Err(no_such_feature("questions"))
    }
}

fn no_such_feature(what: &str) -> ProviderError {
    ProviderError::Rejected { message: format!("this provider has no {what}"), vendor: VendorDetail::default() }
}
