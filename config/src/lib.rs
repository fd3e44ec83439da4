//! Typed configuration of summary-gateway.
//!
//! YAML first, then `SUMMARY_GATEWAY__SECTION__KEY` environment overrides
//! (figment; a double underscore nests). Every struct denies unknown fields,
//! durations are humantime strings (`3s`, `12h`), and secrets come from
//! environment variables named by `*_env` fields (or inline, for local use) and
//! are held in [`Secret`], which never prints.
//!
//! Loading never stops at the first problem: [`Config::load`] returns every
//! problem it can find, each with its YAML path
//! (`providers.pbx-hq.bse_url: unknown field`), which is what
//! `summary-gateway check-config` prints.
//!
//! Every key, with its type, default and meaning, is in the configuration reference
//! [`docs/configuration.md`](../docs/configuration.md). It is generated from these
//! types — their `///` comments and their `Default`s — by [`reference_markdown`], next
//! to the JSON Schema [`json_schema`] (`docs/config.schema.json`, for editors), and
//! the tests keep both in step with the code: after changing a config type, run
//! `UPDATE_CONFIG_DOCS=1 cargo test -p providers` (the crate with the registry of
//! vendor types, which this one is given: [`VendorType`]) and commit the result.
//!
//! Layout:
//! - [`server`], [`store`], [`webhooks`], [`telemetry`], [`auth`], [`providers`]: one module per YAML section;
//!   `providers` also has [`VendorSettings`] / [`VendorType`], what a vendor type is to the loader.
//! - [`secret`]: the `Secret<T>` wrapper.
//! - `overrides`: the `SUMMARY_GATEWAY__...` environment overrides, told apart from
//!   the file in errors; [`override_warnings`] for variables that look like one but are not read.
//! - `schema`, `reference`: the JSON Schema of the file and the Markdown reference rendered from it.
//! - [`error`]: `ConfigError` (path + message) and `ConfigErrors`.

pub mod auth;
pub mod error;
mod overrides;
pub mod providers;
mod reference;
mod schema;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Yaml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::auth::{AuthConfig, Credential, KeyConfig, KeyEntry, ProviderQuota, Quota, QuotaPeriod, RateLimit};
pub use crate::error::{ConfigError, ConfigErrors};
use crate::error::{deserialize_all, join};
pub use crate::providers::{
    CircuitBreakerConfig, CommonConfig, CommonDefault, ContentFormat, HttpAuth, HttpConfig, HttpDataSection,
    HttpErrors, HttpInput, HttpJob, HttpNamedSecret, HttpOAuth2, HttpRequestOverride, HttpRequestTemplate,
    MAPPABLE_ERROR_CODES, ProviderConfig, ResolvedAuth, VendorConfig, VendorOf, VendorSettings, VendorType,
    field_names,
};
pub use crate::reference::reference_markdown;
pub use crate::schema::json_schema;
pub use crate::secret::Secret;
pub use crate::server::ServerConfig;
pub use crate::store::{ClusterConfig, ClusterSeeds, SentinelConfig, StoreConfig, StoreTlsConfig, cluster_url};
pub use crate::telemetry::TelemetryConfig;
pub use crate::webhooks::WebhooksConfig;

/// Prefix of environment overrides: `SUMMARY_GATEWAY__STORE__SUMMARY_TTL=1h`.
pub const ENV_PREFIX: &str = "SUMMARY_GATEWAY__";

/// How `*_env` names are looked up (the process environment, or a map in tests).
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The whole configuration, validated and with secrets resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub webhooks: WebhooksConfig,
    pub telemetry: TelemetryConfig,
    pub auth: AuthConfig,
    /// Provider name → provider.
    pub providers: BTreeMap<String, ProviderConfig>,
}

const SECTIONS: &[&str] = &["server", "store", "webhooks", "telemetry", "auth", "providers"];

impl Config {
    /// Loads a YAML file, applies `SUMMARY_GATEWAY__...` overrides from the
    /// environment and resolves `*_env` secrets from the environment.
    ///
    /// A problem in a value an override set names the variable; an override that
    /// would add a provider or caller the file does not have is an error.
    ///
    /// `vendors` are the provider `type`s this build knows (the providers crate's
    /// registry), here and in every loader below.
    pub fn load(vendors: &[&dyn VendorType], path: &Path) -> Result<Self, ConfigErrors> {
        overrides::load(vendors, Figment::from(Yaml::file_exact(path)), &process_env)
    }

