//! `type: http` — a vendor described in YAML: how to call it, how to read its
//! answer and its errors, and, if it is asynchronous, how to poll it. No rebuild.
//!
//! This module reads and checks the keys; templates, JSONPaths and tables are
//! compiled when the provider is built (`providers::http`), which `check-config`
//! does too, so every problem is reported with its YAML path before the gateway
//! serves.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::{VendorSettings, field_names};
use crate::error::{ConfigError, join};
use crate::schema::{Humantime, required};
use crate::{EnvLookup, Secret, resolve_secret};

/// The API error codes a vendor's status or code may be mapped to (`errors.by_status`, `errors.by_code`).
pub const MAPPABLE_ERROR_CODES: &[&str] = &[
    "not_found",
    "conversation_not_ready",
    "provider_error",
    "provider_unavailable",
    "overloaded",
    "provider_timeout",
];

/// What the vendor takes as the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpInput {
    /// The conversation's text: requests give `conversation.text`.
    Text,
    /// A reference to a conversation the vendor has: requests give `conversation.id`
    /// (and `party`, `extension_id` if the templates use them).
    Reference,
}

/// How the mapped `text` becomes `content.sections`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentFormat {
    /// Plain prose: a paragraph is an item, bulleted lines are items of their own.
    #[default]
    Text,
    /// Markdown: headings and bold leads open titled sections, list items are items.
    Markdown,
    /// HTML: headings open titled sections, list items and paragraphs are items.
    Html,
}

/// A vendor described in YAML (API.md, "Declarative providers"): a summary is one
/// call (`request`, per kind `requests`), or, with `job`, a call that starts a job
/// and polls that are read until a `completed` status. Answers are read with the
/// provider's `mappings` (`<kind>: { <field>: <JSONPath> }`): the content fields
/// (`text`, read as `content_format`; `title`, `items`, `sections`,
/// `sections.title`, `sections.items`) make the sections, any other field is a
/// `data` field. Placeholders in templates: `{conversation.text}`,
/// `{conversation.id}`, `{conversation.party}`, `{conversation.extension_id}`,
/// `{language}`, `{kind}`, and in `job.poll` `{ref}` (`{{` and `}}` are braces).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = required("base_url, input, request"))]
pub struct HttpConfig {
    /// The API's base URL; every template's `path` is appended to it.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// `text`: requests give `conversation.text`; `reference`: `conversation.id`.
    #[serde(default)]
    pub input: Option<HttpInput>,
    /// Text input only: a shorter text (in characters, trimmed) is 422 `text_too_short`, without a call.
    #[serde(default)]
    pub min_text_chars: Option<usize>,
    /// Reference input only: a regular expression `conversation.id` must match
    /// (whole id), else 400 `invalid_request` without a call. Omit: any 1–256
    /// visible characters.
    #[serde(default)]
    pub id_pattern: Option<String>,
    /// The kinds it produces; others are 422 `unsupported_kind` without a call.
    /// Each needs a mapping (`mappings.<kind>`).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
    /// BCP 47 primary subtag → the vendor's own value for `{language}`
    /// (`{ en: english }`); a tag whose subtag is not listed is 422
    /// `unsupported_language`. Omit: `{language}` is the tag as given (canonical case).
    #[serde(default)]
    pub languages: Option<BTreeMap<String, String>>,
    /// BCP 47 tag used when a request gives no `language`. Only kinds whose
    /// request uses `{language}` have a language: for the others it is not sent
    /// and not part of a request's identity (the resource's `language` is null).
    #[serde(default)]
    pub default_language: Option<String>,
    /// How the gateway authenticates to the vendor: exactly one of `bearer_env`
    /// (or `bearer`), `header`, `query`, `oauth2`. Omit: no authentication.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// The call that gets (or, with `job`, starts) a summary.
    #[serde(default)]
    pub request: Option<HttpRequestTemplate>,
    /// Per kind: keys that override `request`'s (`details: { path: ... }`).
    #[serde(default)]
    pub requests: BTreeMap<String, HttpRequestOverride>,
    /// Present: the vendor is asynchronous. The start answer names a job, which
    /// the gateway polls (as for `commbox`) until its status is `completed` or `failed`.
    #[serde(default)]
    pub job: Option<HttpJob>,
    /// `provider_ref` of a completed summary: field → JSONPath into the answer it
    /// is read from (`{ action_id: "$.action_id" }`). Omit: `{ ref: <the job's
    /// reference> }` for jobs, none for synchronous answers.
    #[serde(default)]
    pub provider_ref: BTreeMap<String, String>,
    /// How the mapped `text` field becomes sections.
    #[serde(default)]
    pub content_format: ContentFormat,
    /// Per kind whose mapping has no content fields: which data fields become
    /// titled sections of `content`, in this order, and their titles
    /// (`details: [{ field: reasons, title: Reasons for contact }, ...]`). Omit: a
    /// section per data field, in name order, titled by its name (`actions_taken`
    /// → `Actions taken`).
    #[serde(default)]
    pub data_sections: BTreeMap<String, Vec<HttpDataSection>>,
    /// How to read the vendor's errors.
    #[serde(default)]
    pub errors: HttpErrors,
    /// Resolved credentials.
    #[serde(skip)]
    pub resolved_auth: Option<ResolvedAuth>,
}

