//! `POST /v1/questions` and `GET /v1/questions`: questions about a conversation
//! (providers with `questions: true` in `GET /v1/providers`, i.e. ElevateAI).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use providers::{Conversation, Provider, Question};
use serde::{Deserialize, Serialize};
use url::form_urlencoded;
use utoipa::ToSchema;

use super::json::JsonBody;
use super::{BodyProblems, CallerProblems, VendorProblems};
use crate::error::{ApiError, AuthError, Problem, RequestError};
use crate::live::Live;
use crate::middleware::auth::Caller;
use crate::state::App;
use crate::summaries::CacheStatus;

/// Body of `POST /v1/questions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskQuestion {
    /// A configured provider's name that answers questions.
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub provider: String,
    /// `{"id": "<interaction GUID>"}`.
    #[schema(value_type = InteractionRef)]
    pub conversation: Conversation,
    /// At most 250 characters once whitespace runs are collapsed to one space (else 422
    /// `question_too_long`); not blank.
    #[schema(pattern = "\\S")]
    pub question: String,
}

/// The conversation a question is about: the interaction's GUID, nothing else
/// (documentation of `AskQuestion.conversation`, read as a `Conversation`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct InteractionRef {
    /// The interaction's GUID (`8-4-4-4-12` hex digits).
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    id: String,
}

/// Earlier questions and answers about a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionList {
    pub data: Vec<Question>,
}

/// Ask a question about a conversation.
#[utoipa::path(
    post,
    path = "/v1/questions",
    tag = "questions",
    request_body = AskQuestion,
    responses(
        (status = 200, description = "Answered, or `failed` when the vendor could not answer (it still spent one question). \
            A question asked before is answered from the store (`Cache-Status: summary-gateway; hit`).", body = Question),
        (status = 400, description = "invalid_request: malformed body, a blank question, or the conversation id is not a GUID", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the key may not use this provider", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "question_limit_reached: the vendor's per-interaction allowance (5) is spent; or conversation_not_ready", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "question_too_long (over 250 characters), unknown_provider, unsupported_kind (the provider answers no questions)", body = Problem, content_type = "application/problem+json"),
        BodyProblems,
        CallerProblems,
        VendorProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn ask_question(
    State(app): State<Arc<App>>,
    Extension(live): Extension<Arc<Live>>,
    Extension(caller): Extension<Arc<Caller>>,
    JsonBody(body): JsonBody<AskQuestion>,
) -> Result<Response, ApiError> {
    let provider = usable_provider(&live, &caller, &body.provider)?;
    let c = &body.conversation;
    if c.text.is_some() || c.party.is_some() || c.extension_id.is_some() {
        return Err(RequestError::Invalid("conversation: questions take the conversation's id only".into()).into());
    }
    provider.validate_question(c.id.as_deref(), &body.question).map_err(RequestError::from)?;
    let conversation = c.id.as_deref().unwrap_or_default();
    let charge = |cache| app.quotas.charge(&caller, provider.name(), cache);
    let (question, cache, quota) = app.questions.ask(provider, conversation, &body.question, charge).await?;
    let mut response = Json(question).into_response();
    quota.apply(response.headers_mut());
    response.headers_mut().insert(
        "cache-status",
        HeaderValue::from_static(if cache == CacheStatus::Hit {
            "summary-gateway; hit"
        } else {
            "summary-gateway; fwd=miss"
        }),
    );
    Ok(response)
}

/// Questions asked about a conversation so far, in order.
#[utoipa::path(
    get,
    path = "/v1/questions",
    tag = "questions",
    params(
        ("provider" = String, Query, min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
            description = "A provider that answers questions"),
        ("conversation_id" = String, Query,
            pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            description = "The interaction's GUID"),
    ),
    responses(
        (status = 200, body = QuestionList),
        (status = 400, description = "invalid_request: a parameter missing, or not a GUID", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown_provider, unsupported_kind", body = Problem, content_type = "application/problem+json"),
        CallerProblems,
        VendorProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn list_questions(
    State(app): State<Arc<App>>,
    Extension(live): Extension<Arc<Live>>,
    Extension(caller): Extension<Arc<Caller>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut provider, mut conversation) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "provider" => provider = Some(value.into_owned()),
            "conversation_id" => conversation = Some(value.into_owned()),
            _ => {}
        }
    }
    let provider = provider.ok_or_else(|| RequestError::Invalid("provider: required query parameter".into()))?;
    let conversation =
        conversation.ok_or_else(|| RequestError::Invalid("conversation_id: required query parameter".into()))?;
    let provider = usable_provider(&live, &caller, &provider)?;
    provider.validate_questions_about(Some(&conversation)).map_err(RequestError::from)?;
    let data = app.questions.list(provider, &conversation).await?;
    let mut response = Json(QuestionList { data }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn usable_provider<'a>(live: &'a Live, caller: &Caller, name: &str) -> Result<&'a Arc<Provider>, ApiError> {
    let provider = live.provider(name).ok_or_else(|| RequestError::UnknownProvider(name.to_owned()))?;
    if !caller.may_use(provider.name()) {
        return Err(AuthError::Forbidden { provider: name.to_owned() }.into());
    }
    Ok(provider)
}
