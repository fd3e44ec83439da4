//! The canonical summary resource: the one schema callers see, whichever
//! vendor produced it. Field names are fixed by API.md.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What to produce about a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Summary,
    Details,
    ActionItems,
    Coaching,
    Topics,
    Composition,
}

impl Kind {
    pub const ALL: [Self; 6] =
        [Self::Summary, Self::Details, Self::ActionItems, Self::Coaching, Self::Topics, Self::Composition];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Details => "details",
            Self::ActionItems => "action_items",
            Self::Coaching => "coaching",
            Self::Topics => "topics",
            Self::Composition => "composition",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a summary is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Completed,
    Failed,
}

/// Which side of a call a summary is about (Yeastar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Caller,
    Callee,
}

impl Party {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
        }
    }
}

/// The conversation a summary is about: `{"text"}` for text-in vendors,
/// `{"id"}` (plus `party` and `extension_id` for Yeastar) for reference-in vendors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The vendor's conversation / call-leg id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The conversation itself (text-in vendors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Yeastar: whose summary (`caller` → `src_ext_id`, `callee` → `dst_ext_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
    /// Yeastar: the extension's id. An integer: `3202`, or `3202.0` (JSON Schema's
    /// `integer` is any number without a fraction), at most 2^53 − 1 (I-JSON).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral")]
    #[schema(maximum = 9_007_199_254_740_991_f64)]
    pub extension_id: Option<u64>,
}

/// The largest integer every JSON implementation reads exactly (RFC 7493 §2.2).
pub const MAX_JSON_INTEGER: u64 = (1 << 53) - 1;

/// An integer as JSON Schema means it: a number with no fractional part, so
/// `3202.0` is `3202`, as the OpenAPI document (`type: integer`) promises.
/// Negative, fractional or past [`MAX_JSON_INTEGER`] is an error.
fn integral<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        // Exact: a float with no fraction in 0..=2^53 converts without loss.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=MAX_JSON_INTEGER as f64).contains(&f) => Some(f as u64),
        _ => None,
    };
    match value {
        Some(n) if n <= MAX_JSON_INTEGER => Ok(Some(n)),
        _ => Err(D::Error::custom(format!("`{number}` is not an integer from 0 to {MAX_JSON_INTEGER}"))),
    }
}

/// The vendor's structure made uniform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Content {
    /// Plain text, no markup at all.
    pub text: String,
    /// Clean markdown.
    pub markdown: String,
    /// Titled sections of items.
    pub sections: Vec<Section>,
}

/// One section: a title (if the vendor gave one) and its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Section {
    pub title: Option<String>,
    pub items: Vec<String>,
}

/// Someone in the conversation, as the vendor names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// Why a summary failed (a failed summary is still a resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SummaryError {
    pub code: String,
    pub message: String,
    pub provider_status: Option<u16>,
    /// The vendor's own code as it sent it: a string (ElevateAI) or a number (Yeastar `errcode`).
    #[schema(value_type = Option<Value>)]
    pub provider_code: Option<Value>,
    pub provider_message: Option<String>,
}

impl SummaryError {
    /// An error of API `code` with what the vendor said (`provider_status`, `_code`, `_message`).
    pub fn from_vendor(code: &str, message: impl Into<String>, vendor: &crate::error::VendorDetail) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            provider_status: vendor.status,
            provider_code: vendor.code.clone(),
            provider_message: vendor.message.clone(),
        }
    }
}

/// The canonical summary resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// `sum_` + 32 hex digits, derived from (provider, kind, language, conversation):
    /// the same request gets the same id from any replica.
    pub id: String,
    pub status: Status,
    /// The provider's configured name.
    pub provider: String,
    /// The provider's type (`yeastar`, `commbox`, `elevateai`).
    pub provider_type: String,
    pub kind: Kind,
    /// BCP 47 tag of the summary's language, when the vendor lets us choose it.
    pub language: Option<String>,
    pub conversation: Conversation,
    /// Null unless `status` is `completed`.
    pub content: Option<Content>,
    /// Kind-specific structure (e.g. `details`), else null.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    pub participants: Vec<Participant>,
    /// The vendor's own identifiers for what was fetched.
    #[schema(value_type = Option<Object>)]
    pub provider_ref: Option<Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339: when the gateway stops serving this result from its store.
    pub expires_at: Option<String>,
    pub error: Option<SummaryError>,
}

/// Whether a question got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionStatus {
    Answered,
    /// The vendor could not answer it (it still spent one of the allowance).
    Failed,
}

/// A question about a conversation and its answer (`POST /v1/questions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Question {
    /// `q_` + 32 hex digits, derived from (provider, conversation, question): asking
    /// the same question again gets the same id, and the stored answer.
    pub id: String,
    /// The provider's configured name.
    pub provider: String,
    pub conversation: Conversation,
    pub question: String,
    /// Null unless `status` is `answered`.
    pub answer: Option<String>,
    pub status: QuestionStatus,
    /// Why the vendor could not answer, when `status` is `failed`.
    pub error: Option<SummaryError>,
    /// RFC 3339: when it was asked.
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extension_id(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Conversation>(&format!(r#"{{"id":"c","extension_id":{json}}}"#))
            .map(|c| c.extension_id)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn extension_ids_are_integers_as_json_schema_means_them() {
        assert_eq!(extension_id("3202"), Ok(Some(3202)));
        assert_eq!(extension_id("3202.0"), Ok(Some(3202)));
        assert_eq!(extension_id("3.202e3"), Ok(Some(3202)));
        assert_eq!(extension_id("0"), Ok(Some(0)));
        assert_eq!(extension_id("null"), Ok(None));
        assert_eq!(extension_id("9007199254740991"), Ok(Some(MAX_JSON_INTEGER)));
        // 17 significant digits: read exactly (serde_json's float_roundtrip), so still integral.
        assert_eq!(extension_id("4004254499144226.0"), Ok(Some(4_004_254_499_144_226)));
        for bad in ["3202.5", "-1", "-1.0", "9007199254740992", "1e300", "\"3202\"", "true"] {
            assert!(extension_id(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(serde_json::from_str::<Conversation>(r#"{"id":"c"}"#).unwrap().extension_id, None);
    }
}