fn default_kinds() -> Vec<String> {
    vec!["summary".to_owned()]
}

/// A data field shown as a section of `content`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDataSection {
    /// The data field (a key of `mappings.<kind>`).
    pub field: String,
    /// The section's title. Omit: the field's name (`actions_taken` → `Actions taken`).
    #[serde(default)]
    pub title: Option<String>,
}

/// One request: method, path (after `base_url`), query, headers and JSON body, with placeholders.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestTemplate {
    /// `GET`, `POST`, `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Appended to `base_url`; placeholders are percent-encoded.
    pub path: String,
    /// Query parameters; placeholders are percent-encoded.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers (a value that renders to a character not allowed in a header is refused).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; a string that is exactly one placeholder takes the value's JSON type. Omit: no body.
    #[serde(default)]
    pub body: Option<Value>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// Keys of a kind's request that differ from `request`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestOverride {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub body: Option<Value>,
}

/// How an asynchronous vendor's job is followed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpJob {
    /// JSONPath into the start answer: the vendor's job reference (`{ref}` in `poll`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The poll request (`{ref}` is the job's reference).
    pub poll: HttpRequestTemplate,
    /// JSONPath into a poll (or start) answer: the job's status.
    pub status: String,
    /// Status values of a job still running (a status listed nowhere counts as pending too).
    #[serde(default)]
    pub pending: Vec<String>,
    /// Status values of a finished job: the answer is then the summary, read by `mappings`.
    pub completed: Vec<String>,
    /// Status values of a job the vendor gave up on: the summary fails (`provider_failed`).
    #[serde(default)]
    pub failed: Vec<String>,
    /// JSONPath into a failed poll answer: the vendor's reason.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Mean time between two polls; each wait is drawn from [2/3, 5/3] of it.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub poll_interval: Duration,
    /// Longest wait between polls while the vendor keeps failing (exponential backoff up to it).
    #[serde(default = "default_poll_backoff_max", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub poll_backoff_max: Duration,
    /// A job still pending this long after it started fails with `provider_timeout`.
    #[serde(default = "default_job_timeout", with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub job_timeout: Duration,
}

const fn default_poll_interval() -> Duration {
    Duration::from_secs(3)
}

const fn default_poll_backoff_max() -> Duration {
    Duration::from_secs(60)
}

const fn default_job_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// How to read a vendor's errors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpErrors {
    /// JSONPaths tried in order: the first that selects a string is the vendor's message.
    pub message: Vec<String>,
    /// JSONPath: the vendor's own error code (`provider_code`).
    pub code: Option<String>,
    /// With `code`: the codes of a successful answer; a 2xx answer whose code is
    /// present and not listed is an error (vendors that carry errors in 200 bodies).
    pub ok_codes: Vec<Value>,
    /// HTTP status → API error code (`not_found`, `conversation_not_ready`,
    /// `provider_error`, `provider_unavailable`, `overloaded`, `provider_timeout`).
    /// Unlisted: 400/422 → `provider_error`; 401/403 → `provider_error` and
    /// `credentials_rejected`; 404 → `not_found`; 408, 429 → retried within
    /// `timeout`, then `provider_timeout` / `overloaded`; 409 →
    /// `conversation_not_ready`; other 5xx → `provider_unavailable`.
    pub by_status: BTreeMap<u16, String>,
    /// The vendor's code (as text) → API error code; before `by_status`.
    pub by_code: BTreeMap<String, String>,
}

impl Default for HttpErrors {
    fn default() -> Self {
        Self {
            message: ["$.error", "$.message", "$.description"].map(str::to_owned).to_vec(),
            code: None,
            ok_codes: Vec::new(),
            by_status: BTreeMap::new(),
            by_code: BTreeMap::new(),
        }
    }
}

