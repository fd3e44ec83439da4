//! `docs/configuration.md`: the reference of every configuration key, rendered
//! from [`crate::json_schema`] (so from the config types, their `///` comments and
//! their `Default`s) so that it cannot drift from the code.
//!
//! The tests (`reference/tests.rs`) keep the committed file equal to
//! [`reference_markdown`] and load every key of it, with its documented default,
//! through [`crate::Config::from_yaml`].

use std::fmt::Write as _;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::providers::VendorType;
use crate::schema::properties;
use crate::{
    CircuitBreakerConfig, CommonConfig, ENV_PREFIX, KeyConfig, RateLimit, ServerConfig, StoreConfig, TelemetryConfig,
    WebhooksConfig,
};

/// One table of the reference: a YAML section, or the keys of one provider type.
#[derive(Debug)]
pub(crate) struct Section {
    /// Heading (Markdown) and its level.
    pub heading: String,
    pub level: usize,
    /// YAML path of the map the keys are in: `server`, `auth.keys.<name>`, `providers.<name>`.
    pub prefix: &'static str,
    /// For the keys of one provider type: the type.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the drift tests"))]
    pub provider_type: Option<&'static str>,
    /// Paragraphs before the table.
    pub intro: Vec<String>,
    pub rows: Vec<Row>,
}

/// One key.
#[derive(Debug)]
pub(crate) struct Row {
    /// Path below the section's prefix: `listen`, `rate_limit.burst`.
    pub rel: String,
    pub ty: String,
    pub default: Cell,
    /// Another default for some provider types: (`type`, YAML).
    pub type_defaults: Vec<(String, String)>,
    pub description: String,
    /// A secret given inline (`writeOnly`).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the drift tests"))]
    pub secret: bool,
}

impl Row {
    /// The full dotted path, e.g. `server.listen`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}.{}", self.rel)
    }

    /// The enclosing map of a nested key (`rate_limit` of `rate_limit.burst`).
    pub fn parent(&self) -> Option<&str> {
        self.rel.rsplit_once('.').map(|(parent, _)| parent)
    }
}

/// The default column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    /// The default, as YAML text.
    Value(String),
    /// Unset unless given.
    Unset,
    /// Must be given (in its enclosing map, for a nested key).
    Required,
    /// Exactly one of these keys must be given.
    OneOf(Vec<String>),
}

