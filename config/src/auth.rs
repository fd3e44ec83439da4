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

/// One caller: its API key, sent as `Authorization: Bearer <key>` (or
/// `?access_token=<key>`), given in exactly one of three forms (or several
/// keys under `keys`, for rotation); its rate limit and quota, the providers it
/// may use and the secret that signs its webhooks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = exactly_one_of("key_sha256, key_env, key, keys"),
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
    /// Several keys for this one caller (instead of one of the three forms
    /// above), for rotation: roll the new key out while the old one still
    /// works, and give the old one a `not_after`. All share the caller's
    /// name, limits, quota, scopes and webhook secret. Each is a map of one of
    /// `key_sha256`, `key_env` or `key` and an optional `not_after` (an RFC 3339
    /// instant, `2027-01-31T00:00:00Z`, from which the key gets 401).
    #[serde(default)]
    pub keys: Option<Vec<KeyEntry>>,
    /// Per-key rate limit on every authenticated route; over it, 429 with
    /// `Retry-After`. With the Redis store it holds for the whole fleet.
    #[serde(default = "default_key_rate_limit")]
    pub rate_limit: RateLimit,
    /// A quota besides the rate limit: so many summary and question requests
    /// per UTC calendar day or month. Omit: no quota.
    #[serde(default)]
    pub quota: Option<Quota>,
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
    /// The caller's keys, resolved: the single key, or those of `keys` in order.
    #[serde(skip)]
    pub credentials: Vec<Credential>,
    /// The webhook secret, resolved.
    #[serde(skip)]
    pub resolved_webhook_secret: Option<Secret<String>>,
}

/// A caller's allowance of requests per UTC calendar day or month, fleet-wide
/// with the Redis store. What counts: each `POST /v1/summaries` and
/// `POST /v1/questions` that passes validation (reads, polls and lists do
/// not), cache hits included unless `count_cache_hits: false`. Over it: 429
/// `quota_exceeded` with `Retry-After` until the period ends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per period, over all providers.
    #[schemars(range(min = 1))]
    pub requests: u64,
    /// The period: `day` (resets at 00:00 UTC) or `month` (on the 1st, 00:00 UTC).
    pub per: QuotaPeriod,
    /// Whether answers served from the store (cache hits) count.
    #[serde(default = "yes")]
    pub count_cache_hits: bool,
    /// Quotas on single providers within this caller's (both must allow a
    /// request): provider name → `{ requests, per }`.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderQuota>,
}

const fn yes() -> bool {
    true
}

/// A caller's quota on one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderQuota {
    /// Requests allowed per period on this provider.
    #[schemars(range(min = 1))]
    pub requests: u64,
    /// `day` or `month` (UTC calendar).
    pub per: QuotaPeriod,
}

/// A quota's period, aligned with the UTC calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Day,
    Month,
}

impl Quota {
    fn validate(&self, path: &str, providers: &[&str], allowed: Option<&[String]>, errors: &mut Vec<ConfigError>) {
        if self.requests == 0 {
            errors.push(ConfigError::new(join(path, "requests"), "must be at least 1"));
        }
        for (name, quota) in &self.providers {
            let at = join(&join(path, "providers"), name);
            if quota.requests == 0 {
                errors.push(ConfigError::new(join(&at, "requests"), "must be at least 1"));
            }
            if !providers.contains(&name.as_str()) {
                errors.push(ConfigError::new(
                    at,
                    format!("unknown provider `{name}` (configured: {})", providers.join(", ")),
                ));
            } else if allowed.is_some_and(|allowed| !allowed.contains(name)) {
                errors.push(ConfigError::new(at, format!("this key may not use provider `{name}` (see `providers`)")));
            }
        }
    }
}

/// One of a caller's several keys (`auth.keys.<name>.keys[i]`), in exactly one
/// of the three forms of the single key, with an optional end.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exactly_one_of("key_sha256, key_env, key"))]
pub struct KeyEntry {
    /// Hex SHA-256 of the key.
    #[serde(default)]
    #[schemars(pattern(r"^\s*[0-9a-fA-F]{64}\s*$"))]
    pub key_sha256: Option<String>,
    /// Name of an environment variable holding the key itself.
    #[serde(default)]
    pub key_env: Option<String>,
    /// The key inline. For local use only.
    #[serde(default)]
    pub key: Option<Secret<String>>,
    /// The instant (RFC 3339, e.g. `2027-01-31T00:00:00Z`) from which this
    /// key is refused: 401 `unauthorized`, saying the key has expired.
    /// Omit: the key does not expire.
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    pub not_after: Option<String>,
}

