//! The vendors behind summary-gateway, and the canonical schema they are mapped to.
//!
//! Layout:
//! - [`canonical`]: the summary resource callers see (API.md), with OpenAPI schemas.
//! - [`content`]: sections → `content.text` / `content.markdown`, shared by all vendors.
//! - [`vendor`]: the vocabulary every vendor speaks and [`Vendor`], the trait each adapter implements.
//! - [`provider`]: [`Provider`], one configured provider (adapter, breaker, metrics): what the gateway calls.
//! - [`registry`]: the vendors of this build, one entry each; builds adapters from the configuration.
//! - [`breaker`]: each provider's circuit breaker around its vendor calls.
//! - [`error`]: vendor failures already classified by the gateway's error table.
//! - [`outbound`]: the pooled HTTP transport with concurrency cap, rate limit and deadline.
//! - [`language`]: BCP 47 tags in canonical case.
//! - [`commbox`]: CommBox — adapter, markdown mapping, simulator (asynchronous jobs).
//! - [`elevateai`]: ElevateAI — adapter, per-kind JSONPath mapping, questions, simulator.
//! - [`http`]: `type: http` — a vendor declared in YAML: templates, auth, jobs, error table.
//! - [`mapping`]: response mappings as data (JSONPath, compiled once, overridable in YAML).
//! - [`metrics`]: the `vendor_call` span and vendor-call metrics around every provider operation.
//! - [`shared`]: state shared with other replicas (one vendor login, one concurrency cap for the fleet).
//! - [`time`]: wall-clock milliseconds, as every part keeps them.
//! - [`yeastar`]: Yeastar P-Series — adapter, token, HTML mapping, simulator, fixtures.

pub mod breaker;
pub mod canonical;
pub mod commbox;
pub mod content;
pub mod elevateai;
pub mod error;
pub mod http;
pub mod language;
pub mod mapping;
pub mod metrics;
pub mod outbound;
pub mod provider;
pub mod registry;
pub mod shared;
#[cfg(any(test, feature = "sim"))]
pub mod sim_hooks;
pub mod time;
pub mod vendor;
pub mod yeastar;

pub use breaker::CircuitState;
pub use canonical::{
    Content, Conversation, Kind, Participant, Party, Question, QuestionStatus, Section, Status, Summary, SummaryError,
};
pub use error::{ProviderError, RequestProblem, VendorDetail};
pub use provider::Provider;
pub use shared::{SharedError, SharedState};
pub use vendor::{
    Asked, AskedQuestion, Completed, Input, JobFailure, JobPolicy, Polled, ProviderStatus, QuestionRules, Started,
    SummaryRequest, Vendor,
};