/// The configuration reference (Markdown) of the provider types `vendors`: what
/// `docs/configuration.md` holds for the providers crate's registry.
pub fn reference_markdown(vendors: &[&dyn VendorType]) -> String {
    let schema = crate::json_schema(vendors);
    let examples: Vec<String> = vendors
        .iter()
        .filter_map(|v| v.example())
        .map(|file| format!("[`{file}`](../config/examples/{file})"))
        .collect();
    let defs = defs(&schema);
    let mut out = String::new();
    let _ = write!(
        out,
        "\
# Configuration reference

<!-- Generated from the config types (config/src/) by `gateway_config::reference_markdown()`:
     do not edit. Regenerate with `UPDATE_CONFIG_DOCS=1 cargo test -p providers`. -->

summary-gateway reads one YAML file (`summary-gateway --config gateway.yaml`), then
[environment overrides](#environment-overrides). `summary-gateway check-config --config gateway.yaml`
checks a file and names every problem with its YAML path; `--print` also prints the effective
configuration as YAML that loads back as the same configuration, every default written out and
secrets given inline as `'*****'` (to be written again). One worked example per vendor:
{examples}.

Every key is optional unless its default says **required**. Only `auth.keys` (at least one key)
and `providers` (at least one provider) must be written; every other section may be left out.
A key the gateway does not know is an error that names it
(`providers.pbx-hq.bse_url: unknown field`). `<name>` stands for a name you choose.

The same configuration as a JSON Schema: [`config.schema.json`](config.schema.json). With the
YAML language server (VS Code's YAML extension, and others), the first line
`# yaml-language-server: $schema=<path or URL of docs/config.schema.json>` of a config file gives
completion, these descriptions on hover, and checks as you type.

## Value types

| Type | Written as |
|---|---|
| duration | {duration} |
| `ip:port` | {socket} |
| URL | An absolute URL, e.g. `https://pbx.example.com:8088`. |
| string (env var name) | The name of an environment variable, read at start: see [secrets](#secrets). |
| string (secret) | A secret: never printed. Where a `*_env` key names its variable, write it inline for local use only: see [secrets](#secrets). |

## Secrets

API keys, vendor credentials, webhook secrets and callback tokens are read from environment
variables: a key ending in `_env` names the variable (`token_env: COMMBOX_TOKEN`), read once at
start; a variable that is unset or empty is an error. Each also has an inline form without
`_env` (`token: ...`) for local use; give one or the other, never both. A secret never
prints: logs, errors and `check-config --print` show `*****`. `store.redis_url` may hold a
password too: give it by environment override (`{prefix}STORE__REDIS_URL`).

## Environment overrides

After the file, every environment variable starting with `{prefix}` sets one key: the rest
of its name is the key's YAML path in capitals, with `__` (a double underscore) between levels:

```sh
{prefix}SERVER__DRAIN_TIMEOUT=45s
{prefix}STORE__REDIS_URL=redis://:password@redis:6379/0
{prefix}TELEMETRY__SAMPLE_RATIO=0.1
```

The rest of the name is lowercased and taken as written otherwise, so a provider whose
name has a `-` keeps it: `{prefix}PROVIDERS__PBX-HQ__TIMEOUT=7s` sets `providers.pbx-hq.timeout`.
A shell's `export` refuses such a name, but `env '{prefix}PROVIDERS__PBX-HQ__TIMEOUT=7s' summary-gateway ...`,
`docker run -e` and a Kubernetes `env:` entry set it (and a provider's secrets come from its
`*_env` variables, whatever its name). Only a name with capitals cannot be reached.

A value is read like a YAML scalar: `7s`, `0.1`, `true`, `[pbx-hq, analytics]` for a list; a
string of digits needs quotes (`'\"123\"'`).

An override changes a key of the file; it cannot add a provider or a caller the file does not
have: `{prefix}PROVIDERS__PBX_HQ__TIMEOUT` for a file's `pbx-hq` would make a new,
half-configured provider `pbx_hq`, so it is an error. Every problem in a value an override set
names the variable first: `{prefix}STORE__SUMMARY_TTL (store.summary_ttl): invalid value: ...`.
A variable that starts `SUMMARY_GATEWAY_` with one underscore (`SUMMARY_GATEWAY_SERVER__LISTEN`)
is not read, and `serve` and `check-config` warn about it; `SUMMARY_GATEWAY_CONFIG`, the path of
the file, is the command line's own.
",
        duration = cell(&description(&defs["Duration"])),
        socket = cell(&description(&defs["SocketAddr"])),
        prefix = ENV_PREFIX,
        examples = examples.join(", "),
    );
    for section in sections(&schema, vendors) {
        render_section(&mut out, &section);
    }
    out
}

fn render_section(out: &mut String, section: &Section) {
    let _ = write!(out, "\n{} {}\n", "#".repeat(section.level), section.heading);
    for paragraph in &section.intro {
        let _ = write!(out, "\n{paragraph}\n");
    }
    let _ = write!(out, "\n| Key | Type | Default | Description |\n|---|---|---|---|\n");
    for row in &section.rows {
        let mut default = match &row.default {
            Cell::Value(yaml) => code(yaml),
            Cell::Unset => "not set".to_owned(),
            Cell::Required => match row.parent() {
                Some(parent) => format!("**required** in `{parent}`"),
                None => "**required**".to_owned(),
            },
            Cell::OneOf(keys) => {
                format!("**required**: one of {}", keys.iter().map(|k| code(k)).collect::<Vec<_>>().join(", "))
            }
        };
        for (type_name, yaml) in &row.type_defaults {
            let _ = write!(default, " (`{type_name}`: {})", code(yaml));
        }
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            row.key(section.prefix),
            cell(&row.ty),
            cell(&default),
            cell(&row.description)
        );
    }
}

/// Inline code for a table cell.
fn code(text: &str) -> String {
    format!("`{text}`")
}

/// Text for a table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace("\n\n", "<br><br>").replace('\n', " ")
}

/// The sections of the reference, in order.
pub(crate) fn sections(schema: &Value, vendors: &[&dyn VendorType]) -> Vec<Section> {
    let defs = defs(schema);
    let mut sections = Vec::new();
    for (name, def) in [
        ("server", "ServerConfig"),
        ("store", "StoreConfig"),
        ("webhooks", "WebhooksConfig"),
        ("telemetry", "TelemetryConfig"),
    ] {
        let def_schema = &defs[def];
        sections.push(Section {
            heading: format!("`{name}`"),
            level: 2,
            prefix: name,
            provider_type: None,
            intro: vec![description(def_schema)],
            rows: rows(&defs, vendors, def_schema, "", &ordered_keys(def_schema, def_order(def, vendors))),
        });
    }

    let keys = &defs["AuthConfig"]["properties"]["keys"];
    let key = &defs["KeyConfig"];
    sections.push(Section {
        heading: "`auth.keys.<name>`".to_owned(),
        level: 2,
        prefix: "auth.keys.<name>",
        provider_type: None,
        intro: vec![description(keys), description(key)],
        rows: rows(&defs, vendors, key, "", &ordered_keys(key, def_order("KeyConfig", vendors))),
    });

    let providers = &schema["properties"]["providers"];
    let provider = &defs["ProviderConfig"];
    let common = &defs["CommonConfig"];
    let type_prop = &provider["properties"]["type"];
    let mut common_rows = vec![Row {
        rel: "type".to_owned(),
        ty: type_label(&defs, type_prop, "type"),
        default: Cell::Required,
        type_defaults: Vec::new(),
        description: description(type_prop),
        secret: false,
    }];
    common_rows.extend(rows(&defs, vendors, common, "", &ordered_keys(common, def_order("CommonConfig", vendors))));
    let common_props = properties(common);
    for row in &mut common_rows {
        let Some(common_prop) = common_props.get(&row.rel) else { continue };
        for vendor in vendors {
            let variant_default = defs[vendor.def_name()]["properties"][&row.rel].get("default");
            if let Some(default) = variant_default.filter(|d| Some(*d) != common_prop.get("default")) {
                row.type_defaults.push((vendor.type_name().to_owned(), yaml(default, &[])));
            }
        }
    }
    sections.push(Section {
        heading: "`providers.<name>`".to_owned(),
        level: 2,
        prefix: "providers.<name>",
        provider_type: None,
        intro: vec![description(providers), description(provider), description(common)],
        rows: common_rows,
    });

    for vendor in vendors {
        let (type_name, variant) = (vendor.type_name(), &defs[vendor.def_name()]);
        // The vendor's keys, then any common key whose default this type changes.
        let keys: Vec<String> = ordered_keys(variant, vendor.fields())
            .into_iter()
            .filter(|key| match common_props.get(key) {
                None => key != "type",
                Some(common_prop) => variant["properties"][key].get("default") != common_prop.get("default"),
            })
            .collect();
        sections.push(Section {
            heading: format!("`providers.<name>` with `type: {type_name}`"),
            level: 3,
            prefix: "providers.<name>",
            provider_type: Some(type_name),
            intro: vec![description(variant)],
            rows: rows(&defs, vendors, variant, "", &keys),
        });
    }
    sections
}

/// The rows of the keys `keys` of an object schema, each followed by the keys of
/// its map if it is one (`rate_limit.per_second`).
fn rows(
    defs: &Map<String, Value>,
    vendors: &[&dyn VendorType],
    object: &Value,
    parent: &str,
    keys: &[String],
) -> Vec<Row> {
    let props = properties(object);
    let required: Vec<&str> =
        object.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let groups = one_of_groups(object);
    let mut rows = Vec::new();
    for key in keys {
        let prop = &props[key];
        let rel = if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") };
        let nested = nested_object(defs, prop);
        let default = if required.contains(&key.as_str()) {
            Cell::Required
        } else if let Some(group) = groups.iter().find(|g| g.contains(key)) {
            Cell::OneOf(group.clone())
        } else {
            match prop.get("default") {
                None | Some(Value::Null) => Cell::Unset,
                Some(value) => {
                    Cell::Value(yaml(value, nested.as_ref().map_or(&[], |(name, _)| def_order(name, vendors))))
                }
            }
        };
        let mut text = description(prop);
        if let Some(variants) = enum_variants(defs, prop) {
            let list: Vec<String> = variants.iter().map(|(v, d)| format!("`{v}`: {d}")).collect();
            let _ = write!(text, "\n\n{}", list.join("<br>"));
        }
        rows.push(Row {
            rel: rel.clone(),
            ty: type_label(defs, prop, key),
            default,
            type_defaults: Vec::new(),
            description: text,
            secret: non_null(prop).get("writeOnly") == Some(&Value::Bool(true)),
        });
        if let Some((name, nested)) = nested {
            rows.extend(self::rows(defs, vendors, nested, &rel, &ordered_keys(nested, def_order(&name, vendors))));
        }
    }
    rows
}

/// The `$defs` of the root schema.
fn defs(schema: &Value) -> Map<String, Value> {
    schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// A property's keys in declaration order (`order`), then any other alphabetically.
pub(crate) fn ordered_keys(object: &Value, order: &[&str]) -> Vec<String> {
    let props = properties(object);
    let mut keys: Vec<String> = order.iter().filter(|k| props.contains_key(**k)).map(|k| (*k).to_owned()).collect();
    keys.extend(props.keys().filter(|k| !order.contains(&k.as_str())).cloned());
    keys
}

/// Declaration order of the fields of the struct behind a `$defs` entry.
pub(crate) fn def_order(def: &str, vendors: &[&dyn VendorType]) -> &'static [&'static str] {
    match def {
        "ServerConfig" => serde_fields::<ServerConfig>(),
        "StoreConfig" => serde_fields::<StoreConfig>(),
        "StoreTlsConfig" => serde_fields::<crate::StoreTlsConfig>(),
        "SentinelConfig" => serde_fields::<crate::SentinelConfig>(),
        "ClusterConfig" => serde_fields::<crate::ClusterConfig>(),
        "WebhooksConfig" => serde_fields::<WebhooksConfig>(),
        "TelemetryConfig" => serde_fields::<TelemetryConfig>(),
        "KeyConfig" => serde_fields::<KeyConfig>(),
        "RateLimit" => serde_fields::<RateLimit>(),
        "KeyEntry" => serde_fields::<crate::KeyEntry>(),
        "Quota" => serde_fields::<crate::Quota>(),
        "ProviderQuota" => serde_fields::<crate::ProviderQuota>(),
        "CommonConfig" => serde_fields::<CommonConfig>(),
        "CircuitBreakerConfig" => serde_fields::<CircuitBreakerConfig>(),
        // A struct inside a vendor's keys (`type: http`'s `job`).
        _ => vendors
            .iter()
            .flat_map(|v| v.nested_field_orders())
            .find(|(name, _)| *name == def)
            .map_or(&[], |(_, fields)| fields),
    }
}

/// The field names serde's derive passes to `deserialize_struct`, in declaration
/// order (`serde_json::Map` sorts the schema's properties).
pub(crate) fn serde_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// Groups of keys of which exactly one must be given (`allOf: [{oneOf: [{required: [k]}, ...]}]`).
fn one_of_groups(object: &Value) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    for rule in object.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        let Some(one_of) = rule.get("oneOf").and_then(Value::as_array) else { continue };
        let keys: Option<Vec<String>> = one_of
            .iter()
            .map(|alt| match alt.get("required").and_then(Value::as_array).map(Vec::as_slice) {
                Some([Value::String(key)]) => Some(key.clone()),
                _ => None,
            })
            .collect();
        groups.extend(keys);
    }
    groups
}