    /// Parses YAML text, then applies `SUMMARY_GATEWAY__...` overrides from the
    /// environment and resolves `*_env` secrets from it, as [`Config::load`] does
    /// for a file (the demo's built-in configuration).
    pub fn from_yaml_with_env_overrides(vendors: &[&dyn VendorType], yaml: &str) -> Result<Self, ConfigErrors> {
        overrides::load(vendors, Figment::from(Yaml::string(yaml)), &process_env)
    }

    /// As [`Config::from_yaml_with_env_overrides`], then `set`: `(dotted key, value)`
    /// pairs from the command line (`("store.redis_url", url)`), which win over the
    /// environment and are checked as the file's values are.
    pub fn from_yaml_with_env_overrides_and(
        vendors: &[&dyn VendorType],
        yaml: &str,
        set: &[(&str, &str)],
    ) -> Result<Self, ConfigErrors> {
        let flags = set.iter().fold(Figment::new(), |flags, (key, value)| {
            flags.merge(figment::providers::Serialized::default(key, value))
        });
        overrides::load_with(vendors, Figment::from(Yaml::string(yaml)), flags, &process_env)
    }

    /// Parses YAML text alone (no environment overrides); `*_env` secrets are
    /// looked up with `env`.
    pub fn from_yaml(vendors: &[&dyn VendorType], yaml: &str, env: &EnvLookup) -> Result<Self, ConfigErrors> {
        let value: Value = Figment::from(Yaml::string(yaml)).extract().map_err(figment_errors)?;
        Self::from_value(vendors, value, env)
    }

    /// A short fingerprint of the effective configuration (12 hex digits, the
    /// first 48 bits of a SHA-256): equal on every replica running the same
    /// configuration, different when anything in it differs, inline secrets
    /// included (by a digest, never their value). Secrets read from the
    /// environment (`*_env`) count by the variable's name: a process's
    /// environment does not change while it runs.
    pub fn fingerprint(&self) -> String {
        match secret::digest_of(self) {
            Ok(digest) => hex::encode(&digest[..6]),
            // Serializing a loaded configuration does not fail; should it, every
            // reload looks like a change, which is safe.
            Err(_) => "000000000000".to_owned(),
        }
    }

