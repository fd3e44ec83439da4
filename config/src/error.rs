//! Configuration problems, each tied to the YAML path it is about.

use std::fmt;

/// One problem in the configuration, e.g. `providers.pbx-hq.bse_url: unknown field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted YAML path (`providers.pbx-hq.timeout`, `auth.keys.crm.providers[1]`).
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
    /// The environment override(s) the offending value came from
    /// (`SUMMARY_GATEWAY__STORE__SUMMARY_TTL`), when it did not come from the file.
    pub env_var: Option<String>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), env_var: None }
    }
}

/// `providers.pbx-hq.bse_url: unknown field`, or for a value set by an environment
/// override, the variable first: `SUMMARY_GATEWAY__STORE__SUMMARY_TTL (store.summary_ttl): ...`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env_var, self.path.is_empty()) {
            (Some(var), true) => write!(f, "{var}: {}", self.message),
            (Some(var), false) => write!(f, "{var} ({}): {}", self.path, self.message),
            (None, true) => f.write_str(&self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one load, in YAML order as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Joins a parent path and a child segment (`a` + `b` → `a.b`).
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_owned() } else { format!("{parent}.{child}") }
}

/// Turns a serde error found while deserializing the value at `prefix` into a
/// `ConfigError` whose path names the offending field.
///
/// serde reports unknown and missing fields at the level of the enclosing map,
/// naming the field only in its message (``unknown field `bse_url`, expected one
/// of ...``); the field is moved into the path so the message reads like a YAML path.
pub(crate) fn from_serde(prefix: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let mut path = prefix.to_owned();
    for segment in err.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => path = format!("{path}[{index}]"),
            serde_path_to_error::Segment::Map { key } => path = join(&path, key),
            serde_path_to_error::Segment::Enum { variant } => path = join(&path, variant),
            serde_path_to_error::Segment::Unknown => path = join(&path, "?"),
        }
    }
    let message = err.inner().to_string();
    for (prefix_text, label) in [("unknown field `", "unknown field"), ("missing field `", "missing field")] {
        if let Some((field, tail)) = message.strip_prefix(prefix_text).and_then(|rest| rest.split_once('`')) {
            let tail = tail.trim_start_matches(',').trim();
            let message = if tail.is_empty() { label.to_owned() } else { format!("{label} ({tail})") };
            // serde_path_to_error already names an unknown key in the path; a missing one it cannot.
            let named = path.rsplit('.').next() == Some(field);
            return ConfigError::new(if named { path } else { join(&path, field) }, message);
        }
    }
    ConfigError::new(path, message)
}

/// Deserializes `value` (the YAML at `prefix`), recording every problem rather
/// than the first: a field that fails is reported, taken out, and the rest tried
/// again, so one typo does not hide the next problem.
pub(crate) fn deserialize_all<T: serde::de::DeserializeOwned>(
    prefix: &str,
    mut value: serde_json::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    // Each round removes one field, so this ends; the bound is only a guard.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(err) => err,
        };
        let error = from_serde(prefix, &err);
        // A field we took out is now "missing": that was already reported.
        let echo = error.message.starts_with("missing field") && removed.iter().any(|r| error.path == join(prefix, r));
        if !echo {
            errors.push(error);
        }
        let first = match err.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => None,
        };
        match (first, value.as_object_mut()) {
            (Some(key), Some(map)) if map.contains_key(&key) => {
                map.remove(&key);
                removed.push(key);
            }
            _ => return None,
        }
    }
    None
}
