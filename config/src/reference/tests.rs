//! The reference cannot drift: every key it lists is accepted by the loader,
//! every default it shows is the default the loader applies, every key it calls required is, and the examples
//! show the keys of their vendor and load. (That the committed files are what the
//! code generates for the build's vendor types is tested by the providers crate,
//! which has their list: `providers/src/registry/tests.rs`.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

use figment::Figment;
use figment::providers::{Format, Yaml};
use serde_json::{Map, Value};

use super::{Cell, Row, Section, def_order, ordered_keys, reference_markdown, sections};
use crate::schema::properties;
use crate::tests::VENDORS;
use crate::{Config, ConfigErrors, ServerConfig, StoreConfig, TelemetryConfig, WebhooksConfig};

// ---- YAML documents built from the reference's rows --------------------------------

/// A YAML document whose leaves are YAML text, as the reference prints it.
#[derive(Clone, Default)]
struct Doc(Map<String, Value>);

impl Doc {
    fn set(&mut self, path: &str, yaml: &str) {
        let mut map = &mut self.0;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                map.insert(segment.to_owned(), Value::from(yaml));
                return;
            }
            let entry = map.entry(segment.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            map = entry.as_object_mut().expect("just made a map");
        }
    }

    fn remove(&mut self, path: &str) {
        let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
        let mut map = &mut self.0;
        for segment in parent.split('.').filter(|s| !s.is_empty()) {
            map = map.get_mut(segment).and_then(Value::as_object_mut).expect("path exists");
        }
        map.remove(last);
    }

    fn yaml(&self) -> String {
        fn render(map: &Map<String, Value>, indent: usize, out: &mut String) {
            for (key, value) in map {
                match value {
                    Value::Object(inner) => {
                        let _ = writeln!(out, "{:indent$}{key}:", "");
                        render(inner, indent + 2, out);
                    }
                    Value::String(yaml) => {
                        let _ = writeln!(out, "{:indent$}{key}: {yaml}", "");
                    }
                    other => panic!("not a leaf: {other}"),
                }
            }
        }
        let mut out = String::new();
        render(&self.0, 0, &mut out);
        out
    }

    fn load(&self) -> Result<Config, ConfigErrors> {
        Config::from_yaml(VENDORS, &self.yaml(), &dummy_env)
    }
}

/// Any environment variable is set, to a value every secret accepts.
#[expect(clippy::unnecessary_wraps, reason = "an `EnvLookup`")]
fn dummy_env(name: &str) -> Option<String> {
    Some(if name.contains("WEBHOOK") {
        "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI=".to_owned()
    } else {
        "0123456789abcdef0123456789abcdef".to_owned()
    })
}

const CALLER: &str = "caller";

/// The YAML path of a row's key with names filled in, in a section, for a provider type.
fn path(section: &Section, row: &Row, provider: &str) -> String {
    row.key(section.prefix)
        .replace("auth.keys.<name>", &format!("auth.keys.{CALLER}"))
        .replace("providers.<name>", &format!("providers.{provider}"))
}

/// A value for a key that has no default.
fn sample(row: &Row, provider_type: &str) -> String {
    let key = row.rel.rsplit('.').next().unwrap_or_default();
    match row.ty.as_str() {
        _ if key == "type" => provider_type.to_owned(),
        // A map that is required: its own required keys (`type: http`'s `request`).
        _ if key == "request" => "{ path: /sample }".to_owned(),
        // An enumeration (`` `text` \| `reference` ``): its first value.
        ty if ty.starts_with('`') => ty.split('`').nth(1).unwrap_or_default().to_owned(),
        "list of strings" => "[sample]".to_owned(),
        "map" if key == "poll" => "{ path: /sample }".to_owned(),
        _ if key.ends_with("sha256") => "ab".repeat(32),
        "URL" => "https://vendor.example.com".to_owned(),
        "string (env var name)" => format!("TEST_{}", key.to_ascii_uppercase()),
        "number" | "integer" => "5".to_owned(),
        _ => "sample".to_owned(),
    }
}

