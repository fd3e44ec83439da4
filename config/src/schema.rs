//! The JSON Schema of the configuration file, as a user writes it.
//!
//! Every config type derives [`schemars::JsonSchema`]; its `///` comments are the
//! descriptions and its `Default` (or `#[serde(default = ...)]` function) the
//! defaults, serialized the way serde writes them (durations as humantime text).
//! The loader reads some parts by hand (each section on its own, `providers.<name>`
//! split by `type`, requirements checked after parsing so that every problem is
//! reported): what it requires although serde would default it is declared here
//! with [`required`] and [`exactly_one_of`], next to the field it is about.
//!
//! [`crate::reference`] renders this schema as `docs/configuration.md`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::providers::VendorType;
use crate::{AuthConfig, ServerConfig, StoreConfig, TelemetryConfig, WebhooksConfig};

/// What a humantime duration looks like: numbers with units, `0` alone, spaces allowed.
pub(crate) const DURATION_PATTERN: &str = r"^\s*(0|([0-9]+(\.[0-9]+)?\s*[A-Za-zµ]+\s*)+)$";

/// Provider names: what `providers::is_valid_name` accepts.
pub(crate) const PROVIDER_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// The schema of a `#[serde(with = "humantime_serde")]` duration:
/// `#[schemars(with = "crate::schema::Humantime")]`.
pub(crate) struct Humantime;

impl JsonSchema for Humantime {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Humantime").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: numbers with units, added up: `500ms`, `30s`, `5m`, `1h 30m`, `12h`, `7d`. \
                            Units: `ns`, `us`, `ms`, `s`, `m` (minutes), `h`, `d`, `w`, `M` (months), `y`; \
                            long forms (`sec`, `min`, `hours`, `days`) work too.",
            "pattern": DURATION_PATTERN,
            "examples": ["30s", "5m", "12h"],
        })
    }
}

/// The schema of a [`std::net::SocketAddr`]: `#[schemars(with = "crate::schema::SocketAddress")]`.
pub(crate) struct SocketAddress;

impl JsonSchema for SocketAddress {
    fn schema_name() -> Cow<'static, str> {
        "SocketAddr".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::SocketAddress").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IP address and a port: `0.0.0.0:8080`, `127.0.0.1:8080`, `[::]:8080` (not a host name).",
            "examples": ["0.0.0.0:8080"],
        })
    }
}

/// A schema transform: `fields` (comma-separated: derive attributes take no
/// arrays) are required although serde defaults them (the loader checks them
/// itself, to report every missing one).
pub(crate) fn required(fields: &'static str) -> impl FnMut(&mut Schema) {
    move |schema: &mut Schema| {
        let obj = schema.ensure_object();
        if let Some(Value::Object(props)) = obj.get_mut("properties") {
            // Neither defaulted nor nullable: the loader reports it missing.
            for field in split(fields) {
                if let Some(Value::Object(prop)) = props.get_mut(field) {
                    prop.remove("default");
                    if let Some(Value::Array(types)) = prop.get_mut("type") {
                        types.retain(|t| t != "null");
                        if let [only] = types.as_slice() {
                            let only = only.clone();
                            prop.insert("type".to_owned(), only);
                        }
                    }
                }
            }
        }
        let list = obj.entry("required").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(split(fields).map(Value::from));
        }
    }
}

/// A schema transform: exactly one of `fields` (comma-separated) must be given
/// (a secret by `*_env` or inline; a key in one of its forms).
pub(crate) fn exactly_one_of(fields: &'static str) -> impl FnMut(&mut Schema) {
    move |schema: &mut Schema| {
        let one_of: Vec<Value> = split(fields).map(|f| serde_json::json!({ "required": [f] })).collect();
        push_all_of(schema, serde_json::json!({ "oneOf": one_of }));
    }
}

fn split(fields: &str) -> impl Iterator<Item = &str> {
    fields.split(',').map(str::trim)
}

/// A schema transform: `a` and `b` may not both be given.
pub(crate) fn not_both(a: &'static str, b: &'static str) -> impl FnMut(&mut Schema) {
    move |schema: &mut Schema| push_all_of(schema, serde_json::json!({ "not": { "required": [a, b] } }))
}

fn push_all_of(schema: &mut Schema, rule: Value) {
    let obj = schema.ensure_object();
    if let Value::Array(list) = obj.entry("allOf").or_insert_with(|| Value::Array(Vec::new())) {
        list.push(rule);
    }
}

// Only for the schema: `Config::from_value` reads each section on its own.
/// A summary-gateway configuration file (`summary-gateway --config FILE`): YAML,
/// then `SUMMARY_GATEWAY__SECTION__KEY` environment overrides.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "summary-gateway configuration")]
#[expect(dead_code, reason = "a schema-only mirror of the file's top level")]
struct ConfigFile {
    server: Option<ServerConfig>,
    store: Option<StoreConfig>,
    webhooks: Option<WebhooksConfig>,
    telemetry: Option<TelemetryConfig>,
    auth: AuthConfig,
    /// Provider name → provider. The name is what requests give as `provider`:
    /// 1-63 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit.
    /// At least one provider is required.
    #[schemars(extend("minProperties" = 1, "propertyNames" = { "pattern": PROVIDER_NAME_PATTERN }))]
    #[expect(clippy::zero_sized_map_values, reason = "a schema-only mirror: the values are schemas")]
    providers: BTreeMap<String, ProviderSchema>,
}

/// `providers.<name>`, whose schema depends on the vendor types: [`json_schema`]
/// puts it in `$defs` before the file's is generated, so this one is never asked for.
struct ProviderSchema;

impl JsonSchema for ProviderSchema {
    fn schema_name() -> Cow<'static, str> {
        "ProviderConfig".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::ProviderSchema").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object" })
    }
}

/// The JSON Schema (draft 2020-12) of the configuration file: what a user writes
/// in YAML, with every key's description and default. `docs/config.schema.json`
/// is this; YAML language servers use it for completion and checks
/// (`# yaml-language-server: $schema=...` at the top of the file), for the
/// provider types `vendors`.
pub fn json_schema(vendors: &[&dyn VendorType]) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let providers = crate::providers::provider_schema(vendors, &mut generator);
    generator.definitions_mut().insert(ProviderSchema::schema_name().into_owned(), providers.to_value());
    let mut schema = generator.into_root_schema_for::<ConfigFile>().to_value();
    tidy_descriptions(&mut schema);
    schema
}

/// Doc comments keep their line breaks; a description is one line per paragraph.
fn tidy_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" => *text = unwrap_lines(text),
                    _ => tidy_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph with spaces; paragraphs stay apart (`\n\n`).
pub(crate) fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The properties of an object schema (empty if it has none).
pub(crate) fn properties(schema: &Value) -> Map<String, Value> {
    schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default()
}
