//! The one interface the gateway uses for every vendor.
//!
//! An enum rather than a trait object: the set of vendors is known at build
//! time, dispatch is a match, and each vendor's adapter keeps its own
//! concrete async methods.

use std::sync::Arc;
use std::time::SystemTime;

use gateway_config::{ProviderConfig, VendorConfig};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::canonical::{Content, Conversation, Kind, Participant};
use crate::error::{ProviderError, RequestProblem};
use crate::yeastar::Yeastar;

/// What the caller asked for, validated against the API's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
}

/// One configured provider: its name and its vendor's adapter.
pub struct Provider {
    name: Arc<str>,
    adapter: Adapter,
}

enum Adapter {
    Yeastar(Yeastar),
}

impl Provider {
    /// Builds the adapter of a configured provider (clients, token state).
    pub fn from_config(config: &ProviderConfig) -> Result<Self, String> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let adapter = match &config.vendor {
            VendorConfig::Yeastar(y) => Adapter::Yeastar(Yeastar::new(Arc::clone(&name), &config.common, y)?),
        };
        Ok(Self { name, adapter })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider's `type`.
    pub const fn type_name(&self) -> &'static str {
        match self.adapter {
            Adapter::Yeastar(_) => "yeastar",
        }
    }

    /// The kinds it can produce.
    pub const fn kinds(&self) -> &'static [Kind] {
        match self.adapter {
            Adapter::Yeastar(_) => Yeastar::KINDS,
        }
    }

    pub const fn input(&self) -> Input {
        match self.adapter {
            Adapter::Yeastar(_) => Input::Reference,
        }
    }

    /// Whether `POST /v1/questions` works with it.
    pub const fn questions(&self) -> bool {
        match self.adapter {
            Adapter::Yeastar(_) => false,
        }
    }

    /// Whether the vendor produces the summary in a requested language. If not,
    /// `language` is not part of the request's identity and the resource's
    /// `language` is null.
    pub const fn honours_language(&self) -> bool {
        match self.adapter {
            Adapter::Yeastar(_) => false,
        }
    }

    pub fn status(&self) -> ProviderStatus {
        match &self.adapter {
            Adapter::Yeastar(y) if !y.is_available() => ProviderStatus::CredentialsRejected,
            Adapter::Yeastar(_) => ProviderStatus::Available,
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
            Adapter::Yeastar(_) => Yeastar::validate(req),
        }
    }

    /// Produces the summary (a synchronous vendor round trip).
    pub async fn summarize(&self, req: &SummaryRequest) -> Result<Completed, ProviderError> {
        match &self.adapter {
            Adapter::Yeastar(y) => y.summarize(req).await,
        }
    }
}