/// The alternative of a one-of group the minimal document gives: the `*_env` one.
fn chosen(keys: &[String]) -> &str {
    keys.iter().find(|k| k.ends_with("_env")).unwrap_or(&keys[0])
}

/// The sections that apply to a provider of this type, each with the rows of its map
/// (the common keys then the vendor's; a vendor row replaces a common one).
fn provider_rows<'a>(sections: &'a [Section], provider_type: &str) -> Vec<(&'a Section, &'a Row)> {
    let vendor: Vec<(&Section, &Row)> = sections
        .iter()
        .filter(|s| s.provider_type == Some(provider_type))
        .flat_map(|s| s.rows.iter().map(move |r| (s, r)))
        .collect();
    let common = sections
        .iter()
        .filter(|s| s.prefix == "providers.<name>" && s.provider_type.is_none())
        .flat_map(|s| s.rows.iter().map(move |r| (s, r)))
        .filter(|(_, r)| !vendor.iter().any(|(_, v)| v.rel == r.rel));
    common.chain(vendor.iter().copied()).collect()
}

/// Every (section, row, provider name, provider type) of the reference: the
/// provider sections once per type, with the provider named after its type.
fn all_rows(sections: &[Section]) -> Vec<(&Section, &Row, &'static str)> {
    let mut rows: Vec<(&Section, &Row, &'static str)> = sections
        .iter()
        .filter(|s| !s.prefix.starts_with("providers."))
        .flat_map(|s| s.rows.iter().map(move |r| (s, r, "")))
        .collect();
    for provider_type in VENDORS.iter().map(|v| v.type_name()) {
        rows.extend(provider_rows(sections, provider_type).into_iter().map(|(s, r)| (s, r, provider_type)));
    }
    rows
}

/// Only what the reference says is required (one `*_env` of each one-of group).
fn minimal(sections: &[Section]) -> Doc {
    let mut doc = Doc::default();
    for (section, row, provider) in all_rows(sections) {
        if row.parent().is_some() {
            continue;
        }
        let needed = match &row.default {
            Cell::Required => true,
            Cell::OneOf(keys) => chosen(keys) == row.rel,
            Cell::Value(_) | Cell::Unset => false,
        };
        if needed {
            doc.set(&path(section, row, provider), &sample(row, provider));
        }
    }
    doc
}

/// The differences between two JSON values, as paths.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let null = Value::Null;
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                differences(&child, a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn assert_same(context: &str, omitted: &Config, written: &Config, yaml: &str) {
    let (a, b) =
        (serde_json::to_value(omitted).expect("serializes"), serde_json::to_value(written).expect("serializes"));
    let mut diffs = Vec::new();
    differences("", &a, &b, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{context}: writing the documented defaults changes the configuration (default vs documented):\n{}\n\nYAML:\n{yaml}",
        diffs.join("\n")
    );
}

// ---- the reference against the loader ------------------------------------------------

#[test]
fn every_documented_key_loads_and_every_documented_default_is_the_default() {
    let sections = sections(&crate::json_schema(VENDORS), VENDORS);
    let base = minimal(&sections);
    let omitted =
        base.load().unwrap_or_else(|e| panic!("the documented required keys are not enough:\n{e}\n\n{}", base.yaml()));

    // Sections left out are their `Default`.
    for (section, value) in [
        ("server", serde_json::to_value(ServerConfig::default())),
        ("store", serde_json::to_value(StoreConfig::default())),
        ("webhooks", serde_json::to_value(WebhooksConfig::default())),
        ("telemetry", serde_json::to_value(TelemetryConfig::default())),
    ] {
        let loaded = &serde_json::to_value(&omitted).expect("serializes")[section];
        assert_eq!(loaded, &value.expect("serializes"), "{section}");
    }

    // Every key written with its documented default (`null` when unset; the other
    // alternatives of a one-of group too) loads to the same configuration.
    let mut full = base.clone();
    for (section, row, provider) in all_rows(&sections) {
        if row.parent().is_some() {
            continue;
        }
        let path = path(section, row, provider);
        let type_default = row.type_defaults.iter().find(|(t, _)| t == provider).map(|(_, yaml)| yaml);
        match (&row.default, type_default) {
            (_, Some(yaml)) | (Cell::Value(yaml), None) => full.set(&path, yaml),
            (Cell::Unset, None) => full.set(&path, "null"),
            (Cell::OneOf(keys), None) if chosen(keys) != row.rel => full.set(&path, "null"),
            (Cell::Required | Cell::OneOf(_), None) => {}
        }
    }
    let written = full.load().unwrap_or_else(|e| panic!("a documented key is refused:\n{e}\n\n{}", full.yaml()));
    assert_same("top-level keys", &omitted, &written, &full.yaml());

    // Keys of a nested map (`rate_limit.burst`): the map with only its required keys,
    // then with its other keys at their documented defaults.
    let mut nested: BTreeMap<String, Vec<(&Section, &Row, &str)>> = BTreeMap::new();
    for (section, row, provider) in all_rows(&sections) {
        if let Some(parent) = row.parent() {
            let map = path(section, row, provider);
            let map = map.strip_suffix(&row.rel).map_or(String::new(), |p| format!("{p}{parent}"));
            nested.entry(map).or_default().push((section, row, provider));
        }
    }
    for (context, children) in nested {
        // `type: http`'s `auth` is a one-of group of maps (exactly one form, each
        // with its secret): `tests::http_providers_are_checked_with_their_paths` checks it.
        // `job.poll` is a map inside a map whose own required keys this does not write.
        // `store.sentinel.nodes` and `store.cluster.nodes` must be host:port, which the
        // sampler does not write:
        // `tests::tls_and_acl_users_of_the_redis_store_are_checked_with_their_paths` checks them.
        if context.starts_with("providers.http.auth")
            || context == "providers.http.job.poll"
            || context == "store.sentinel"
            || context == "store.cluster"
        {
            continue;
        }
        let (mut short, mut long) = (base.clone(), base.clone());
        for (section, child, provider) in children {
            let path = path(section, child, provider);
            match &child.default {
                Cell::Required => {
                    short.set(&path, &sample(child, provider));
                    long.set(&path, &sample(child, provider));
                }
                Cell::Value(yaml) => long.set(&path, yaml),
                Cell::Unset => long.set(&path, "null"),
                Cell::OneOf(_) => panic!("one-of groups in nested maps are not handled here"),
            }
        }
        let short_config = short.load().unwrap_or_else(|e| panic!("{context}:\n{e}\n\n{}", short.yaml()));
        let long_config = long.load().unwrap_or_else(|e| panic!("{context}:\n{e}\n\n{}", long.yaml()));
        assert_same(&context, &short_config, &long_config, &long.yaml());
    }
}

#[test]
fn every_documented_requirement_is_enforced() {
    let sections = sections(&crate::json_schema(VENDORS), VENDORS);
    let base = minimal(&sections);
    for (section, row, provider) in all_rows(&sections) {
        if row.parent().is_some() {
            continue;
        }
        let path = path(section, row, provider);
        let map_path = path.rsplit_once('.').map_or("", |(map, _)| map).to_owned();
        match &row.default {
            Cell::Required => {
                let mut doc = base.clone();
                doc.remove(&path);
                let errors = doc.load().err().unwrap_or_else(|| panic!("{path} is documented as required"));
                let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
                assert!(paths.contains(&path.as_str()), "leaving out {path} is reported elsewhere: {errors}");
            }
            Cell::OneOf(keys) if chosen(keys) == row.rel => {
                let mut doc = base.clone();
                doc.remove(&path);
                let errors = doc.load().err().unwrap_or_else(|| panic!("one of {keys:?} is documented as required"));
                assert!(errors.iter().any(|e| e.path.starts_with(&map_path)), "{path}: {errors}");
            }
            Cell::OneOf(keys) => {
                // Two of the group at once: refused.
                let mut doc = base.clone();
                doc.set(&path, &sample(row, provider));
                assert!(doc.load().is_err(), "{path} together with {} is accepted", chosen(keys));
            }
            Cell::Value(_) | Cell::Unset => {}
        }
    }
}

#[test]
fn the_schema_covers_what_the_loader_reads() {
    let schema = crate::json_schema(VENDORS);
    let top: Vec<String> = properties(&schema).keys().cloned().collect();
    let mut sections_read: Vec<String> = crate::SECTIONS.iter().map(|s| (*s).to_owned()).collect();
    sections_read.sort();
    assert_eq!(top, sections_read, "top-level sections");

    let defs = schema["$defs"].as_object().expect("$defs");
    let mut common: Vec<String> = properties(&defs["CommonConfig"]).keys().cloned().collect();
    let mut common_fields: Vec<String> = crate::providers::COMMON_FIELDS.iter().map(|s| (*s).to_owned()).collect();
    common.sort();
    common_fields.sort();
    assert_eq!(common, common_fields, "the keys parse_provider hands to CommonConfig");

    let types: Vec<&str> = VENDORS.iter().map(|v| v.type_name()).collect();
    assert_eq!(
        schema["$defs"]["ProviderConfig"]["properties"]["type"]["enum"],
        serde_json::json!(types),
        "the schema's provider types"
    );
    for vendor_type in VENDORS {
        let (type_name, def, vendor) = (vendor_type.type_name(), vendor_type.def_name(), vendor_type.fields());
        assert!(!vendor.is_empty(), "fields of {type_name}");
        for field in vendor {
            assert!(!common.contains(&(*field).to_owned()), "{type_name}.{field} is shadowed by a common key");
        }
        // Every key of the type is documented: `type`, the vendor's, the common ones.
        let keys = ordered_keys(&defs[def], vendor);
        assert_eq!(keys.len(), 1 + vendor.len() + common.len(), "{def}: {keys:?}");
    }
    // Every struct's keys render in declaration order (else: add it to `def_order`).
    for (name, def) in defs {
        if def.get("properties").is_none() || VENDORS.iter().any(|v| v.def_name() == name) {
            continue;
        }
        let mut order: Vec<String> = def_order(name, VENDORS).iter().map(|f| (*f).to_owned()).collect();
        let mut props: Vec<String> = properties(def).keys().cloned().collect();
        order.sort_unstable();
        props.sort_unstable();
        // One key each, rendered on their own (`auth.keys.<name>`, `providers.<name>.type`).
        if !matches!(name.as_str(), "AuthConfig" | "ProviderConfig") {
            assert_eq!(order, props, "def_order({name})");
        }
    }
}

#[test]
fn the_reference_renders_defaults_as_users_write_them() {
    let md = reference_markdown(VENDORS);
    for row in [
        "| `server.drain_timeout` | duration | `30s` |",
        "| `server.shutdown_delay` | duration | `0s` |",
        "| `server.listen` | `ip:port` | `127.0.0.1:8080` |",
        "| `store.redis_url` | string (secret) | not set |",
        "| `auth.keys.<name>.rate_limit` | map | `{ per_second: 50.0, burst: 100 }` |",
        "| `auth.keys.<name>.rate_limit.per_second` | number | **required** in `rate_limit` |",
        "| `auth.keys.<name>.key_env` | string (env var name) | **required**: one of `key_sha256`, `key_env`, `key`, `keys` |",
        "| `providers.<name>.max_concurrency` | integer | `64` (`elevateai`: `10`) |",
        "| `providers.<name>.base_url` | URL | **required** |",
        "| `providers.<name>.variant` | `cx` \\| `standard` | `cx` |",
    ] {
        assert!(md.contains(row), "missing `{row}` in:\n{md}");
    }
    assert!(md.contains("SUMMARY_GATEWAY__SERVER__DRAIN_TIMEOUT=45s"));
}

// ---- the examples --------------------------------------------------------------------

const EXAMPLES: &[(&str, &str, &str)] = &[
    ("commbox.yaml", "commbox", include_str!("../../examples/commbox.yaml")),
    ("elevateai.yaml", "elevateai", include_str!("../../examples/elevateai.yaml")),
    ("yeastar.yaml", "yeastar", include_str!("../../examples/yeastar.yaml")),
    ("http-commbox.yaml", "http", include_str!("../../examples/http-commbox.yaml")),
];

/// The lines of a top-level section (`auth:`), commented out or not, up to the next one.
fn section_text(text: &str, top: &str) -> String {
    let top_level = |line: &str| -> Option<String> {
        let line = line.strip_prefix('#').map_or(line, |l| l.strip_prefix(' ').unwrap_or(l));
        let (key, _) = line.split_once(':')?;
        (!key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then(|| key.to_owned())
    };
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(key) = top_level(line) {
            inside = key == top;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether the text shows `key:` (in YAML or in a comment).
fn mentions(text: &str, key: &str) -> bool {
    text.match_indices(&format!("{key}:"))
        .any(|(i, _)| text[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')))
}

#[test]
fn each_vendor_example_shows_its_keys_and_keeps_secrets_out() {
    let sections = sections(&crate::json_schema(VENDORS), VENDORS);
    let mut shown_somewhere: Vec<String> = Vec::new();
    for (file, provider_type, text) in EXAMPLES {
        let config = Config::from_yaml(VENDORS, text, &dummy_env).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert!(config.providers.values().all(|p| p.vendor.type_name() == *provider_type), "{file}");

        // Every key of its provider type (not the inline form of a secret) is shown.
        let providers = section_text(text, "providers");
        for (section, row) in provider_rows(&sections, provider_type) {
            if row.parent().is_none() && !row.secret {
                assert!(mentions(&providers, &row.rel), "{file} does not show {}", row.key(section.prefix));
            }
        }
        for (section, row, _) in all_rows(&sections) {
            let top = section.prefix.split('.').next().unwrap_or_default();
            if row.parent().is_none() && !row.secret && mentions(&section_text(text, top), &row.rel) {
                shown_somewhere.push(row.key(section.prefix));
            }
        }
        for needle in ["telemetry:", "shutdown_delay:"] {
            assert!(text.contains(needle), "{file} does not mention {needle}");
        }

        // Secrets come from `*_env`: no inline secret is written (comments aside).
        let tree: Value = Figment::from(Yaml::string(text)).extract().expect("YAML");
        for (section, row, provider) in all_rows(&sections) {
            if !row.secret {
                continue;
            }
            let names: Vec<String> = match section.prefix {
                "auth.keys.<name>" => tree["auth"]["keys"].as_object().map(|m| m.keys().cloned().collect()),
                "providers.<name>" => tree["providers"]
                    .as_object()
                    .map(|m| m.iter().filter(|(_, p)| p["type"] == *provider).map(|(n, _)| n.clone()).collect()),
                _ => Some(vec![String::new()]),
            }
            .unwrap_or_default();
            for name in names {
                let key = row.key(section.prefix).replace("<name>", &name);
                let pointer = format!("/{}", key.replace('.', "/"));
                assert!(tree.pointer(&pointer).is_none(), "{file} gives {key} inline: use {}_env", row.rel);
            }
        }
    }
    // Together, the examples show every key of every section.
    for (section, row, _) in all_rows(&sections) {
        let key = row.key(section.prefix);
        if row.parent().is_none() && !row.secret && section.provider_type.is_none() {
            assert!(shown_somewhere.contains(&key), "no example shows {key}");
        }
    }
}
