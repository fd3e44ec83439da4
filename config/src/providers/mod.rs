//! `providers:` — the vendors behind the gateway, keyed by name.
//!
//! Every provider has the common fields of [`ProviderConfig`] plus the fields of
//! its `type` ([`VendorConfig`]). The two are parsed separately so that an
//! unknown field is reported with its full YAML path whatever the type.
//!
//! Which types there are is not known here: the loader is given them
//! ([`VendorType`], one per vendor, listed by the providers crate's registry).
//! Each vendor's keys are a [`VendorSettings`] struct in a module of its own
//! (`providers::commbox::CommBoxConfig`, ...); `type: http`'s are re-exported at the
//! crate root.

mod circuit_breaker;
pub mod commbox;
pub mod elevateai;
mod http;
mod vendor;
pub mod yeastar;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::circuit_breaker::CircuitBreakerConfig;
pub use self::http::{
    ContentFormat, HttpAuth, HttpConfig, HttpDataSection, HttpErrors, HttpInput, HttpJob, HttpNamedSecret, HttpOAuth2,
    HttpRequestOverride, HttpRequestTemplate, MAPPABLE_ERROR_CODES, ResolvedAuth,
};
pub use self::vendor::{CommonDefault, VendorConfig, VendorOf, VendorSettings, VendorType, field_names};
use crate::EnvLookup;
use crate::auth::RateLimit;
use crate::error::{ConfigError, deserialize_all, join};
use crate::schema::Humantime;

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderConfig {
    /// The provider's name: the `provider` field of requests. Not serialized: it
    /// is the key the provider is written under.
    #[serde(skip)]
    pub name: String,
    /// Fields of this provider's `type` (first: `type` leads when printed).
    #[serde(flatten)]
    pub vendor: VendorConfig,
    /// Fields every provider type takes.
    #[serde(flatten)]
    pub common: CommonConfig,
}

/// Keys every provider takes, whatever its `type`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    /// Deadline of one call to the vendor (connect + answer); past it the caller gets 504.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub timeout: Duration,
    /// At most this many calls in flight to the vendor; others wait up to `queue_timeout`.
    pub max_concurrency: usize,
    /// How long a call may wait for a free slot before 503 `overloaded`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub queue_timeout: Duration,
    /// Outbound rate limit, to stay within the vendor's own. Omit: none.
    pub rate_limit: Option<RateLimit>,
    /// Overrides of the built-in response mapping: `<kind>: { <canonical field>: <JSONPath> }`
    /// into the vendor's answer (e.g. `topics: { items: "$.topics[*]" }`); what is not
    /// overridden keeps the built-in default. Which kinds and fields a vendor has is
    /// checked, and every expression compiled, when the provider is built (`check-config`
    /// does it too).
    pub mappings: BTreeMap<String, BTreeMap<String, String>>,
    /// The circuit breaker: while the vendor is down or failing (it cannot be
    /// reached, answers 5xx, or does not answer within `timeout`) the breaker
    /// opens, on whichever comes first: `consecutive_failures` failed calls in a
    /// row, or `failure_ratio` of the calls within `window` once there were
    /// `min_calls`. Then for `open_for` requests get 503 `provider_unavailable`
    /// with `Retry-After` at once, without a call to the vendor, and
    /// `GET /v1/providers` shows `status: circuit_open`; after it up to
    /// `half_open_calls` trial calls go through: one that succeeds closes the
    /// breaker, one that fails opens it again. Answers meaning "no such
    /// conversation" or "not ready yet" (404, 409), errors the request caused
    /// and the gateway's own `overloaded` never count as failures. With a shared
    /// store (Redis), a replica whose call fails while another replica's breaker
    /// is open opens its own too.
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_concurrency: 64,
            queue_timeout: Duration::from_secs(1),
            rate_limit: None,
            mappings: BTreeMap::new(),
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

pub(crate) const COMMON_FIELDS: &[&str] =
    &["timeout", "max_concurrency", "queue_timeout", "rate_limit", "mappings", "circuit_breaker"];

/// The `type`s of `vendors`, for messages: `commbox, elevateai, yeastar, http`.
fn type_list(vendors: &[&dyn VendorType]) -> String {
    vendors.iter().map(|v| v.type_name()).collect::<Vec<_>>().join(", ")
}

/// Parses one provider entry, reporting every problem it can with its path.
pub(crate) fn parse_provider(
    vendors: &[&dyn VendorType],
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
            errors
                .push(ConfigError::new(join(&path, "type"), format!("missing field (one of: {})", type_list(vendors))));
            return None;
        }
    };
    let vendor_type = vendors.iter().find(|v| v.type_name() == type_name);
    // Split the common fields from the vendor's so each half can deny unknown fields.
    let mut common_fields = Map::new();
    for field in COMMON_FIELDS {
        if let Some(v) = fields.remove(*field) {
            common_fields.insert((*field).to_owned(), v);
        }
    }
    // A vendor may change a common default (an account's concurrency limit).
    for CommonDefault { key, default, .. } in vendor_type.map(|v| v.common_defaults()).unwrap_or_default() {
        common_fields.entry(key).or_insert(default);
    }
    let common = deserialize_all::<CommonConfig>(&path, Value::Object(common_fields), errors)
        .inspect(|common| common.validate(&path, errors));
    let vendor = if let Some(vendor_type) = vendor_type {
        vendor_type.parse(&path, Value::Object(fields), env, errors)
    } else {
        errors.push(ConfigError::new(
            join(&path, "type"),
            format!("unknown provider type `{type_name}` (supported: {})", type_list(vendors)),
        ));
        None
    };
    Some(ProviderConfig { name: name.to_owned(), common: common?, vendor: vendor? })
}

/// The schema of `providers.<name>` for `vendors`: the keys every type takes, and
/// for each `type` its own (each in `generator`'s `$defs`).
pub(crate) fn provider_schema(vendors: &[&dyn VendorType], generator: &mut SchemaGenerator) -> Schema {
    // Also in `$defs` on its own: the keys every type takes.
    generator.subschema_for::<CommonConfig>();
    let all_of: Vec<Value> = vendors
        .iter()
        .map(|vendor| {
            serde_json::json!({
                "if": { "properties": { "type": { "const": vendor.type_name() } }, "required": ["type"] },
                "then": vendor.provider_schema(generator),
            })
        })
        .collect();
    let types: Vec<&str> = vendors.iter().map(|v| v.type_name()).collect();
    json_schema!({
        "description": "One provider: a vendor account behind the gateway. Its `type` decides which keys \
                        it takes besides the common ones.",
        "type": "object",
        "properties": {
            "type": {
                "type": "string",
                "enum": types,
                "description": "The vendor. It decides which keys the provider takes besides these common \
                                ones: see the section of each type.",
            },
        },
        "required": ["type"],
        "allOf": all_of,
    })
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
        self.circuit_breaker.validate(&join(path, "circuit_breaker"), errors);
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