/// The schema without its `null` alternative (`Option<T>`).
fn non_null(schema: &Value) -> Value {
    if let Some(any_of) = schema.get("anyOf").and_then(Value::as_array) {
        let rest: Vec<&Value> = any_of.iter().filter(|s| s.get("type") != Some(&Value::from("null"))).collect();
        if let [only] = rest.as_slice() {
            return (*only).clone();
        }
    }
    let mut schema = schema.clone();
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema["type"] = only;
        }
    }
    schema
}

/// The `$defs` name a schema refers to.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next())
}

/// A property that is a map with known keys (`rate_limit`): its `$defs` name and schema.
fn nested_object<'a>(defs: &'a Map<String, Value>, prop: &Value) -> Option<(String, &'a Value)> {
    let name = ref_name(&non_null(prop))?.to_owned();
    let def = defs.get(&name).filter(|d| d.get("properties").is_some())?;
    Some((name, def))
}

/// The values of an enum property and their descriptions.
fn enum_variants(defs: &Map<String, Value>, prop: &Value) -> Option<Vec<(String, String)>> {
    let schema = non_null(prop);
    let def = defs.get(ref_name(&schema)?)?;
    def.get("oneOf")?.as_array()?.iter().map(|v| Some((v.get("const")?.as_str()?.to_owned(), description(v)))).collect()
}

