//! [`Provider`]: one configured provider, the interface the gateway calls for
//! every vendor. It wraps the vendor's adapter ([`Vendor`]) with its name, its
//! circuit breaker and the `vendor_call` span and metrics; what is particular to
//! a vendor is the adapter's.

use std::sync::Arc;

use gateway_config::{ProviderConfig, Secret};

use crate::breaker::{Breaker, CircuitState};
use crate::canonical::Kind;
use crate::error::{ProviderError, RequestProblem};
use crate::outbound::AnswerBudget;
use crate::vendor::{
    Asked, AskedQuestion, Input, JobPolicy, Polled, ProviderStatus, QuestionRules, Started, SummaryRequest, Vendor,
};

/// One configured provider: its name and its vendor's adapter.
pub struct Provider {
    name: Arc<str>,
    /// Its `type`, as its registry entry names it.
    type_name: &'static str,
    vendor: Box<dyn Vendor>,
    /// Around every vendor operation.
    breaker: Breaker,
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
    /// the whole fleet (a vendor login, an account's concurrency) is kept in
    /// `shared`. If the shared store fails, each replica falls back to its own.
    /// `None`: this replica alone. `budget`: the bytes of vendor answers all of
    /// the process's providers buffer at once.
    pub fn from_config_shared(
        config: &ProviderConfig,
        shared: Option<Arc<dyn crate::shared::SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let breaker = Breaker::new(Arc::clone(&name), &config.common.circuit_breaker, shared.clone());
        let vendor = crate::registry::build(&crate::registry::Build { name: &name, config, shared, budget })?;
        Ok(Self { name, type_name: config.vendor.type_name(), vendor, breaker })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (metrics labels take it without copying).
    pub const fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The provider's `type` as written in YAML (`yeastar`): `type` in
    /// `GET /v1/providers`, the `type` label of metrics.
    pub const fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The kinds it can produce.
    pub fn kinds(&self) -> &[Kind] {
        self.vendor.kinds()
    }

    pub fn input(&self) -> Input {
        self.vendor.input()
    }

    /// Whether `POST /v1/questions` works with it.
    pub fn questions(&self) -> bool {
        self.vendor.questions().is_some()
    }

    /// What it allows in questions, if it answers them.
    pub fn question_rules(&self) -> Option<QuestionRules> {
        self.vendor.questions()
    }

    /// The summary's language as part of the request: the caller's BCP 47 tag
    /// (canonical case) or the provider's default for vendors that write in a
    /// chosen language; `None` for vendors that do not, so it is not part of the
    /// request's identity and the resource's `language` is null.
    pub fn language(&self, kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        self.vendor.language(kind, tag)
    }

    pub fn status(&self) -> ProviderStatus {
        if !self.vendor.is_available() {
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
        let codes = self.vendor.vendor_codes();
        self.breaker.run(crate::metrics::record(&self.name, self.type_name(), codes, operation, call)).await
    }

    /// How to run its jobs, for vendors that answer asynchronously.
    pub fn job_policy(&self) -> Option<&JobPolicy> {
        self.vendor.job_policy()
    }

    /// The secret path segment vendor callbacks must carry, if the vendor calls back.
    pub fn callback_token(&self) -> Option<&Secret<String>> {
        self.vendor.callback_token()
    }

    /// The job reference a vendor callback's body names, if it names one.
    pub fn callback_job_ref(&self, body: &[u8]) -> Option<String> {
        self.vendor.callback_job_ref(body)
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
        self.vendor.validate(req)
    }

    /// Starts the summary: the result from a synchronous vendor, or a job to poll.
    /// `callback` is where the vendor may report the job's end (vendors that call back).
    pub async fn start(&self, req: &SummaryRequest, callback: Option<&url::Url>) -> Result<Started, ProviderError> {
        self.call("start", self.vendor.start(req, callback)).await
    }

    /// Where a job started by [`Self::start`] is.
    pub async fn poll(&self, job_ref: &str) -> Result<Polled, ProviderError> {
        self.call("poll", self.vendor.poll(job_ref)).await
    }

    /// Checks a question is one this provider can ask about this conversation; no vendor call.
    pub fn validate_question(&self, conversation_id: Option<&str>, question: &str) -> Result<(), RequestProblem> {
        let rules = self.validate_questions_about(conversation_id)?;
        // Counted as sent: whitespace runs collapse to one space.
        let chars = crate::content::normalize_whitespace(question).chars().count();
        if chars == 0 {
            return Err(RequestProblem::Invalid("question: must not be empty".into()));
        }
        if chars > rules.max_chars {
            return Err(RequestProblem::QuestionTooLong(format!(
                "question: at most {} characters; this one has {chars}",
                rules.max_chars
            )));
        }
        Ok(())
    }

    /// Checks this provider answers questions, about a conversation of this id;
    /// no vendor call. Its rules, if it does.
    pub fn validate_questions_about(&self, conversation_id: Option<&str>) -> Result<QuestionRules, RequestProblem> {
        let Some(rules) = self.vendor.questions() else {
            return Err(RequestProblem::UnsupportedKind(format!(
                "provider `{}` ({}) does not answer questions; providers that do have `questions: true` in GET /v1/providers",
                self.name,
                self.type_name()
            )));
        };
        self.vendor.validate_question_conversation(conversation_id)?;
        Ok(rules)
    }

    /// Asks a question about a conversation (vendors with questions).
    pub async fn ask(&self, conversation_id: &str, question: &str) -> Result<Asked, ProviderError> {
        self.call("ask", self.vendor.ask(conversation_id, question)).await
    }

    /// The questions the vendor lists as asked about a conversation, in order.
    pub async fn asked_questions(&self, conversation_id: &str) -> Result<Vec<AskedQuestion>, ProviderError> {
        self.call("list_questions", self.vendor.asked_questions(conversation_id)).await
    }
}
