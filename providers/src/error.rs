//! What can go wrong at a vendor, already mapped to the gateway's error table.
//! Vendor bodies are never carried raw: only the vendor's status, code and a
//! short message, which the API turns into problem+json.

use std::time::Duration;

use serde_json::Value;

/// What the vendor said, for `provider_status` / `provider_code` / `provider_message`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VendorDetail {
    /// The vendor's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The vendor's own error code (Yeastar `errcode`, ...).
    pub code: Option<Value>,
    /// The vendor's own short message, truncated.
    pub message: Option<String>,
}

impl VendorDetail {
    /// Keeps vendor messages short and single-line in errors and logs.
    pub fn new(status: Option<u16>, code: Option<Value>, message: Option<&str>) -> Self {
        let message = message.map(|m| {
            let m = crate::content::normalize_whitespace(m);
            if m.chars().count() > 200 { m.chars().take(200).collect::<String>() + "…" } else { m }
        });
        Self { status, code, message: message.filter(|m| !m.is_empty()) }
    }
}

/// A failed call to a vendor, classified by what the caller should see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// 404 `not_found`: the vendor has no such conversation/summary.
    #[error("{message}")]
    NotFound { message: String, vendor: VendorDetail },
    /// 409 `conversation_not_ready`: the vendor is still processing.
    #[error("{message}")]
    NotReady { message: String, retry_after: Duration, vendor: VendorDetail },
    /// 502 `provider_error`: the vendor answered with an error or something unparseable.
    #[error("{message}")]
    Rejected { message: String, vendor: VendorDetail },
    /// 503 `provider_unavailable`: the vendor is down or refusing us for a while.
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration, vendor: VendorDetail },
    /// 503 `overloaded`: too many calls to this vendor already in flight or over its rate.
    #[error("too many requests to this provider are in flight; try again shortly")]
    Overloaded { retry_after: Duration },
    /// 503 `provider_unavailable`, without a vendor call: the provider's circuit
    /// breaker is open after the vendor kept failing ([`crate::breaker`]).
    #[error(
        "the provider has been failing; the gateway is not calling it for now (circuit open): retry in {}s",
        retry_after.as_secs().max(1)
    )]
    CircuitOpen { retry_after: Duration },
    /// 504 `provider_timeout`: the vendor did not answer in time.
    #[error("the provider did not answer within {}", humantime::format_duration(*after))]
    Timeout { after: Duration },
}

impl ProviderError {
    /// The vendor detail, if the vendor said something.
    pub const fn vendor(&self) -> Option<&VendorDetail> {
        match self {
            Self::NotFound { vendor, .. }
            | Self::NotReady { vendor, .. }
            | Self::Rejected { vendor, .. }
            | Self::Unavailable { vendor, .. } => Some(vendor),
            Self::Overloaded { .. } | Self::CircuitOpen { .. } | Self::Timeout { .. } => None,
        }
    }

    /// An unparseable or unexpected answer.
    pub fn bad_answer(status: u16, what: &str) -> Self {
        Self::Rejected {
            message: format!("the provider answered with {what}"),
            vendor: VendorDetail::new(Some(status), None, None),
        }
    }
}

/// Why a request cannot go to this provider as it is (checked before any vendor call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestProblem {
    /// 400 `invalid_request`: wrong shape for this provider.
    #[error("{0}")]
    Invalid(String),
    /// 422 `unsupported_kind`.
    #[error("{0}")]
    UnsupportedKind(String),
    /// 422 `text_too_short`.
    #[error("{0}")]
    TextTooShort(String),
    /// 422 `unsupported_language`: a valid tag the vendor cannot write in.
    #[error("{0}")]
    UnsupportedLanguage(String),
    /// 422 `question_too_long`.
    #[error("{0}")]
    QuestionTooLong(String),
}