/// How the gateway authenticates to the vendor: exactly one form.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// Name of an environment variable holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// The bearer token inline (instead of `bearer_env`). For local use only.
    #[serde(default)]
    pub bearer: Option<Secret<String>>,
    /// A header of the vendor's own (`{ name: X-API-Token, value_env: ... }`).
    #[serde(default)]
    pub header: Option<HttpNamedSecret>,
    /// A query parameter (`{ name: api_key, value_env: ... }`).
    #[serde(default)]
    pub query: Option<HttpNamedSecret>,
    /// OAuth 2.0 client credentials (RFC 6749 §4.4): one token for every request,
    /// renewed before its `expires_in`, one renewal at a time.
    #[serde(default)]
    pub oauth2: Option<HttpOAuth2>,
}

/// A secret sent under a name of the vendor's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpNamedSecret {
    /// The header or query parameter name.
    pub name: String,
    /// Name of an environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// The value inline (instead of `value_env`). For local use only.
    #[serde(default)]
    pub value: Option<Secret<String>>,
}

/// OAuth 2.0 client credentials.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpOAuth2 {
    /// The token endpoint (`https://id.acme.example/oauth/token`).
    pub token_url: Url,
    /// Name of an environment variable holding the client id.
    #[serde(default)]
    pub client_id_env: Option<String>,
    /// The client id inline (instead of `client_id_env`).
    #[serde(default)]
    pub client_id: Option<Secret<String>>,
    /// Name of an environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The client secret inline (instead of `client_secret_env`). For local use only.
    #[serde(default)]
    pub client_secret: Option<Secret<String>>,
    /// The scope to ask for (space-separated). Omit: the endpoint's default.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The credentials of a provider, read from the environment or inline.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedAuth {
    Bearer(Secret<String>),
    Header { name: String, value: Secret<String> },
    Query { name: String, value: Secret<String> },
    OAuth2 { token_url: Url, client_id: Secret<String>, client_secret: Secret<String>, scope: Option<String> },
}

impl VendorSettings for HttpConfig {
    const TYPE: &'static str = "http";
    const DEF: &'static str = "HttpProvider";

    fn nested_field_orders() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("HttpAuth", field_names::<HttpAuth>()),
            ("HttpNamedSecret", field_names::<HttpNamedSecret>()),
            ("HttpOAuth2", field_names::<HttpOAuth2>()),
            ("HttpRequestTemplate", field_names::<HttpRequestTemplate>()),
            ("HttpRequestOverride", field_names::<HttpRequestOverride>()),
            ("HttpJob", field_names::<HttpJob>()),
            ("HttpErrors", field_names::<HttpErrors>()),
            ("HttpDataSection", field_names::<HttpDataSection>()),
        ]
    }

    fn resolve(&mut self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        match &self.base_url {
            Some(url) => super::check_base_url(path, url, errors),
            None => errors.push(ConfigError::new(join(path, "base_url"), "missing field")),
        }
        match self.input {
            None => errors.push(ConfigError::new(join(path, "input"), "missing field (`text` or `reference`)")),
            Some(HttpInput::Text) if self.id_pattern.is_some() => {
                errors.push(ConfigError::new(join(path, "id_pattern"), "only for `input: reference`"));
            }
            Some(HttpInput::Reference) if self.min_text_chars.is_some() => {
                errors.push(ConfigError::new(join(path, "min_text_chars"), "only for `input: text`"));
            }
            Some(_) => {}
        }
        if self.request.is_none() {
            errors.push(ConfigError::new(join(path, "request"), "missing field (the call that gets a summary)"));
        }
        if self.kinds.is_empty() {
            errors.push(ConfigError::new(join(path, "kinds"), "must list at least one kind"));
        }
        if let Some(job) = &self.job {
            let job_path = join(path, "job");
            if job.completed.is_empty() {
                errors.push(ConfigError::new(
                    join(&job_path, "completed"),
                    "must list at least one status value of a finished job",
                ));
            }
            if job.poll_interval < Duration::from_millis(10) {
                errors.push(ConfigError::new(join(&job_path, "poll_interval"), "must be at least 10ms"));
            }
            if job.poll_backoff_max < job.poll_interval {
                errors.push(ConfigError::new(join(&job_path, "poll_backoff_max"), "must be at least poll_interval"));
            }
            if job.job_timeout.is_zero() {
                errors.push(ConfigError::new(join(&job_path, "job_timeout"), "must be longer than 0s"));
            }
        }
        let errors_path = join(path, "errors");
        for (status, code) in &self.errors.by_status {
            if !(100..=599).contains(status) {
                errors.push(ConfigError::new(
                    join(&join(&errors_path, "by_status"), &status.to_string()),
                    "is not an HTTP status (100-599)",
                ));
            }
            check_error_code(&join(&join(&errors_path, "by_status"), &status.to_string()), code, errors);
        }
        for (vendor_code, code) in &self.errors.by_code {
            check_error_code(&join(&join(&errors_path, "by_code"), vendor_code), code, errors);
        }
        if !self.errors.ok_codes.is_empty() && self.errors.code.is_none() {
            errors.push(ConfigError::new(join(&errors_path, "ok_codes"), "needs `errors.code` (where the code is)"));
        }
        if !self.errors.by_code.is_empty() && self.errors.code.is_none() {
            errors.push(ConfigError::new(join(&errors_path, "by_code"), "needs `errors.code` (where the code is)"));
        }
        self.resolved_auth = self.auth.as_ref().and_then(|auth| auth.resolve(&join(path, "auth"), env, errors));
    }
}