/// A caller's key, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// From when it is refused; `None`: never.
    pub not_after: Option<jiff::Timestamp>,
}

/// The SHA-256 of a key given as one of `key_sha256`, `key_env` or `key` at
/// `path`; `None` (with the problem in `errors`) if it cannot be resolved.
fn resolve_key(
    path: &str,
    key_sha256: Option<&str>,
    key_env: Option<&str>,
    key: Option<&Secret<String>>,
    env: &EnvLookup,
    errors: &mut Vec<ConfigError>,
) -> Option<[u8; 32]> {
    if let Some(hex_digest) = key_sha256 {
        let mut digest = [0_u8; 32];
        if hex::decode_to_slice(hex_digest.trim(), &mut digest).is_ok() {
            return Some(digest);
        }
        errors.push(ConfigError::new(join(path, "key_sha256"), "must be 64 hex characters (a SHA-256 digest)"));
        return None;
    }
    let key = resolve_secret(path, "key", key, key_env, env, errors)?;
    Some(Sha256::digest(key.expose().as_bytes()).into())
}

/// The signing key of a Standard Webhooks secret (`whsec_<base64 of 24-64 bytes>`).
pub fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

impl KeyEntry {
    fn resolve(&self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) -> Option<Credential> {
        let given = [self.key_sha256.is_some(), self.key_env.is_some(), self.key.is_some()];
        match given.iter().filter(|g| **g).count() {
            0 => errors.push(ConfigError::new(path, "one of key_sha256, key_env or key is required")),
            1 => {}
            _ => errors.push(ConfigError::new(path, "give only one of key_sha256, key_env or key")),
        }
        let not_after = match self.not_after.as_deref().map(|t| t.trim().parse::<jiff::Timestamp>()) {
            None => None,
            Some(Ok(at)) => Some(at),
            Some(Err(_)) => {
                errors.push(ConfigError::new(
                    join(path, "not_after"),
                    "must be an RFC 3339 instant with a UTC offset, e.g. `2027-01-31T00:00:00Z`",
                ));
                return None;
            }
        };
        let sha256 =
            resolve_key(path, self.key_sha256.as_deref(), self.key_env.as_deref(), self.key.as_ref(), env, errors)?;
        Some(Credential { sha256, not_after })
    }
}

const fn default_key_rate_limit() -> RateLimit {
    RateLimit { per_second: 50.0, burst: 100 }
}

impl KeyConfig {
    /// Resolves the key and secrets and checks what spans fields.
    pub(crate) fn resolve(&mut self, path: &str, providers: &[&str], env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        let given = [self.key_sha256.is_some(), self.key_env.is_some(), self.key.is_some(), self.keys.is_some()];
        match given.iter().filter(|g| **g).count() {
            0 => errors.push(ConfigError::new(path, "one of key_sha256, key_env, key or keys is required")),
            1 => {}
            _ => errors.push(ConfigError::new(path, "give only one of key_sha256, key_env, key or keys")),
        }
        self.credentials.clear();
        if let Some(entries) = &self.keys {
            if entries.is_empty() {
                errors.push(ConfigError::new(join(path, "keys"), "must hold at least one key"));
            }
            for (i, entry) in entries.iter().enumerate() {
                let at = format!("{}[{i}]", join(path, "keys"));
                if let Some(credential) = entry.resolve(&at, env, errors) {
                    if self.credentials.iter().any(|c| c.sha256 == credential.sha256) {
                        errors.push(ConfigError::new(at, "the same key is listed twice"));
                    } else {
                        self.credentials.push(credential);
                    }
                }
            }
        } else if let Some(sha256) =
            resolve_key(path, self.key_sha256.as_deref(), self.key_env.as_deref(), self.key.as_ref(), env, errors)
        {
            self.credentials.push(Credential { sha256, not_after: None });
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
        if let Some(quota) = &self.quota {
            quota.validate(&join(path, "quota"), providers, self.providers.as_deref(), errors);
        }
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
