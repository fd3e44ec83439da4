//! `type: commbox` — CommBox AI Conversation Summary (text in, asynchronous).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::VendorSettings;
use crate::error::{ConfigError, join};
use crate::schema::{Humantime, exactly_one_of, not_both, required};
use crate::{EnvLookup, Secret, resolve_secret};

/// CommBox keeps results and action ids for 12 hours: no job outlives that.
pub const VENDOR_RETENTION: Duration = Duration::from_secs(12 * 3600);

/// A CommBox account: AI Conversation Summary of a conversation's text,
/// asynchronous. A request answers 202 while the gateway polls CommBox (or
/// CommBox calls back); the result comes by `GET`, long-poll or webhook.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = required("base_url"),
    transform = exactly_one_of("token_env, token"),
    transform = not_both("callback_token_env", "callback_token")
)]
pub struct CommBoxConfig {
    /// The API, `https://api.commbox.io`; the adapter adds `/ai-services/...`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Name of an environment variable holding the API key (sent as `Authorization: Bearer`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// The API key inline (instead of `token_env`). For local use only.
    #[serde(default)]
    pub token: Option<Secret<String>>,
    /// BCP 47 tag used when a request gives no `language`.
    #[serde(default = "default_language")]
    pub default_language: String,
    /// Mean time between two polls of a pending job; each wait is drawn from
    /// [2/3, 5/3] of it (2–5 s for the default 3 s). CommBox advises 2–5 s.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub poll_interval: Duration,
    /// Longest wait between polls while the vendor keeps failing (exponential backoff up to it).
    #[serde(default = "default_poll_backoff_max", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub poll_backoff_max: Duration,
    /// A job still pending this long after submission fails with `provider_timeout`.
    /// At most 12 h, CommBox's own retention.
    #[serde(default = "default_job_timeout", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub job_timeout: Duration,
    /// Name of an environment variable holding the secret path segment of vendor
    /// callbacks: with `server.public_url`, CommBox is told to call
    /// `/callbacks/<provider>/<token>`. At least 24 characters of A-Z, a-z, 0-9, `-`
    /// and `_` (`openssl rand -hex 24`). Omit: polling only.
    #[serde(default)]
    pub callback_token_env: Option<String>,
    /// The callback token inline (instead of `callback_token_env`). For local use only.
    #[serde(default)]
    pub callback_token: Option<Secret<String>>,
    /// Resolved API key.
    #[serde(skip)]
    pub resolved_token: Option<Secret<String>>,
    /// Resolved callback token.
    #[serde(skip)]
    pub resolved_callback_token: Option<Secret<String>>,
}

fn default_language() -> String {
    "en".to_owned()
}

const fn default_poll_interval() -> Duration {
    Duration::from_secs(3)
}

const fn default_poll_backoff_max() -> Duration {
    Duration::from_secs(60)
}

const fn default_job_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// Shortest callback token accepted: it is the only thing guarding the route.
const MIN_CALLBACK_TOKEN_LEN: usize = 24;

impl VendorSettings for CommBoxConfig {
    const TYPE: &'static str = "commbox";
    const DEF: &'static str = "CommBoxProvider";
    const EXAMPLE: Option<&'static str> = Some("commbox.yaml");

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
        self.resolved_callback_token = resolve_secret(
            path,
            "callback_token",
            self.callback_token.as_ref(),
            self.callback_token_env.as_deref(),
            env,
            errors,
        );
        if let Some(token) = &self.resolved_callback_token {
            let t = token.expose();
            if t.len() < MIN_CALLBACK_TOKEN_LEN
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                errors.push(ConfigError::new(
                    join(path, "callback_token"),
                    format!(
                        "must be at least {MIN_CALLBACK_TOKEN_LEN} characters of A-Z, a-z, 0-9, `-`, `_` \
                         (e.g. `openssl rand -hex 24`)"
                    ),
                ));
            }
        }
        if self.poll_interval < Duration::from_millis(10) {
            errors.push(ConfigError::new(join(path, "poll_interval"), "must be at least 10ms"));
        }
        if self.poll_backoff_max < self.poll_interval {
            errors.push(ConfigError::new(join(path, "poll_backoff_max"), "must be at least poll_interval"));
        }
        if self.job_timeout.is_zero() || self.job_timeout > VENDOR_RETENTION {
            errors.push(ConfigError::new(
                join(path, "job_timeout"),
                "must be longer than 0s and at most 12h (CommBox keeps results 12 hours)",
            ));
        }
    }
}

impl CommBoxConfig {
    /// The API key. Present once the config has loaded.
    pub fn token(&self) -> Secret<String> {
        self.resolved_token.clone().unwrap_or_else(|| Secret::new(String::new()))
    }
}
