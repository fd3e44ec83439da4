//! `providers:` — the vendors behind the gateway, keyed by name.
//!
//! Every provider has the common fields of [`ProviderConfig`] plus the fields of
//! its `type` ([`VendorConfig`]). The two are parsed separately so that an
//! unknown field is reported with its full YAML path whatever the type.

mod commbox;
mod elevateai;
mod yeastar;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::commbox::{CommBoxConfig, VENDOR_RETENTION as COMMBOX_RETENTION};
pub use self::elevateai::{ACCOUNT_CONCURRENCY as ELEVATEAI_ACCOUNT_CONCURRENCY, ElevateAiConfig, ElevateAiVariant};
pub use self::yeastar::YeastarConfig;
use crate::EnvLookup;
use crate::auth::RateLimit;
use crate::error::{ConfigError, deserialize_all, join};

/// One configured provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    /// The provider's name: the `provider` field of requests.
    pub name: String,
    /// Fields every provider type takes.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Fields of this provider's `type`.
    #[serde(flatten)]
    pub vendor: VendorConfig,
}

/// Fields every provider takes, whatever its type.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    /// Deadline of one call to the vendor (connect + answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// At most this many calls in flight to the vendor; others wait up to `queue_timeout`.
    pub max_concurrency: usize,
    /// How long a call may wait for a free slot before 503 `overloaded`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Outbound rate limit, to respect the vendor's.
    pub rate_limit: Option<RateLimit>,
    /// Overrides of the built-in response mapping: `<kind>.<canonical field>: <JSONPath>`
    /// into the vendor's answer (e.g. `topics: { items: "$.topics[*]" }`). Which kinds
    /// and fields a vendor has is checked, and every expression compiled, when the
    /// provider is built (`check-config` does it too).
    pub mappings: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_concurrency: 64,
            queue_timeout: Duration::from_secs(1),
            rate_limit: None,
            mappings: BTreeMap::new(),
        }
    }
}

const COMMON_FIELDS: &[&str] = &["timeout", "max_concurrency", "queue_timeout", "rate_limit", "mappings"];

/// The vendor-specific part, chosen by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VendorConfig {
    /// CommBox AI Conversation Summary (text in, asynchronous).
    #[serde(rename = "commbox")]
    CommBox(CommBoxConfig),
    /// ElevateAI gen-AI results (reference in, synchronous).
    #[serde(rename = "elevateai")]
    ElevateAi(ElevateAiConfig),
    /// Yeastar P-Series `cdr/getaisummary`.
    Yeastar(YeastarConfig),
}

impl VendorConfig {
    /// The `type` as written in YAML.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::CommBox(_) => "commbox",
            Self::ElevateAi(_) => "elevateai",
            Self::Yeastar(_) => "yeastar",
        }
    }
}

/// Provider types this build knows.
pub const SUPPORTED_TYPES: &[&str] = &["commbox", "elevateai", "yeastar"];

/// Parses one provider entry, reporting every problem it can with its path.
pub(crate) fn parse_provider(
    name: &str,
    value: Value,
    env: &EnvLookup,
    errors: &mut Vec<ConfigError>,
) -> Option<ProviderConfig> {
    let path = format!("providers.{name}");
    if !is_valid_name(name) {
        errors.push(ConfigError::new(
            &path,
            "provider names are 1-63 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
        ));
    }
    let Value::Object(mut fields) = value else {
        errors.push(ConfigError::new(&path, "must be a map with at least `type`"));
        return None;
    };
    let type_name = match fields.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            errors.push(ConfigError::new(join(&path, "type"), "must be a string"));
            return None;
        }
        None => {
            errors.push(ConfigError::new(
                join(&path, "type"),
                format!("missing field (one of: {})", SUPPORTED_TYPES.join(", ")),
            ));
            return None;
        }
    };
    // Split the common fields from the vendor's so each half can deny unknown fields.
    let mut common_fields = Map::new();
    for field in COMMON_FIELDS {
        if let Some(v) = fields.remove(*field) {
            common_fields.insert((*field).to_owned(), v);
        }
    }
    // ElevateAI refuses more concurrent requests than the account allows: default to its limit.
    if type_name == "elevateai" && !common_fields.contains_key("max_concurrency") {
        common_fields.insert("max_concurrency".to_owned(), Value::from(elevateai::ACCOUNT_CONCURRENCY));
    }
    let common = deserialize_all::<CommonConfig>(&path, Value::Object(common_fields), errors)
        .inspect(|common| common.validate(&path, errors));
    let vendor = match type_name.as_str() {
        "commbox" => deserialize_all::<CommBoxConfig>(&path, Value::Object(fields), errors).map(|mut c| {
            c.resolve(&path, env, errors);
            VendorConfig::CommBox(c)
        }),
        "elevateai" => deserialize_all::<ElevateAiConfig>(&path, Value::Object(fields), errors).map(|mut e| {
            e.resolve(&path, env, errors);
            VendorConfig::ElevateAi(e)
        }),
        "yeastar" => deserialize_all::<YeastarConfig>(&path, Value::Object(fields), errors).map(|mut y| {
            y.resolve(&path, env, errors);
            VendorConfig::Yeastar(y)
        }),
        other => {
            errors.push(ConfigError::new(
                join(&path, "type"),
                format!("unknown provider type `{other}` (supported: {})", SUPPORTED_TYPES.join(", ")),
            ));
            None
        }
    };
    Some(ProviderConfig { name: name.to_owned(), common: common?, vendor: vendor? })
}

impl CommonConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.timeout.is_zero() {
            errors.push(ConfigError::new(join(path, "timeout"), "must be longer than 0s"));
        }
        if self.max_concurrency == 0 {
            errors.push(ConfigError::new(join(path, "max_concurrency"), "must be at least 1"));
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate(&join(path, "rate_limit"), errors);
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Checks a vendor base URL: http(s), a host, no query or fragment.
pub(crate) fn check_base_url(path: &str, url: &url::Url, errors: &mut Vec<ConfigError>) {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        errors.push(ConfigError::new(join(path, "base_url"), "must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        errors.push(ConfigError::new(join(path, "base_url"), "must not have a query or fragment"));
    }
}
