//! Environment overrides (`SUMMARY_GATEWAY__SECTION__KEY=value`): merged over the
//! file, and told apart from it when something is wrong.
//!
//! figment tags every value with the provider it came from, so:
//! - a problem in a value an override set names the variable
//!   (`SUMMARY_GATEWAY__STORE__SUMMARY_TTL (store.summary_ttl): ...`), not the file;
//! - an override may change a provider or caller of the file but not add one: a typo,
//!   or `PBX_HQ` for `pbx-hq`, would otherwise make a new, half-configured one;
//! - [`warnings`] names variables that look like overrides but are not read
//!   (`SUMMARY_GATEWAY_SERVER__LISTEN`, one underscore).

use std::borrow::Cow;

use figment::providers::Env;
use figment::value::{Dict, Tag, Value as Tree};
use figment::{Figment, Profile, Provider};
use serde_json::Value;

use crate::error::{ConfigError, ConfigErrors};
use crate::providers::VendorType;
use crate::{Config, ENV_PREFIX, EnvLookup};

/// Variables of the CLI that share the prefix but are not overrides.
const CLI_VARIABLES: &[&str] = &["SUMMARY_GATEWAY_CONFIG"];

/// Sections whose entries an override may change but not create: `(YAML path, what an entry is)`.
const NAMED_ENTRIES: &[(&[&str], &str)] = &[(&["providers"], "provider"), (&["auth", "keys"], "caller")];

/// The overrides, as figment reads them: the prefix stripped, `__` nesting, names lowercased.
fn overrides() -> Env {
    Env::prefixed(ENV_PREFIX).split("__")
}

/// Loads `file` with the overrides of the process environment over it.
pub(crate) fn load(vendors: &[&dyn VendorType], file: Figment, env: &EnvLookup) -> Result<Config, ConfigErrors> {
    load_with(vendors, file, Figment::new(), env)
}

/// As [`load`], with `flags` (command-line options) over the overrides: a flag wins.
pub(crate) fn load_with(
    vendors: &[&dyn VendorType],
    file: Figment,
    flags: Figment,
    env: &EnvLookup,
) -> Result<Config, ConfigErrors> {
    let overrides = overrides();
    let origin_name = overrides.metadata().name;
    let file_tree = root(&file);
    let figment = file.merge(overrides).merge(flags);
    let mut value: Value = figment.extract().map_err(crate::figment_errors)?;
    let origin = Origin { tree: root(&figment), file_tree, figment: &figment, origin_name };
    let mut errors = origin.take_created_entries(&mut value);
    match Config::from_value(vendors, value, env) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(found)) => {
            errors.extend(found.into_iter().map(|e| origin.attribute(e)));
            Err(ConfigErrors(errors))
        }
    }
}

/// The merged tree with its tags (everything is in the default profile).
fn root(figment: &Figment) -> Dict {
    figment.data().ok().and_then(|mut profiles| profiles.remove(&Profile::Default)).unwrap_or_default()
}

/// Where the values of one load came from.
struct Origin<'a> {
    figment: &'a Figment,
    /// File and overrides merged.
    tree: Dict,
    /// The file alone.
    file_tree: Dict,
    /// The metadata name of the overrides provider.
    origin_name: Cow<'static, str>,
}

impl Origin<'_> {
    fn is_override(&self, tag: Tag) -> bool {
        self.figment.get_metadata(tag).is_some_and(|m| m.name == self.origin_name)
    }

    /// The variables that set `node` (at `keys`) or any value under it.
    fn variables(&self, keys: &mut Vec<String>, node: &Tree, out: &mut Vec<String>) {
        match node {
            Tree::Dict(_, dict) => {
                for (key, child) in dict {
                    keys.push(key.clone());
                    self.variables(keys, child, out);
                    keys.pop();
                }
            }
            leaf if self.is_override(leaf.tag()) => out.push(variable(keys)),
            _ => {}
        }
    }

    /// Names the variable(s) behind `error` if the value it is about came from an override.
    fn attribute(&self, mut error: ConfigError) -> ConfigError {
        if error.env_var.is_some() {
            return error;
        }
        // A key that is missing is about the map that lacks it.
        let Some((mut keys, node, whole)) = walk(&self.tree, &error.path) else {
            return error;
        };
        let mut vars = Vec::new();
        match node {
            // A map the file has too is the file's, whatever an override added to it.
            Tree::Dict(..) if lookup(&self.file_tree, &keys).is_some() => {}
            Tree::Dict(..) => self.variables(&mut keys, node, &mut vars),
            leaf if whole && self.is_override(leaf.tag()) => vars.push(variable(&keys)),
            _ => {}
        }
        if !vars.is_empty() {
            error.env_var = Some(vars.join(", "));
        }
        error
    }

    /// Takes out of `value` every provider and caller that only overrides give, and
    /// says so, naming their variables.
    fn take_created_entries(&self, value: &mut Value) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (section, what) in NAMED_ENTRIES {
            let Some(Tree::Dict(_, merged)) = lookup(&self.tree, section) else { continue };
            let in_file: Vec<&str> = match lookup(&self.file_tree, section) {
                Some(Tree::Dict(_, dict)) => dict.keys().map(String::as_str).collect(),
                _ => Vec::new(),
            };
            for (name, node) in merged {
                if in_file.contains(&name.as_str()) {
                    continue;
                }
                let mut keys: Vec<String> = section.iter().map(|s| (*s).to_owned()).collect();
                keys.push(name.clone());
                let mut vars = Vec::new();
                self.variables(&mut keys, node, &mut vars);
                if vars.is_empty() {
                    continue;
                }
                let entries = section.iter().try_fold(&mut *value, |v, key| v.get_mut(*key));
                if let Some(entries) = entries.and_then(Value::as_object_mut) {
                    entries.remove(name);
                }
                let path = keys.join(".");
                let message = format!(
                    "sets {what} `{name}`, which the file does not have: an override can change a {what} \
                     of the file, not add one{}",
                    hint(section, name, &in_file, &vars)
                );
                errors.push(ConfigError { path, message, env_var: Some(vars.join(", ")) });
            }
        }
        errors
    }
}