/// The type column.
fn type_label(defs: &Map<String, Value>, schema: &Value, key: &str) -> String {
    let schema = non_null(schema);
    if let Some(name) = ref_name(&schema) {
        return match name {
            "Duration" => "duration".to_owned(),
            "SocketAddr" => "`ip:port`".to_owned(),
            _ => match defs.get(name) {
                Some(def) if def.get("properties").is_some() => "map".to_owned(),
                Some(def) => type_label(defs, def, key),
                None => name.to_owned(),
            },
        };
    }
    let consts: Vec<&Value> = match (schema.get("const"), schema.get("enum"), schema.get("oneOf")) {
        (Some(c), ..) => vec![c],
        (_, Some(Value::Array(values)), _) => values.iter().collect(),
        (.., Some(Value::Array(alts))) => alts.iter().filter_map(|a| a.get("const")).collect(),
        _ => Vec::new(),
    };
    if !consts.is_empty() {
        return consts.iter().filter_map(|c| c.as_str()).map(code).collect::<Vec<_>>().join(" | ");
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") if schema.get("format") == Some(&Value::from("uri")) => "URL".to_owned(),
        Some("string") if schema.get("writeOnly") == Some(&Value::Bool(true)) => "string (secret)".to_owned(),
        Some("string") if key.ends_with("_env") => "string (env var name)".to_owned(),
        Some("array") => format!("list of {}", plural(&type_label(defs, &schema["items"], ""))),
        Some("object") => match schema.get("additionalProperties") {
            Some(values @ Value::Object(_)) => format!("map of {}", plural(&type_label(defs, values, ""))),
            _ => "map".to_owned(),
        },
        Some(other) => other.to_owned(),
        None => "any".to_owned(),
    }
}

