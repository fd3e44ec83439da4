//! Questions about a conversation (`POST`/`GET /v1/questions`).
//!
//! The vendor answers only a few questions per interaction (ElevateAI: 5), so
//! every question asked through the gateway is kept in the store's ledger for
//! the conversation (`store.question_ttl`):
//! - the same question again (whitespace and case aside) is answered from the
//!   ledger, without a vendor call and without spending the allowance;
//! - once the ledger holds as many answered questions as the vendor allows, a
//!   new question is refused with 409 `question_limit_reached` without a call;
//!   short of that the vendor decides (its 409 is passed on as the same error):
//!   it also counts questions asked outside the gateway, and keeps a separate
//!   allowance for failed questions, so its refusal of one question says
//!   nothing certain about the next;
//! - identical questions arriving together make one vendor call (single flight;
//!   with a shared store, for the whole fleet: the question's flight is claimed
//!   in the store like a summary's, and followers read the ledger after it);
//! - a question the vendor could not answer is kept as `failed` and asked again
//!   next time (it may be answerable; the vendor has its own allowance for failures).
//!
//! `GET` lists the ledger; without one, the vendor's own list (which also
//! holds questions asked outside the gateway) seeds it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use providers::{Asked, AskedQuestion, Conversation, Provider, Question, QuestionStatus, SummaryError, VendorDetail};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, RequestError};
use crate::resource::rfc3339;
use crate::single_flight::{FlightWork, Flights};
use crate::store::{QuestionLedger, QuestionLedgers, StoreError, StoredSummary, Stores};
use crate::summaries::CacheStatus;
use crate::waiters::Waiters;

/// The question service shared by the handlers.
pub struct Questions {
    store: Arc<dyn QuestionLedgers>,
    ttl: Duration,
    flights: Flights<Question>,
}

/// The text a question is recognised by: whitespace collapsed, case folded.
fn recognised(question: &str) -> String {
    providers::content::normalize_whitespace(question).to_lowercase()
}

/// `q_` + 32 hex digits of SHA-256 over (provider, conversation, question as recognised).
pub fn question_id(provider: &str, conversation: &str, question: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"summary-gateway/question/v1");
    for part in [provider, conversation, &recognised(question)] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("q_{}", hex::encode(&h.finalize()[..16]))
}

impl Questions {
    /// `flight_ends`: the ends of other replicas' flights (fed by the store's events).
    pub fn new(stores: &Stores, ttl: Duration, flight_ends: Arc<Waiters<()>>, flight_ttl: Duration) -> Self {
        Self {
            store: Arc::clone(&stores.ledgers),
            ttl,
            flights: Flights::new(stores.fleet.clone(), flight_ends, flight_ttl),
        }
    }

    /// Answers a question: from the ledger if it was asked before, else from the
    /// vendor (once, however many identical questions arrive together).
    /// The question must have passed [`Provider::validate_question`]. `admit`
    /// is asked before it is answered (the caller's quota; not when the vendor's
    /// allowance refuses it): its refusal is the answer, its value is returned.
    pub async fn ask<A, F, T>(
        self: &Arc<Self>,
        provider: &Arc<Provider>,
        conversation: &str,
        question: &str,
        admit: A,
    ) -> Result<(Question, CacheStatus, T), ApiError>
    where
        A: FnOnce(CacheStatus) -> F,
        F: Future<Output = Result<T, ApiError>>,
    {
        let question = providers::content::normalize_whitespace(question);
        let id = question_id(provider.name(), conversation, &question);
        let ledger = self.store.question_ledger(provider.name(), conversation).await?.unwrap_or_default();
        if let Some(known) = ledger.questions.iter().find(|q| q.id == id && q.status == QuestionStatus::Answered) {
            let admitted = admit(CacheStatus::Hit).await?;
            return Ok((known.clone(), CacheStatus::Hit, admitted));
        }
        // The API checked the provider answers questions; without rules no allowance is known.
        let allowance = provider.question_rules().map_or(usize::MAX, |rules| rules.allowance);
        if answered(&ledger) >= allowance {
            return Err(limit_reached(provider.name(), allowance));
        }
        let admitted = admit(CacheStatus::Miss).await?;
        let work = QuestionFlight {
            questions: Arc::clone(self),
            provider: Arc::clone(provider),
            conversation: conversation.to_owned(),
            question,
            id: id.clone(),
        };
        let asked = crate::metrics::vendor_wait(self.flights.run(&id, work));
        Ok((asked.await?, CacheStatus::Miss, admitted))
    }

    async fn ask_vendor(
        &self,
        provider: &Provider,
        conversation: &str,
        question: String,
        id: String,
    ) -> Result<Question, ApiError> {
        let name: Arc<str> = Arc::from(provider.name());
        let resource = |answer: Option<String>, error: Option<SummaryError>| Question {
            id: id.clone(),
            provider: provider.name().to_owned(),
            conversation: conversation_ref(conversation),
            question: question.clone(),
            status: if answer.is_some() { QuestionStatus::Answered } else { QuestionStatus::Failed },
            answer,
            error,
            created_at: rfc3339(SystemTime::now()),
        };
        let asked = provider.ask(conversation, &question).await.map_err(|e| ApiError::provider(&name, e))?;
        let resource = match asked {
            Asked::Answered(answer) => resource(Some(answer), None),
            Asked::Failed(failure) => {
                resource(None, Some(SummaryError::from_vendor("provider_failed", failure.message, &failure.vendor)))
            }
            Asked::LimitReached(vendor) => {
                tracing::info!(provider = %name, "the vendor refused a question: its allowance is spent");
                // Asked before, but the ledger forgot it (expired, or asked outside the gateway)?
                return match Self::vendor_list(provider, conversation).await {
                    Some(questions) => {
                        let found =
                            questions.iter().find(|q| q.id == id && q.status == QuestionStatus::Answered).cloned();
                        self.merge(provider.name(), conversation, questions).await;
                        found.ok_or_else(|| limit_reached_by_vendor(provider.name(), &vendor))
                    }
                    None => Err(limit_reached_by_vendor(provider.name(), &vendor)),
                };
            }
        };
        self.merge(provider.name(), conversation, vec![resource.clone()]).await;
        Ok(resource)
    }

