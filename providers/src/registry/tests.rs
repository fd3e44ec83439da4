//! The configuration reference and JSON Schema committed in `docs/` are what the
//! config types of this build's vendors generate (`gateway-config` renders them,
//! but only this crate has the list). After changing a config type or adding a
//! vendor: `UPDATE_CONFIG_DOCS=1 cargo test -p providers`, and commit the result.

use std::path::PathBuf;

use super::{VENDORS, config_types, simulators};

const REFERENCE: &str = "docs/configuration.md";
const SCHEMA: &str = "docs/config.schema.json";
const UPDATE: &str = "UPDATE_CONFIG_DOCS";

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn committed_config_docs_are_up_to_date() {
    let types = config_types();
    let schema = serde_json::to_string_pretty(&gateway_config::json_schema(&types)).expect("a JSON value serializes");
    let update = std::env::var(UPDATE).is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, generated) in [(REFERENCE, gateway_config::reference_markdown(&types)), (SCHEMA, schema + "\n")] {
        let file = workspace_file(path);
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        if committed == generated {
            continue;
        }
        if update {
            std::fs::create_dir_all(file.parent().expect("docs/ has a parent")).expect("create docs/");
            std::fs::write(&file, generated).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
            eprintln!("regenerated {path}");
        } else {
            stale.push(format!(
                "{path} is out of date: run `{UPDATE}=1 cargo test -p providers` to regenerate\n{}",
                first_difference(&committed, &generated)
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

fn first_difference(committed: &str, generated: &str) -> String {
    let (mut old, mut new) = (committed.lines(), generated.lines());
    for line in 1.. {
        match (old.next(), new.next()) {
            (None, None) => break,
            (a, b) if a == b => {}
            (a, b) => {
                return format!(
                    "  first difference, line {line}:\n  committed: {}\n  generated: {}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                );
            }
        }
    }
    String::new()
}

#[test]
fn each_type_is_registered_once() {
    let mut names: Vec<&str> = VENDORS.iter().map(|e| e.config.type_name()).collect();
    let mut defs: Vec<&str> = VENDORS.iter().map(|e| e.config.def_name()).collect();
    names.sort_unstable();
    defs.sort_unstable();
    let (n, d) = (names.len(), defs.len());
    names.dedup();
    defs.dedup();
    assert_eq!((names.len(), defs.len()), (n, d), "a `type` or `$defs` name registered twice");
}

/// The demo fills in `${<TYPE>_URL}` with each simulator's address: its template
/// has one provider of each type that has a simulator, and loads once filled in.
#[test]
fn the_demo_template_has_a_provider_for_each_simulator() {
    let mut demo = include_str!("../../../config/examples/demo.template.yaml").replace("${LISTEN}", "127.0.0.1:8080");
    for (i, (type_name, _)) in simulators().enumerate() {
        let placeholder = format!("${{{}_URL}}", type_name.to_ascii_uppercase());
        assert!(demo.contains(&placeholder), "demo.template.yaml has no {placeholder}");
        demo = demo.replace(&placeholder, &format!("http://127.0.0.1:{}", 9001 + i));
    }
    let config = gateway_config::Config::from_yaml(&config_types(), &demo, &|_| None)
        .unwrap_or_else(|e| panic!("demo.template.yaml:\n{e}"));
    let mut types: Vec<&str> = config.providers.values().map(|p| p.vendor.type_name()).collect();
    let mut simulated: Vec<&str> = simulators().map(|(type_name, _)| type_name).collect();
    types.sort_unstable();
    simulated.sort_unstable();
    assert_eq!(types, simulated, "one provider of every type with a simulator");
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

/// The example each type names (the reference links to it) exists, loads, and is of that type.
#[test]
fn each_vendor_example_loads_as_its_type() {
    let types = config_types();
    for vendor in &types {
        let Some(file) = vendor.example() else { continue };
        let path = workspace_file(&format!("config/examples/{file}"));
        let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config =
            gateway_config::Config::from_yaml(&types, &yaml, &dummy_env).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert!(config.providers.values().all(|p| p.vendor.type_name() == vendor.type_name()), "{file}");
    }
}
