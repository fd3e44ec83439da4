//! `providers:` — the vendors behind the gateway, keyed by name.
//!
//! Every provider has the common fields of [`ProviderConfig`] plus the fields of
//! its `type` ([`VendorConfig`]). The two are parsed separately so that an
//! unknown field is reported with its full YAML path whatever the type.

mod circuit_breaker;
mod commbox;
mod elevateai;
mod http;
mod yeastar;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::circuit_breaker::CircuitBreakerConfig;
pub use self::commbox::{CommBoxConfig, VENDOR_RETENTION as COMMBOX_RETENTION};
pub use self::elevateai::{ACCOUNT_CONCURRENCY as ELEVATEAI_ACCOUNT_CONCURRENCY, ElevateAiConfig, ElevateAiVariant};
pub use self::http::{
    ContentFormat, HttpAuth, HttpConfig, HttpDataSection, HttpErrors, HttpInput, HttpJob, HttpNamedSecret, HttpOAuth2,
    HttpRequestOverride, HttpRequestTemplate, MAPPABLE_ERROR_CODES, ResolvedAuth,
};
pub use self::yeastar::YeastarConfig;
use crate::EnvLookup;
use crate::auth::RateLimit;
use crate::error::{ConfigError, deserialize_all, join};
use crate::schema::{Humantime, properties};

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

/// Common keys whose default a vendor type changes: `(key, default, why)`.
/// [`parse_provider`] applies them and the schema (so the reference) shows them.
pub(crate) fn vendor_common_defaults(type_name: &str) -> Vec<(&'static str, Value, &'static str)> {
    match type_name {
        "elevateai" => vec![(
            "max_concurrency",
            Value::from(elevateai::ACCOUNT_CONCURRENCY),
            "ElevateAI refuses more concurrent requests per account",
        )],
        _ => Vec::new(),
    }
}

/// The vendor-specific part, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// A vendor described in YAML (declarative). Boxed: its templates and tables
    /// are several times the size of the other types' keys.
    Http(Box<HttpConfig>),
}

impl VendorConfig {
    /// The `type` as written in YAML.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::CommBox(_) => "commbox",
            Self::ElevateAi(_) => "elevateai",
            Self::Yeastar(_) => "yeastar",
            Self::Http(_) => "http",
        }
    }
}

/// Provider types this build knows.
pub const SUPPORTED_TYPES: &[&str] = &["commbox", "elevateai", "yeastar", "http"];

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
    // A vendor may change a common default (ElevateAI: its account's concurrency limit).
    for (field, default, _) in vendor_common_defaults(&type_name) {
        common_fields.entry(field).or_insert(default);
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
        "http" => deserialize_all::<HttpConfig>(&path, Value::Object(fields), errors).map(|mut h| {
            h.resolve(&path, env, errors);
            VendorConfig::Http(Box::new(h))
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

/// A vendor config type, for the schema of `providers.<name>` with its `type`.
trait Vendor: JsonSchema {
    /// The `type` in YAML.
    const TYPE: &'static str;
    /// The name of its provider schema in `$defs`.
    const DEF: &'static str;
}

impl Vendor for CommBoxConfig {
    const TYPE: &'static str = "commbox";
    const DEF: &'static str = "CommBoxProvider";
}

impl Vendor for ElevateAiConfig {
    const TYPE: &'static str = "elevateai";
    const DEF: &'static str = "ElevateAiProvider";
}

impl Vendor for YeastarConfig {
    const TYPE: &'static str = "yeastar";
    const DEF: &'static str = "YeastarProvider";
}

impl Vendor for HttpConfig {
    const TYPE: &'static str = "http";
    const DEF: &'static str = "HttpProvider";
}

/// The `$defs` name of the provider schema of each type, in [`SUPPORTED_TYPES`] order.
pub(crate) const TYPE_DEFS: &[(&str, &str)] = &[
    (CommBoxConfig::TYPE, CommBoxConfig::DEF),
    (ElevateAiConfig::TYPE, ElevateAiConfig::DEF),
    (YeastarConfig::TYPE, YeastarConfig::DEF),
    (HttpConfig::TYPE, HttpConfig::DEF),
];

/// `providers.<name>` as written for one `type`: the common keys and the vendor's,
/// in one map that denies any other key (what [`parse_provider`] accepts).
struct ProviderOfType<V>(PhantomData<V>);

impl<V: Vendor> JsonSchema for ProviderOfType<V> {
    fn schema_name() -> Cow<'static, str> {
        V::DEF.into()
    }

    fn schema_id() -> Cow<'static, str> {
        format!("{}::{}", module_path!(), V::DEF).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let common = CommonConfig::json_schema(generator).to_value();
        let vendor = V::json_schema(generator).to_value();
        let mut props = Map::new();
        props.insert(
            "type".to_owned(),
            serde_json::json!({ "const": V::TYPE, "description": format!("`{}`: this vendor.", V::TYPE) }),
        );
        props.extend(properties(&vendor));
        let overrides = vendor_common_defaults(V::TYPE);
        for (key, mut schema) in properties(&common) {
            if let Some((_, default, why)) = overrides.iter().find(|(k, ..)| *k == key) {
                let text = schema.get("description").and_then(Value::as_str).unwrap_or_default();
                let text = format!("{text} For `{}` it defaults to {default}: {why}.", V::TYPE);
                schema["description"] = Value::from(text);
                schema["default"] = default.clone();
            }
            props.insert(key, schema);
        }
        let mut required = vec![Value::from("type")];
        required.extend(vendor.get("required").and_then(Value::as_array).cloned().unwrap_or_default());
        let mut schema = json_schema!({
            "title": format!("providers.<name> with type: {}", V::TYPE),
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        });
        for key in ["description", "allOf"] {
            if let Some(value) = vendor.get(key) {
                schema.insert(key.to_owned(), value.clone());
            }
        }
        schema
    }
}

impl JsonSchema for ProviderConfig {
    fn schema_name() -> Cow<'static, str> {
        "ProviderConfig".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::ProviderConfig").into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        // Also in `$defs` on its own: the keys every type takes.
        generator.subschema_for::<CommonConfig>();
        let variants = [
            (CommBoxConfig::TYPE, generator.subschema_for::<ProviderOfType<CommBoxConfig>>()),
            (ElevateAiConfig::TYPE, generator.subschema_for::<ProviderOfType<ElevateAiConfig>>()),
            (YeastarConfig::TYPE, generator.subschema_for::<ProviderOfType<YeastarConfig>>()),
            (HttpConfig::TYPE, generator.subschema_for::<ProviderOfType<HttpConfig>>()),
        ];
        let all_of: Vec<Value> = variants
            .into_iter()
            .map(|(type_name, schema)| {
                serde_json::json!({
                    "if": { "properties": { "type": { "const": type_name } }, "required": ["type"] },
                    "then": schema,
                })
            })
            .collect();
        json_schema!({
            "description": "One provider: a vendor account behind the gateway. Its `type` decides which keys \
                            it takes besides the common ones.",
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": SUPPORTED_TYPES,
                    "description": "The vendor. It decides which keys the provider takes besides these common \
                                    ones: see the section of each type.",
                },
            },
            "required": ["type"],
            "allOf": all_of,
        })
    }
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