    /// The questions asked about a conversation, in order: the ledger, or the
    /// vendor's list when the store has no ledger (which then seeds it).
    pub async fn list(&self, provider: &Provider, conversation: &str) -> Result<Vec<Question>, ApiError> {
        if let Some(ledger) = self.store.question_ledger(provider.name(), conversation).await? {
            return Ok(ledger.questions);
        }
        let name: Arc<str> = Arc::from(provider.name());
        let asked = provider.asked_questions(conversation).await.map_err(|e| ApiError::provider(&name, e))?;
        let questions = to_resources(provider, conversation, asked);
        self.merge(provider.name(), conversation, questions.clone()).await;
        Ok(questions)
    }

    async fn vendor_list(provider: &Provider, conversation: &str) -> Option<Vec<Question>> {
        match provider.asked_questions(conversation).await {
            Ok(asked) => Some(to_resources(provider, conversation, asked)),
            Err(e) => {
                tracing::warn!(provider = provider.name(), error = %e, "could not list the vendor's questions");
                None
            }
        }
    }

    /// Records questions; a store failure is logged, not fatal: the caller
    /// still gets the answer, only its reuse is lost.
    async fn merge(&self, provider: &str, conversation: &str, questions: Vec<Question>) {
        if let Err(e) = self.store.merge_questions(provider, conversation, questions, self.ttl).await {
            tracing::warn!(provider, error = %e, "could not record a question in the store");
        }
    }
}

/// A question to the vendor, asked once for the fleet.
struct QuestionFlight {
    questions: Arc<Questions>,
    provider: Arc<Provider>,
    conversation: String,
    question: String,
    id: String,
}

impl FlightWork for QuestionFlight {
    type Output = Question;

    async fn look(&self) -> Result<Option<Question>, ApiError> {
        // An identical question's flight may have ended between our read and
        // this one starting: look again before spending the allowance.
        let ledger = self.questions.store.question_ledger(self.provider.name(), &self.conversation).await?;
        Ok(ledger
            .and_then(|l| l.questions.into_iter().find(|q| q.id == self.id && q.status == QuestionStatus::Answered)))
    }

    fn stored(&self, _: StoredSummary) -> Option<Question> {
        // Question ids are never summary ids: nothing to take from it.
        None
    }

    async fn run(self) -> Result<Question, ApiError> {
        self.questions.ask_vendor(&self.provider, &self.conversation, self.question, self.id).await
    }

    fn without_fleet(&self, error: StoreError) -> Result<(), ApiError> {
        // Without the ledger's single flight, a burst could spend the allowance several times.
        Err(error.into())
    }
}

fn answered(ledger: &QuestionLedger) -> usize {
    ledger.questions.iter().filter(|q| q.status == QuestionStatus::Answered).count()
}

fn conversation_ref(id: &str) -> Conversation {
    Conversation { id: Some(id.to_owned()), ..Conversation::default() }
}

fn to_resources(provider: &Provider, conversation: &str, asked: Vec<AskedQuestion>) -> Vec<Question> {
    asked
        .into_iter()
        .map(|q| {
            let failed = q.answer.is_none();
            Question {
                id: question_id(provider.name(), conversation, &q.question),
                provider: provider.name().to_owned(),
                conversation: conversation_ref(conversation),
                question: q.question,
                status: if failed { QuestionStatus::Failed } else { QuestionStatus::Answered },
                answer: q.answer,
                error: failed.then(|| {
                    SummaryError::from_vendor(
                        "provider_failed",
                        "the vendor could not answer this question",
                        &VendorDetail::default(),
                    )
                }),
                created_at: rfc3339(q.asked_at.unwrap_or_else(SystemTime::now)),
            }
        })
        .collect()
}

fn limit_reached(provider: &str, allowance: usize) -> ApiError {
    RequestError::QuestionLimitReached(format!(
        "the {allowance} questions `{provider}` answers about this conversation are spent; \
         questions already asked are still answered (GET /v1/questions lists them)"
    ))
    .into()
}

fn limit_reached_by_vendor(provider: &str, vendor: &VendorDetail) -> ApiError {
    let said = vendor.message.as_deref().map(|m| format!(" (the vendor said: {m})")).unwrap_or_default();
    RequestError::QuestionLimitReached(format!(
        "`{provider}` has no questions left for this conversation{said}; GET /v1/questions lists the ones asked"
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_question_gets_the_same_id_whatever_its_spacing_or_case() {
        let a = question_id("ai", "c", "What did the customer want?");
        assert_eq!(a, question_id("ai", "c", "  what did the   customer want? "));
        assert_ne!(a, question_id("ai", "c", "What did the agent do?"));
        assert_ne!(a, question_id("ai", "d", "What did the customer want?"));
        assert_eq!(a.len(), 34);
    }
}
