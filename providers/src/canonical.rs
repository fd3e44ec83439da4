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
    /// Yeastar: the extension's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_id: Option<u64>,
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
    #[schema(value_type = Option<Object>)]
    pub provider_code: Option<Value>,
    pub provider_message: Option<String>,
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