    /// The configuration as YAML that loads back as the same configuration: defaults
    /// written out, secrets named by their `*_env` keys as they are, inline ones as
    /// `'*****'` (to be written again before loading).
    /// Keys that are not set are left out (they load back as not set).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut tree = serde_yaml::to_value(self)?;
        drop_unset(&mut tree);
        serde_yaml::to_string(&tree)
    }

    /// Builds the configuration from an already merged tree.
    pub fn from_value(vendors: &[&dyn VendorType], value: Value, env: &EnvLookup) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut root = match value {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            _ => {
                return Err(ConfigErrors(vec![ConfigError::new("", "the configuration must be a YAML map")]));
            }
        };
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                errors.push(ConfigError::new(
                    key.clone(),
                    format!("unknown field (expected one of: {})", SECTIONS.join(", ")),
                ));
            }
        }
        let mut config = Self {
            server: section(&mut root, "server", &mut errors),
            store: section(&mut root, "store", &mut errors),
            webhooks: section(&mut root, "webhooks", &mut errors),
            telemetry: section(&mut root, "telemetry", &mut errors),
            ..Self::default()
        };
        config.store.resolve(env, &mut errors);

        // Names as written, so a key's scope is checked even against a provider that failed to parse.
        let mut provider_names: Vec<String> = Vec::new();
        match root.remove("providers") {
            Some(Value::Object(providers)) => {
                provider_names.extend(providers.keys().cloned());
                for (name, value) in providers {
                    if let Some(p) = providers::parse_provider(vendors, &name, value, env, &mut errors) {
                        config.providers.insert(name, p);
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => errors.push(ConfigError::new("providers", "must be a map of provider name → provider")),
        }
        if config.providers.is_empty() && !errors.iter().any(|e| e.path.starts_with("providers")) {
            errors.push(ConfigError::new("providers", "at least one provider is required"));
        }

        let provider_names: Vec<&str> = provider_names.iter().map(String::as_str).collect();
        match root.remove("auth") {
            Some(Value::Object(mut auth)) => {
                for key in auth.keys() {
                    if key != "keys" {
                        errors.push(ConfigError::new(join("auth", key), "unknown field (expected: keys)"));
                    }
                }
                match auth.remove("keys") {
                    Some(Value::Object(keys)) => {
                        for (name, value) in keys {
                            let path = format!("auth.keys.{name}");
                            if let Some(mut key) = deserialize_all::<KeyConfig>(&path, value, &mut errors) {
                                key.resolve(&path, &provider_names, env, &mut errors);
                                config.auth.keys.insert(name, key);
                            }
                        }
                    }
                    None | Some(Value::Null) => {}
                    Some(_) => errors.push(ConfigError::new("auth.keys", "must be a map of caller name → key")),
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => errors.push(ConfigError::new("auth", "must be a map")),
        }
        if config.auth.keys.is_empty() && !errors.iter().any(|e| e.path.starts_with("auth")) {
            errors.push(ConfigError::new("auth.keys", "at least one key is required"));
        }

        config.validate(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// Rules that span fields or sections.
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let s = &self.server;
        if s.max_body_bytes == 0 {
            errors.push(ConfigError::new("server.max_body_bytes", "must be at least 1"));
        }
        for (key, value) in [
            ("request_timeout", s.request_timeout),
            ("header_read_timeout", s.header_read_timeout),
            ("idle_timeout", s.idle_timeout),
            ("body_read_timeout", s.body_read_timeout),
        ] {
            if value.is_zero() {
                errors.push(ConfigError::new(format!("server.{key}"), "must be longer than 0s"));
            }
        }
        if s.max_connections == Some(0) {
            errors.push(ConfigError::new("server.max_connections", "must be at least 1"));
        }
        if let Some(url) = &s.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            {
                errors.push(ConfigError::new("server.public_url", "must be an http:// or https:// URL"));
            }
        }
        self.webhooks.validate(errors);
        self.store.validate(errors);
        self.telemetry.validate(errors);
        let mut seen: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        for (name, key) in &self.auth.keys {
            // Unresolved keys are missing here: already reported.
            for credential in &key.credentials {
                if let Some(other) = seen.insert(credential.sha256, name)
                    && other != name
                {
                    errors
                        .push(ConfigError::new(format!("auth.keys.{name}"), format!("same key as auth.keys.{other}")));
                }
            }
        }
    }
}

/// Warnings about variables of the process environment that look like overrides
/// but are not read (`SUMMARY_GATEWAY_SERVER__LISTEN`: one underscore), for
/// `serve` and `check-config` to print.
pub fn override_warnings() -> Vec<String> {
    overrides::warnings(std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()))
}

/// figment's errors (YAML syntax, a file that cannot be read), each with its source.
pub(crate) fn figment_errors(errors: figment::Error) -> ConfigErrors {
    ConfigErrors(
        errors
            .into_iter()
            .map(|e| {
                let path = e.path.join(".");
                let message = e.kind.to_string();
                let source = e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(ToString::to_string);
                ConfigError::new(path, source.map_or_else(|| message.clone(), |s| format!("{message} (in {s})")))
            })
            .collect(),
    )
}

/// Removes the `null`s of keys that are not set, at every level.
fn drop_unset(tree: &mut serde_yaml::Value) {
    match tree {
        serde_yaml::Value::Mapping(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_unset);
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(drop_unset),
        _ => {}
    }
}

/// Deserializes one optional section, recording its problem if it has one.
fn section<T: DeserializeOwned + Default>(
    root: &mut serde_json::Map<String, Value>,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> T {
    match root.remove(name) {
        None | Some(Value::Null) => T::default(),
        Some(value) => deserialize_all(name, value, errors).unwrap_or_default(),
    }
}

/// Looks names up in the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Resolves a secret given inline (`field`) or by environment variable (`field_env`).
pub(crate) fn resolve_secret(
    path: &str,
    field: &str,
    inline: Option<&Secret<String>>,
    env_name: Option<&str>,
    env: &EnvLookup,
    errors: &mut Vec<ConfigError>,
) -> Option<Secret<String>> {
    match (inline, env_name) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(join(path, field), format!("give either {field} or {field}_env, not both")));
            None
        }
        (Some(value), None) => Some(value.clone()),
        (None, Some(var)) => match env(var) {
            Some(value) if !value.is_empty() => Some(Secret::new(value)),
            Some(_) => {
                errors.push(ConfigError::new(
                    format!("{}_env", join(path, field)),
                    format!("environment variable {var} is empty"),
                ));
                None
            }
            None => {
                errors.push(ConfigError::new(
                    format!("{}_env", join(path, field)),
                    format!("environment variable {var} is not set"),
                ));
                None
            }
        },
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests;
