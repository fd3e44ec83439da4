//! `type: elevateai` — ElevateAI (NICE) generative-AI results of interactions.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{CommonDefault, VendorSettings};
use crate::error::{ConfigError, join};
use crate::schema::{Humantime, exactly_one_of, required};
use crate::{EnvLookup, Secret, resolve_secret};

/// ElevateAI refuses more than this many concurrent gen-AI requests per account:
/// the provider's `max_concurrency` defaults to it.
pub const ACCOUNT_CONCURRENCY: usize = 10;

/// Which family of gen-AI routes the account has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ElevateAiVariant {
    /// `/gen-ai/cx/*`: every kind, coaching and composition included.
    #[default]
    Cx,
    /// `/gen-ai/*`: summary, details, action items, topics and questions.
    Standard,
}

/// An ElevateAI (NICE) account: the generative-AI results of an interaction
/// (six kinds with `cx`), synchronous, and questions about it (`POST /v1/questions`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = required("base_url"), transform = exactly_one_of("token_env, token"))]
pub struct ElevateAiConfig {
    /// The host, `https://api.elevateai.com`; the adapter adds `/v1/interactions/...`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Name of an environment variable holding the API token (sent as `X-API-Token`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// The API token inline (instead of `token_env`). For local use only.
    #[serde(default)]
    pub token: Option<Secret<String>>,
    /// Which gen-AI routes the account has: `cx` (every kind) or `standard` (no
    /// `coaching`, no `composition`).
    #[serde(default)]
    pub variant: ElevateAiVariant,
    /// `Retry-After` given to callers when the vendor is still processing an
    /// interaction (409 `conversation_not_ready`) and says nothing itself.
    #[serde(default = "default_not_ready_retry", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub not_ready_retry_after: Duration,
    /// Resolved API token.
    #[serde(skip)]
    pub resolved_token: Option<Secret<String>>,
}

const fn default_not_ready_retry() -> Duration {
    Duration::from_secs(30)
}

impl VendorSettings for ElevateAiConfig {
    const TYPE: &'static str = "elevateai";
    const DEF: &'static str = "ElevateAiProvider";
    const EXAMPLE: Option<&'static str> = Some("elevateai.yaml");

    fn common_defaults() -> Vec<CommonDefault> {
        vec![CommonDefault {
            key: "max_concurrency",
            default: ACCOUNT_CONCURRENCY.into(),
            why: "ElevateAI refuses more concurrent requests per account",
        }]
    }

    fn resolve(&mut self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        match &self.base_url {
            Some(url) => super::check_base_url(path, url, errors),
            None => errors.push(ConfigError::new(join(path, "base_url"), "missing field")),
        }
        self.resolved_token =
            resolve_secret(path, "token", self.token.as_ref(), self.token_env.as_deref(), env, errors);
        if self.token.is_none() && self.token_env.is_none() {
            errors.push(ConfigError::new(join(path, "token_env"), "missing field (or token inline)"));
        }
        if self.not_ready_retry_after.is_zero() {
            errors.push(ConfigError::new(join(path, "not_ready_retry_after"), "must be longer than 0s"));
        }
    }
}

impl ElevateAiConfig {
    /// The API token. Present once the config has loaded.
    pub fn token(&self) -> Secret<String> {
        self.resolved_token.clone().unwrap_or_else(|| Secret::new(String::new()))
    }
}