/// `string` → `strings`, `map of strings` → `maps of strings`.
fn plural(label: &str) -> String {
    match label.split_once(' ') {
        Some((head, tail)) => format!("{head}s {tail}"),
        None => format!("{label}s"),
    }
}

fn description(schema: &Value) -> String {
    schema.get("description").and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// A value as YAML (flow style), keys of a map in `order`.
pub(crate) fn yaml(value: &Value, order: &[&str]) -> String {
    match value {
        Value::String(s) if plain_scalar(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(|v| yaml(v, &[])).collect::<Vec<_>>().join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        Value::Object(map) => {
            let mut keys: Vec<&String> = order.iter().filter_map(|k| map.get_key_value(*k).map(|(k, _)| k)).collect();
            keys.extend(map.keys().filter(|k| !order.contains(&k.as_str())));
            let entries: Vec<String> = keys
                .iter()
                .map(|k| format!("{}: {}", yaml(&Value::from(k.as_str()), &[]), yaml(&map[*k], &[])))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        // Numbers, booleans, null; and strings that need quotes, as JSON (which YAML reads).
        other => other.to_string(),
    }
}

/// Whether YAML reads `s` unquoted as this very string (in block and flow context).
fn plain_scalar(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !s.is_empty()
        && s.trim() == s
        && !s.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '.',
        ])
        && !s.contains([',', '[', ']', '{', '}', '\\', '\n'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !matches!(lower.as_str(), "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off" | "y" | "n")
        && s.parse::<f64>().is_err()
        && !lower.starts_with("0x")
        && !lower.starts_with("0o")
}

#[cfg(test)]
mod tests;