/// Why an override missed the entry it was meant for, if the file has a likely one.
fn hint(section: &[&str], name: &str, in_file: &[&str], vars: &[String]) -> String {
    let folded = |n: &str| n.to_lowercase().replace('-', "_");
    let Some(meant) = in_file.iter().find(|f| folded(f) == folded(name)) else {
        return if in_file.is_empty() {
            " (the file has none)".to_owned()
        } else {
            format!(" (the file has: {})", in_file.join(", "))
        };
    };
    if meant.chars().any(char::is_uppercase) {
        return format!(
            "; `{meant}` in the file has capitals, which no override can name (names are lowercased): \
             rename it to lower case"
        );
    }
    // The variable that reaches it: `-` kept, the rest as written.
    let prefix = variable(&section.iter().map(|s| (*s).to_owned()).chain([name.to_owned()]).collect::<Vec<_>>());
    let fixed = vars.first().and_then(|v| v.strip_prefix(&prefix)).map(|rest| {
        let section = section.iter().map(|s| (*s).to_owned()).chain([(*meant).to_owned()]).collect::<Vec<_>>();
        format!("{}{rest}", variable(&section))
    });
    match fixed {
        Some(fixed) => format!(
            "; for `{meant}`, keep its `-`: {fixed} (a shell's `export` refuses such a name; `env`, \
             `docker run -e` and a Kubernetes `env:` entry take it)"
        ),
        None => format!("; did you mean `{meant}`?"),
    }
}

/// The variable that sets the key at `keys`: `SUMMARY_GATEWAY__STORE__SUMMARY_TTL`.
fn variable(keys: &[String]) -> String {
    let upper: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    format!("{ENV_PREFIX}{}", upper.join("__"))
}

/// The value at exactly these keys.
fn lookup<'t, S: AsRef<str>>(tree: &'t Dict, keys: &[S]) -> Option<&'t Tree> {
    let (first, rest) = keys.split_first()?;
    rest.iter().try_fold(tree.get(first.as_ref())?, |node, key| match node {
        Tree::Dict(_, dict) => dict.get(key.as_ref()),
        _ => None,
    })
}

/// The value at a dotted error path (`auth.keys.crm.providers[1]`), or the deepest
/// one on the way there, with the keys that lead to it and whether it is the whole
/// path. A name may itself hold a dot, so at each level the longest key that fits
/// is taken.
fn walk<'t>(tree: &'t Dict, path: &str) -> Option<(Vec<String>, &'t Tree, bool)> {
    let mut keys = Vec::new();
    let mut node: Option<&Tree> = None;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let item = after.split_once(']').and_then(|(index, tail)| match node {
                Some(Tree::Array(_, items)) => Some((items.get(index.parse::<usize>().ok()?)?, tail)),
                _ => None,
            });
            let Some((item, tail)) = item else { break };
            node = Some(item);
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        let dict = match node {
            None => tree,
            Some(Tree::Dict(_, dict)) => dict,
            Some(_) => break,
        };
        let fits = |key: &str| rest.strip_prefix(key).is_some_and(|t| t.is_empty() || t.starts_with(['.', '[']));
        let Some((key, value)) = dict.iter().filter(|(k, _)| fits(k)).max_by_key(|(k, _)| k.len()) else { break };
        keys.push(key.clone());
        rest = &rest[key.len()..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
        node = Some(value);
    }
    node.map(|n| (keys, n, rest.is_empty()))
}

/// Variables among `names` that look like overrides but are not read, each with why.
pub fn warnings<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let single = &ENV_PREFIX[..ENV_PREFIX.len() - 1];
    let mut out = Vec::new();
    for name in names {
        let name = name.as_ref();
        let Some(head) = name.get(..single.len()).filter(|h| h.eq_ignore_ascii_case(single)) else { continue };
        let rest = &name[head.len()..];
        if CLI_VARIABLES.contains(&name) {
            continue;
        }
        if let Some(key) = rest.strip_prefix('_') {
            // Read: unless a level is empty (`__` at the end, or four in a row), which figment skips.
            if key.trim().replace("__", ".").split('.').any(str::is_empty) {
                out.push(format!(
                    "{name} is not read: it names an empty key (`__` separates the levels of a key's \
                     YAML path: {ENV_PREFIX}STORE__SUMMARY_TTL)"
                ));
            }
        } else {
            out.push(format!(
                "{name} is not read: overrides start with {ENV_PREFIX} (two underscores), \
                 e.g. {ENV_PREFIX}{rest}"
            ));
        }
    }
    out
}
