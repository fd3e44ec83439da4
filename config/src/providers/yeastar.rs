//! `type: yeastar` — Yeastar P-Series OpenAPI.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::VendorSettings;
use crate::error::ConfigError;
use crate::schema::{Humantime, exactly_one_of, required};
use crate::{EnvLookup, Secret, resolve_secret};

/// A Yeastar P-Series PBX: the AI summary of a call recording
/// (`cdr/getaisummary`), synchronous. The gateway logs in with the PBX's OpenAPI
/// credentials and keeps the access token fresh.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = required("base_url"),
    transform = exactly_one_of("client_id_env, client_id"),
    transform = exactly_one_of("client_secret_env, client_secret")
)]
pub struct YeastarConfig {
    /// The PBX, `https://pbx.example.com:8088`; the adapter adds `/openapi/...`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Name of an environment variable holding the OpenAPI Client ID.
    #[serde(default)]
    pub client_id_env: Option<String>,
    /// The Client ID inline (instead of `client_id_env`). For local use only.
    #[serde(default)]
    pub client_id: Option<Secret<String>>,
    /// Name of an environment variable holding the OpenAPI Client Secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The Client Secret inline (instead of `client_secret_env`). For local use only.
    #[serde(default)]
    pub client_secret: Option<Secret<String>>,
    /// `User-Agent` sent with every request; Yeastar refuses requests without one.
    #[serde(default = "default_user_agent")]
    #[schemars(length(min = 1))]
    pub user_agent: String,
    /// Renew the access token (valid 30 minutes) this long before it expires.
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub token_refresh_margin: Duration,
    /// Resolved Client ID.
    #[serde(skip)]
    pub resolved_client_id: Option<Secret<String>>,
    /// Resolved Client Secret.
    #[serde(skip)]
    pub resolved_client_secret: Option<Secret<String>>,
}

fn default_user_agent() -> String {
    concat!("OpenAPI summary-gateway/", env!("CARGO_PKG_VERSION")).to_owned()
}

const fn default_refresh_margin() -> Duration {
    Duration::from_secs(5 * 60)
}

impl VendorSettings for YeastarConfig {
    const TYPE: &'static str = "yeastar";
    const DEF: &'static str = "YeastarProvider";
    const EXAMPLE: Option<&'static str> = Some("yeastar.yaml");

    fn resolve(&mut self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        match &self.base_url {
            Some(url) => super::check_base_url(path, url, errors),
            None => errors.push(ConfigError::new(format!("{path}.base_url"), "missing field")),
        }
        if self.user_agent.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.user_agent"),
                "must not be empty (Yeastar rejects requests without one)",
            ));
        }
        self.resolved_client_id =
            resolve_secret(path, "client_id", self.client_id.as_ref(), self.client_id_env.as_deref(), env, errors);
        self.resolved_client_secret = resolve_secret(
            path,
            "client_secret",
            self.client_secret.as_ref(),
            self.client_secret_env.as_deref(),
            env,
            errors,
        );
        if self.resolved_client_id.is_none() && self.client_id.is_none() && self.client_id_env.is_none() {
            errors.push(ConfigError::new(format!("{path}.client_id_env"), "missing field (or client_id inline)"));
        }
        if self.resolved_client_secret.is_none() && self.client_secret.is_none() && self.client_secret_env.is_none() {
            errors
                .push(ConfigError::new(format!("{path}.client_secret_env"), "missing field (or client_secret inline)"));
        }
    }
}

impl YeastarConfig {
    /// The Client ID. Present once the config has loaded.
    pub fn client_id(&self) -> Secret<String> {
        self.resolved_client_id.clone().unwrap_or_else(|| Secret::new(String::new()))
    }

    /// The Client Secret. Present once the config has loaded.
    pub fn client_secret(&self) -> Secret<String> {
        self.resolved_client_secret.clone().unwrap_or_else(|| Secret::new(String::new()))
    }
}
