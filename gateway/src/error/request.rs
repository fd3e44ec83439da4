//! Requests the gateway refuses before any vendor is involved.

/// What is wrong with the request itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// 400 `invalid_request`: malformed JSON, missing/extra fields, wrong types, bad ids.
    #[error("{0}")]
    Invalid(String),
    /// 415 `unsupported_media_type`.
    #[error("the body must be JSON (`Content-Type: application/json`)")]
    UnsupportedMediaType,
    /// 413 `payload_too_large`.
    #[error("the body is larger than the {limit} bytes this gateway accepts")]
    PayloadTooLarge { limit: usize },
    /// 422 `unknown_provider`.
    #[error("no provider is named `{0}`; GET /v1/providers lists them")]
    UnknownProvider(String),
    /// 422 `unsupported_kind`.
    #[error("{0}")]
    UnsupportedKind(String),
    /// 422 `text_too_short`.
    #[error("{0}")]
    TextTooShort(String),
    /// 422 `unsupported_language`: a valid BCP 47 tag the provider cannot write in.
    #[error("{0}")]
    UnsupportedLanguage(String),
    /// 422 `question_too_long` (questions: over 250 characters).
    #[error("{0}")]
    QuestionTooLong(String),
    /// 409 `question_limit_reached` (questions: the vendor's allowance is spent).
    #[error("{0}")]
    QuestionLimitReached(String),
    /// 422 `invalid_callback_url`.
    #[error("callback_url: {0}")]
    InvalidCallbackUrl(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 408 `request_timeout`: the caller sent its request too slowly.
    #[error("the request body did not arrive within {}", humantime::format_duration(*after))]
    TooSlow { after: std::time::Duration },
    /// 414 `uri_too_long` (an addition to API.md's table).
    #[error("the request URI is longer than the {limit} bytes this gateway accepts")]
    UriTooLong { limit: usize },
    /// 431 `headers_too_large` (an addition to API.md's table).
    #[error("the request headers are larger than the {limit} bytes this gateway accepts")]
    HeadersTooLarge { limit: usize },
    /// 405 `method_not_allowed`.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
}

impl From<providers::RequestProblem> for RequestError {
    fn from(p: providers::RequestProblem) -> Self {
        match p {
            providers::RequestProblem::Invalid(m) => Self::Invalid(m),
            providers::RequestProblem::UnsupportedKind(m) => Self::UnsupportedKind(m),
            providers::RequestProblem::TextTooShort(m) => Self::TextTooShort(m),
            providers::RequestProblem::UnsupportedLanguage(m) => Self::UnsupportedLanguage(m),
            providers::RequestProblem::QuestionTooLong(m) => Self::QuestionTooLong(m),
        }
    }
}
