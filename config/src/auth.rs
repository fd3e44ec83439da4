//! `auth:` — the callers' API keys, their limits and scopes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ConfigError, join};
use crate::schema::{exactly_one_of, not_both, required};
use crate::{EnvLookup, Secret, resolve_secret};

/// The callers' API keys.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(transform = required("keys"))]
pub struct AuthConfig {
    /// Caller name → key. The name appears in logs and metrics, never the key.
    /// At least one key is required.
    #[schemars(extend("minProperties" = 1))]
    pub keys: BTreeMap<String, KeyConfig>,
}

/// A rate limit (GCRA): a steady rate plus a burst.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second (may be fractional: `0.5` is one every 2 s).
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1))]
    pub burst: u32,
}

const fn default_burst() -> u32 {
    1
}

impl RateLimit {
    pub(crate) fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            errors.push(ConfigError::new(join(path, "per_second"), "must be a positive number"));
        }
        if self.burst == 0 {
            errors.push(ConfigError::new(join(path, "burst"), "must be at least 1"));
        }
    }
}

/// One caller's API key, sent as `Authorization: Bearer <key>` (or
/// `?access_token=<key>`), given in exactly one of three forms; its rate limit,
/// the providers it may use and the secret that signs its webhooks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = exactly_one_of("key_sha256, key_env, key"),
    transform = not_both("webhook_secret_env", "webhook_secret")
)]
pub struct KeyConfig {
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`): the key itself
    /// never reaches the gateway's configuration.
    #[serde(default)]
    #[schemars(pattern(r"^\s*[0-9a-fA-F]{64}\s*$"))]
    pub key_sha256: Option<String>,
    /// Name of an environment variable holding the key itself (hashed at start).
    #[serde(default)]
    pub key_env: Option<String>,
    /// The key inline (instead of `key_sha256` or `key_env`). For local use only.
    #[serde(default)]
    pub key: Option<Secret<String>>,
    /// Per-key rate limit on every authenticated route; over it, 429 with
    /// `Retry-After`. With the Redis store it holds for the whole fleet.
    #[serde(default = "default_key_rate_limit")]
    pub rate_limit: RateLimit,
    /// Names of the providers this key may use (others: 403). Omit: all providers.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Name of an environment variable holding this caller's webhook secret:
    /// `whsec_` and the base64 of 24 to 64 random bytes
    /// (`whsec_$(openssl rand -base64 32)`). It signs the webhooks sent to the
    /// caller's `callback_url`; without it the caller cannot give one (422).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// The webhook secret inline (instead of `webhook_secret_env`). For local use only.
    #[serde(default)]
    pub webhook_secret: Option<Secret<String>>,
    /// SHA-256 of the key, resolved from whichever of the three forms was given.
    #[serde(skip)]
    pub sha256: [u8; 32],
    /// The webhook secret, resolved.
    #[serde(skip)]
    pub resolved_webhook_secret: Option<Secret<String>>,
}

/// The signing key of a Standard Webhooks secret (`whsec_<base64 of 24-64 bytes>`).
pub fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

const fn default_key_rate_limit() -> RateLimit {
    RateLimit { per_second: 50.0, burst: 100 }
}

impl KeyConfig {
    /// Resolves the key and secrets and checks what spans fields.
    pub(crate) fn resolve(&mut self, path: &str, providers: &[&str], env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        let given = [self.key_sha256.is_some(), self.key_env.is_some(), self.key.is_some()];
        match given.iter().filter(|g| **g).count() {
            0 => errors.push(ConfigError::new(path, "one of key_sha256, key_env or key is required")),
            1 => {}
            _ => errors.push(ConfigError::new(path, "give only one of key_sha256, key_env or key")),
        }
        if let Some(hex_digest) = &self.key_sha256 {
            let mut digest = [0_u8; 32];
            if hex::decode_to_slice(hex_digest.trim(), &mut digest).is_ok() {
                self.sha256 = digest;
            } else {
                errors.push(ConfigError::new(join(path, "key_sha256"), "must be 64 hex characters (a SHA-256 digest)"));
            }
        } else if let Some(key) = resolve_secret(path, "key", self.key.as_ref(), self.key_env.as_deref(), env, errors) {
            self.sha256 = Sha256::digest(key.expose().as_bytes()).into();
        }
        self.resolved_webhook_secret = resolve_secret(
            path,
            "webhook_secret",
            self.webhook_secret.as_ref(),
            self.webhook_secret_env.as_deref(),
            env,
            errors,
        );
        if let Some(secret) = &self.resolved_webhook_secret
            && webhook_key(secret.expose()).is_none()
        {
            errors.push(ConfigError::new(
                join(path, "webhook_secret"),
                "must be `whsec_` followed by the base64 of 24 to 64 random bytes (Standard Webhooks), \
                 e.g. `whsec_$(openssl rand -base64 32)`",
            ));
        }
        self.rate_limit.validate(&join(path, "rate_limit"), errors);
        if let Some(allowed) = &self.providers {
            for (i, name) in allowed.iter().enumerate() {
                if !providers.contains(&name.as_str()) {
                    errors.push(ConfigError::new(
                        format!("{}[{i}]", join(path, "providers")),
                        format!("unknown provider `{name}` (configured: {})", providers.join(", ")),
                    ));
                }
            }
        }
    }
}