fn check_error_code(path: &str, code: &str, errors: &mut Vec<ConfigError>) {
    if !MAPPABLE_ERROR_CODES.contains(&code) {
        errors.push(ConfigError::new(
            path,
            format!("`{code}` is not an API error code a vendor error maps to ({})", MAPPABLE_ERROR_CODES.join(", ")),
        ));
    }
}

impl HttpAuth {
    fn resolve(&self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) -> Option<ResolvedAuth> {
        let given: Vec<&str> = [
            (self.bearer_env.is_some() || self.bearer.is_some()).then_some("bearer_env"),
            self.header.is_some().then_some("header"),
            self.query.is_some().then_some("query"),
            self.oauth2.is_some().then_some("oauth2"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() { "none".to_owned() } else { given.join(", ") };
            errors.push(ConfigError::new(
                path,
                format!("give exactly one of bearer_env (or bearer), header, query, oauth2; found {found}"),
            ));
            return None;
        }
        if self.bearer_env.is_some() || self.bearer.is_some() {
            return resolve_secret(path, "bearer", self.bearer.as_ref(), self.bearer_env.as_deref(), env, errors)
                .map(ResolvedAuth::Bearer);
        }
        if let Some(header) = &self.header {
            let path = join(path, "header");
            if http_token(&header.name).is_none() {
                errors.push(ConfigError::new(join(&path, "name"), "is not an HTTP header name"));
            }
            return header
                .resolve(&path, env, errors)
                .map(|value| ResolvedAuth::Header { name: header.name.clone(), value });
        }
        if let Some(query) = &self.query {
            let path = join(path, "query");
            if query.name.is_empty() {
                errors.push(ConfigError::new(join(&path, "name"), "must not be empty"));
            }
            return query
                .resolve(&path, env, errors)
                .map(|value| ResolvedAuth::Query { name: query.name.clone(), value });
        }
        let oauth = self.oauth2.as_ref()?;
        let path = join(path, "oauth2");
        if !matches!(oauth.token_url.scheme(), "http" | "https") || oauth.token_url.host().is_none() {
            errors.push(ConfigError::new(join(&path, "token_url"), "must be an http:// or https:// URL with a host"));
        }
        let id =
            resolve_secret(&path, "client_id", oauth.client_id.as_ref(), oauth.client_id_env.as_deref(), env, errors);
        let secret = resolve_secret(
            &path,
            "client_secret",
            oauth.client_secret.as_ref(),
            oauth.client_secret_env.as_deref(),
            env,
            errors,
        );
        if oauth.client_id.is_none() && oauth.client_id_env.is_none() {
            errors.push(ConfigError::new(join(&path, "client_id_env"), "missing field (or client_id inline)"));
        }
        if oauth.client_secret.is_none() && oauth.client_secret_env.is_none() {
            errors.push(ConfigError::new(join(&path, "client_secret_env"), "missing field (or client_secret inline)"));
        }
        Some(ResolvedAuth::OAuth2 {
            token_url: oauth.token_url.clone(),
            client_id: id?,
            client_secret: secret?,
            scope: oauth.scope.clone(),
        })
    }
}

impl HttpNamedSecret {
    fn resolve(&self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>) -> Option<Secret<String>> {
        if self.value.is_none() && self.value_env.is_none() {
            errors.push(ConfigError::new(join(path, "value_env"), "missing field (or value inline)"));
            return None;
        }
        resolve_secret(path, "value", self.value.as_ref(), self.value_env.as_deref(), env, errors)
    }
}

/// `name` if it is an HTTP token (RFC 9110 §5.6.2): what a header name may be.
fn http_token(name: &str) -> Option<&str> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(name)
}
