//! `type: http`: a vendor described in YAML (API.md, "Declarative providers").
//!
//! Everything is compiled once, when the provider is built: request templates
//! ([`template`]), JSONPaths (the provider's `mappings`, job and error paths),
//! the id pattern, the language and error tables. A problem is reported with its
//! path under the provider, as for the built-in vendors, so `check-config`
//! prints it and exits 2. Per request the adapter renders a template, sends it
//! with the configured authentication ([`oauth`] for client credentials), maps
//! errors by the provider's `errors` table (then the defaults of API.md), and
//! reads the answer with the same section builders the built-in vendors use.

pub mod oauth;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_config::{
    CommonConfig, ContentFormat, HttpConfig, HttpInput, HttpJob, HttpRequestOverride, HttpRequestTemplate, ResolvedAuth,
};
use http::{HeaderName, HeaderValue, Method};
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use self::oauth::ClientCredentials;
use self::template::{BodyTemplate, Escape, Template, Values, Var};
use crate::canonical::{Content, Kind, Section};
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::mapping::{CONTENT_FIELDS, Expr, Mappings, SectionMapping};
use crate::metrics::VendorCodes;
use crate::outbound::{Answer, AnswerBudget, Outbound};
use crate::vendor::{Completed, Input, JobFailure, JobPolicy, Polled, Started, SummaryRequest, Vendor};

/// A declared vendor's codes are its own: the statuses are the label's values.
pub const VENDOR_CODES: VendorCodes = VendorCodes {
    codes: &[],
    statuses: &["200", "400", "401", "403", "404", "408", "409", "422", "429", "500", "502", "503", "504"],
};

/// Longest conversation id without an `id_pattern`.
const MAX_ID_CHARS: usize = 256;

/// A compiled request.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: Template,
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    body: Option<BodyTemplate>,
}

impl Request {
    fn vars(&self) -> Vec<Var> {
        let mut vars: Vec<Var> = self.path.vars().collect();
        vars.extend(self.query.iter().flat_map(|(_, t)| t.vars()));
        vars.extend(self.headers.iter().flat_map(|(_, t)| t.vars()));
        vars.extend(self.body.iter().flat_map(BodyTemplate::vars));
        vars
    }
}

/// How a job is followed, compiled.
struct Job {
    reference: Expr,
    poll: Request,
    status: Expr,
    completed: Vec<String>,
    failed: Vec<String>,
    error_message: Option<Expr>,
    policy: JobPolicy,
}

/// How the vendor's errors are read, compiled.
struct Errors {
    message: Vec<Expr>,
    code: Option<Expr>,
    ok_codes: Vec<String>,
    by_status: BTreeMap<u16, String>,
    by_code: BTreeMap<String, String>,
}

enum Auth {
    None,
    Header(HeaderName, HeaderValue),
    Query(String, String),
    OAuth2(Box<ClientCredentials>),
}

/// A `type: http` provider's adapter.
pub struct Declared {
    out: Outbound,
    base: String,
    input: Input,
    min_text_chars: Option<usize>,
    id_pattern: Option<regex::Regex>,
    kinds: Vec<Kind>,
    languages: Option<BTreeMap<String, String>>,
    default_language: Option<String>,
    /// The kinds whose request sends `{language}`: only they have a language.
    language_kinds: Vec<Kind>,
    /// Per kind: the data fields shown as sections, with their titles.
    data_sections: Vec<(Kind, Vec<(String, String)>)>,
    /// Conversation fields its templates need.
    needs: Vec<Var>,
    requests: Vec<(Kind, Request)>,
    job: Option<Job>,
    format: ContentFormat,
    /// `provider_ref`'s fields, read from the answer.
    provider_ref: Vec<(String, Expr)>,
    mappings: Mappings,
    errors: Errors,
    auth: Auth,
    /// The vendor refused the gateway's credentials (401/403) since its last success.
    rejected: AtomicBool,
}

impl Declared {
    /// Compiles the provider; errors are every problem found, with its path under the provider.
    pub fn new(
        _provider: Arc<str>,
        common: &CommonConfig,
        config: &HttpConfig,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let kinds = compile_kinds(config, &mut errors);
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mappings = Mappings::build_declared(&names, &common.mappings).unwrap_or_else(|e| {
            errors.extend(e);
            Mappings::default()
        });
        for kind in config.requests.keys() {
            if !names.contains(&kind.as_str()) {
                errors.push(format!(
                    "requests.{kind}: `{kind}` is not one of this provider's kinds ({})",
                    names.join(", ")
                ));
            }
        }
        let requests = compile_requests(config, &kinds, &mut errors);
        let job = config.job.as_ref().and_then(|job| compile_job(job, &mut errors));
        let id_pattern = config.id_pattern.as_deref().and_then(|p| {
            regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| errors.push(format!("id_pattern: `{p}` is not a regular expression: {}", one_line(&e))))
                .ok()
        });
        let (languages, default_language) = compile_languages(config, &mut errors);
        let error_table = compile_errors(config, &mut errors);
        let provider_ref: Vec<(String, Expr)> = config
            .provider_ref
            .iter()
            .filter_map(|(field, source)| {
                expr(source, &format!("provider_ref.{field}"), &mut errors).map(|e| (field.clone(), e))
            })
            .collect();
        let out = Outbound::new(common, concat!("summary-gateway/", env!("CARGO_PKG_VERSION")), budget.clone())
            .map_err(|e| errors.push(format!("HTTP client: {e}")))
            .ok();
        let auth = compile_auth(config, &mut errors);
        let base = config.base_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned());
        let mut needs: Vec<Var> = requests.iter().flat_map(|(_, r)| r.vars()).collect();
        needs.sort_by_key(|v| *v as u8);
        needs.dedup();
        let language_kinds: Vec<Kind> =
            requests.iter().filter(|(_, r)| r.vars().contains(&Var::Language)).map(|(k, _)| *k).collect();
        let data_sections = compile_data_sections(config, &kinds, &mappings, &mut errors);
        match (config.input, &config.request) {
            (Some(HttpInput::Text), _)
                if needs.iter().any(|v| matches!(v, Var::Id | Var::Party | Var::ExtensionId)) =>
            {
                errors.push("request: an `input: text` provider's requests can use {conversation.text}, not the id, party or extension".to_owned());
            }
            (Some(HttpInput::Reference), _) if needs.contains(&Var::Text) => {
                errors.push(
                    "request: an `input: reference` provider's requests cannot use {conversation.text}".to_owned(),
                );
            }
            _ => {}
        }
        let (Some(out), Some(base), Some(input), true) = (out, base, config.input, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            out,
            base,
            input: match input {
                HttpInput::Text => Input::Text,
                HttpInput::Reference => Input::Reference,
            },
            min_text_chars: config.min_text_chars,
            id_pattern,
            kinds,
            languages,
            default_language,
            language_kinds,
            data_sections,
            needs,
            requests,
            job,
            format: config.content_format,
            provider_ref,
            mappings,
            errors: error_table,
            auth,
            rejected: AtomicBool::new(false),
        })
    }

    fn request_of(&self, kind: Kind) -> Result<&Request, ProviderError> {
        self.requests
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r)
            .ok_or_else(|| ProviderError::bad_answer(0, "a kind it has no request for"))
    }

    /// The vendor's own value for a canonical tag.
    fn vendor_language(&self, tag: &str) -> String {
        match &self.languages {
            Some(table) => table.get(primary(tag)).cloned().unwrap_or_else(|| tag.to_owned()),
            None => tag.to_owned(),
        }
    }

    /// Sends `request` rendered with `values`: one call with a slot, 408 and 429
    /// retried with backoff inside the deadline (unless the error table maps them),
    /// a refused OAuth token renewed once. The answer is a success (2xx, and an
    /// `ok_codes` code if the table has them) or the mapped error.
    async fn exchange(&self, request: &Request, values: &Values<'_>) -> Result<(Answer, Value), ProviderError> {
        let url = self.url(request, values)?;
        let body = request.body.as_ref().map(|b| b.render(values)).map(|b| serde_json::to_vec(&b)).transpose();
        let body = body.map_err(|_| ProviderError::bad_answer(0, "a request it could not encode"))?;
        let mut headers = http::HeaderMap::new();
        for (name, value) in &request.headers {
            let rendered = value.render(values, Escape::None);
            let value = HeaderValue::try_from(rendered).map_err(|_| ProviderError::Rejected {
                message: format!("the request's `{name}` header would hold characters a header cannot"),
                vendor: VendorDetail::default(),
            })?;
            headers.insert(name.clone(), value);
        }
        if body.is_some() {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let _slot = self.out.slot().await?;
        let deadline = Instant::now() + self.out.timeout();
        let mut retries = 0_u32;
        let mut renewed = false;
        loop {
            let mut builder = self.out.client().request(request.method.clone(), url.clone()).headers(headers.clone());
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let used = match &self.auth {
                Auth::None | Auth::Query(..) => None,
                Auth::Header(name, value) => {
                    builder = builder.header(name.clone(), value.clone());
                    None
                }
                Auth::OAuth2(client) => {
                    let token = client.authorization(&self.out).await.inspect_err(|_| {
                        if client.is_rejected() {
                            self.rejected.store(true, Ordering::Relaxed);
                        }
                    })?;
                    builder = builder.header(http::header::AUTHORIZATION, token.clone());
                    Some(token)
                }
            };
            let answer = self.out.send(builder).await?;
            let status = answer.status;
            if status == 401
                && !renewed
                && let (Auth::OAuth2(client), Some(used)) = (&self.auth, &used)
            {
                // The token may have been revoked before its time: one new one, once.
                client.invalidate(used);
                renewed = true;
                continue;
            }
            if matches!(status, 408 | 429) && !self.errors.by_status.contains_key(&status) {
                let backoff = Duration::from_millis(250 * 4_u64.pow(retries));
                if retries < 2 && Instant::now() + backoff < deadline {
                    retries += 1;
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            return self.classify(answer);
        }
    }

    fn url(&self, request: &Request, values: &Values<'_>) -> Result<Url, ProviderError> {
        let path = request.path.render(values, Escape::PathSegment);
        let sep = if path.starts_with('/') { "" } else { "/" };
        let mut url = Url::parse(&format!("{}{sep}{path}", self.base))
            .map_err(|_| ProviderError::bad_answer(0, "a request URL it could not build"))?;
        if !request.query.is_empty() || matches!(self.auth, Auth::Query(..)) {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &request.query {
                pairs.append_pair(name, &value.render(values, Escape::None));
            }
            if let Auth::Query(name, value) = &self.auth {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// A success, or the error the table (then the defaults) maps the answer to.
    fn classify(&self, answer: Answer) -> Result<(Answer, Value), ProviderError> {
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let code = json.as_ref().and_then(|j| self.errors.code.as_ref().and_then(|c| c.nodes(j).into_iter().next()));
        let code_text = code.and_then(code_text);
        let message = json.as_ref().and_then(|j| {
            self.errors.message.iter().find_map(|m| m.nodes(j).into_iter().find_map(Value::as_str).map(str::to_owned))
        });
        let detail = || VendorDetail::new(Some(answer.status), code.cloned(), message.as_deref());
        let success = (200..300).contains(&answer.status);
        if success {
            let code_ok =
                self.errors.ok_codes.is_empty() || code_text.as_ref().is_none_or(|c| self.errors.ok_codes.contains(c));
            if code_ok {
                self.rejected.store(false, Ordering::Relaxed);
                let json =
                    json.ok_or_else(|| ProviderError::bad_answer(answer.status, "an answer that is not JSON"))?;
                return Ok((answer, json));
            }
        }
        let mapped = code_text
            .as_ref()
            .and_then(|c| self.errors.by_code.get(c))
            .or_else(|| self.errors.by_status.get(&answer.status));
        if let Some(api_code) = mapped {
            return Err(self.error_for(api_code, &answer, detail()));
        }
        Err(match answer.status {
            200..=299 => {
                ProviderError::Rejected { message: "the provider answered with an error".into(), vendor: detail() }
            }
            401 | 403 => {
                self.rejected.store(true, Ordering::Relaxed);
                tracing::warn!(status = answer.status, "the provider refused the gateway's credentials");
                ProviderError::Rejected {
                    message: "the provider refused the gateway's credentials".into(),
                    vendor: detail(),
                }
            }
            404 => {
                ProviderError::NotFound { message: "the provider has no such conversation".into(), vendor: detail() }
            }
            408 => ProviderError::Timeout { after: self.out.timeout() },
            409 => self.error_for("conversation_not_ready", &answer, detail()),
            429 => ProviderError::Overloaded { retry_after: answer.retry_after().unwrap_or(Duration::from_secs(1)) },
            500..=599 => self.error_for("provider_unavailable", &answer, detail()),
            _ => ProviderError::Rejected { message: "the provider answered with an error".into(), vendor: detail() },
        })
    }

    fn error_for(&self, api_code: &str, answer: &Answer, vendor: VendorDetail) -> ProviderError {
        match api_code {
            "not_found" => ProviderError::NotFound { message: "the provider has no such conversation".into(), vendor },
            "conversation_not_ready" => ProviderError::NotReady {
                message: "the provider is still processing this conversation".into(),
                retry_after: answer.retry_after().unwrap_or(Duration::from_secs(30)),
                vendor,
            },
            "provider_unavailable" => ProviderError::Unavailable {
                message: "the provider is unavailable".into(),
                retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
                vendor,
            },
            "overloaded" => {
                ProviderError::Overloaded { retry_after: answer.retry_after().unwrap_or(Duration::from_secs(1)) }
            }
            "provider_timeout" => ProviderError::Timeout { after: self.out.timeout() },
            _ => ProviderError::Rejected { message: "the provider answered with an error".into(), vendor },
        }
    }

    /// The summary of `kind` in a vendor answer: content from the content fields
    /// (or a titled section per data field), `data` from the data fields.
    fn completed(
        &self,
        kind: Kind,
        status: u16,
        root: &Value,
        job_ref: Option<&str>,
    ) -> Result<Completed, ProviderError> {
        let provider_ref = if self.provider_ref.is_empty() {
            job_ref.map(|r| json!({ "ref": r }))
        } else {
            let fields: serde_json::Map<String, Value> = self
                .provider_ref
                .iter()
                .filter_map(|(field, e)| {
                    let nodes = e.nodes(root);
                    let value = if e.is_singular() {
                        nodes.into_iter().find(|v| !v.is_null()).cloned()
                    } else {
                        Some(Value::Array(nodes.into_iter().cloned().collect()))
                    };
                    value.map(|v| (field.clone(), v))
                })
                .collect();
            (!fields.is_empty()).then_some(Value::Object(fields))
        };
        let m = self.mappings.section(kind.as_str());
        let mut sections = Vec::new();
        // Plain prose is kept as paragraphs (as the built-in vendors' prose is);
        // markdown and HTML give titled sections.
        let mut prose = Vec::new();
        if let Some(text) = m.raw_text("text", root).filter(|t| !t.trim().is_empty()) {
            match self.format {
                ContentFormat::Text => {
                    prose.extend(crate::mapping::sections_from_plain(text).into_iter().flat_map(|s| s.items));
                }
                ContentFormat::Markdown => sections.extend(crate::content::markdown::sections_from_markdown(text)),
                ContentFormat::Html => sections.extend(crate::content::html::sections_from_html(text)),
            }
        }
        sections.extend(m.listed_sections(root, None));
        let data = data_fields(m, root);
        if prose.is_empty()
            && sections.is_empty()
            && let Some(Value::Object(fields)) = &data
        {
            match self.data_sections.iter().find(|(k, _)| *k == kind) {
                Some((_, shown)) => sections.extend(shown.iter().filter_map(|(field, title)| {
                    fields.get(field).map(|value| Section { title: Some(title.clone()), items: items_of(value) })
                })),
                None => sections.extend(
                    fields.iter().map(|(name, value)| Section { title: Some(title_of(name)), items: items_of(value) }),
                ),
            }
        }
        let content = Content::from_prose(prose, sections);
        if content.sections.is_empty() && data.is_none() {
            return Err(ProviderError::bad_answer(
                status,
                &format!("an answer the mapping selects nothing from (check mappings.{})", kind.as_str()),
            ));
        }
        Ok(Completed { content, data, participants: Vec::new(), provider_ref, created_at: None, updated_at: None })
    }

    /// Where a job's answer says it is.
    fn job_state(job: &Job, root: &Value) -> JobState {
        let status = job.status.nodes(root).into_iter().find_map(code_text);
        match status {
            Some(s) if job.completed.contains(&s) => JobState::Completed,
            Some(s) if job.failed.contains(&s) => JobState::Failed(s),
            _ => JobState::Pending,
        }
    }
}

enum JobState {
    Pending,
    Completed,
    Failed(String),
}

/// Described in YAML: what it can do is what its config says.
#[async_trait::async_trait]
impl Vendor for Declared {
    fn input(&self) -> Input {
        self.input
    }

    fn vendor_codes(&self) -> &'static VendorCodes {
        &VENDOR_CODES
    }

    fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    fn is_available(&self) -> bool {
        !self.rejected.load(Ordering::Relaxed)
    }

    fn language(&self, kind: Kind, tag: Option<&str>) -> Result<Option<String>, RequestProblem> {
        let canonical = match tag {
            Some(t) => Some(
                crate::language::canonical(t)
                    .ok_or_else(|| RequestProblem::Invalid(format!("language: `{t}` is not a BCP 47 language tag")))?,
            ),
            None => None,
        };
        if let (Some(c), Some(table)) = (&canonical, &self.languages)
            && !table.contains_key(primary(c))
        {
            let known: Vec<&str> = table.keys().map(String::as_str).collect();
            return Err(RequestProblem::UnsupportedLanguage(format!(
                "language: this provider cannot write `{c}`; it writes {}",
                known.join(", ")
            )));
        }
        if !self.language_kinds.contains(&kind) {
            return Ok(None);
        }
        Ok(canonical.or_else(|| self.default_language.clone()))
    }

    fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        let c = &req.conversation;
        match self.input {
            Input::Text => {
                if c.id.is_some() || c.party.is_some() || c.extension_id.is_some() {
                    return Err(RequestProblem::Invalid(
                        "conversation: this provider summarizes text; give conversation.text only".into(),
                    ));
                }
                let Some(text) = &c.text else {
                    return Err(RequestProblem::Invalid("conversation.text: required for this provider".into()));
                };
                let chars = text.trim().chars().count();
                if let Some(min) = self.min_text_chars
                    && chars < min
                {
                    return Err(RequestProblem::TextTooShort(format!(
                        "conversation.text: this provider needs at least {min} characters; this one has {chars}"
                    )));
                }
                if chars == 0 {
                    return Err(RequestProblem::Invalid("conversation.text: must not be empty".into()));
                }
            }
            Input::Reference => {
                if c.text.is_some() {
                    return Err(RequestProblem::Invalid(
                        "conversation.text: this provider takes a reference (`conversation.id`), not text".into(),
                    ));
                }
                let Some(id) = &c.id else {
                    return Err(RequestProblem::Invalid("conversation.id: required for this provider".into()));
                };
                let fits = match &self.id_pattern {
                    Some(pattern) => pattern.is_match(id),
                    None => !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control),
                };
                if !fits {
                    return Err(RequestProblem::Invalid(format!(
                        "conversation.id: `{}` is not an id this provider knows the form of",
                        id.chars().take(64).collect::<String>()
                    )));
                }
                if self.needs.contains(&Var::Party) && c.party.is_none() {
                    return Err(RequestProblem::Invalid("conversation.party: required for this provider".into()));
                }
                if self.needs.contains(&Var::ExtensionId) && c.extension_id.is_none() {
                    return Err(RequestProblem::Invalid(
                        "conversation.extension_id: required for this provider".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn start(&self, req: &SummaryRequest, _callback: Option<&Url>) -> Result<Started, ProviderError> {
        let language = req.language.as_deref().map(|tag| self.vendor_language(tag));
        let values =
            Values { request: Some(req), language: language.as_deref(), kind: req.kind.as_str(), job_ref: None };
        let (answer, root) = self.exchange(self.request_of(req.kind)?, &values).await?;
        let Some(job) = &self.job else {
            return self.completed(req.kind, answer.status, &root, None).map(Started::Done);
        };
        let reference =
            job.reference.nodes(&root).into_iter().find_map(code_text).filter(|r| !r.is_empty()).ok_or_else(|| {
                ProviderError::bad_answer(answer.status, "a start answer without its job reference (check job.ref)")
            })?;
        // A vendor that answers at once with the result: take it.
        if matches!(Self::job_state(job, &root), JobState::Completed)
            && let Ok(done) = self.completed(req.kind, answer.status, &root, Some(&reference))
        {
            return Ok(Started::Done(done));
        }
        Ok(Started::Job(format!("{}:{reference}", req.kind.as_str())))
    }

    fn job_policy(&self) -> Option<&JobPolicy> {
        self.job.as_ref().map(|j| &j.policy)
    }

    async fn poll(&self, job_ref: &str) -> Result<Polled, ProviderError> {
        let job = self.job.as_ref().ok_or_else(|| ProviderError::bad_answer(0, "a poll of a provider without jobs"))?;
        // The kind travels with the vendor's reference: the poll answer is read with its mapping.
        let (kind, reference) = job_ref
            .split_once(':')
            .and_then(|(k, r)| Kind::parse(k).map(|k| (k, r)))
            .ok_or_else(|| ProviderError::bad_answer(0, "a job reference it did not make"))?;
        let values = Values { request: None, language: None, kind: kind.as_str(), job_ref: Some(reference) };
        let (answer, root) = self.exchange(&job.poll, &values).await?;
        match Self::job_state(job, &root) {
            JobState::Pending => Ok(Polled::Pending),
            JobState::Completed => self.completed(kind, answer.status, &root, Some(reference)).map(Polled::Completed),
            JobState::Failed(status) => {
                let message =
                    job.error_message.as_ref().and_then(|e| e.nodes(&root).into_iter().find_map(Value::as_str));
                Ok(Polled::Failed(JobFailure {
                    message: "the provider could not summarize this conversation".into(),
                    vendor: VendorDetail::new(Some(answer.status), Some(Value::String(status)), message),
                }))
            }
        }
    }
}

fn compile_requests(config: &HttpConfig, kinds: &[Kind], errors: &mut Vec<String>) -> Vec<(Kind, Request)> {
    match &config.request {
        Some(base) => {
            let compiled = compile_request(base, "request", false, errors);
            kinds
                .iter()
                .filter_map(|kind| {
                    match config.requests.get(kind.as_str()) {
                        Some(over) => {
                            let path = format!("requests.{}", kind.as_str());
                            compile_request(&merge(base, Some(over)), &path, false, errors)
                        }
                        None => compiled.clone(),
                    }
                    .map(|r| (*kind, r))
                })
                .collect()
        }
        None => Vec::new(),
    }
}

fn compile_job(job: &HttpJob, errors: &mut Vec<String>) -> Option<Job> {
    let reference = expr(&job.reference, "job.ref", errors);
    let status = expr(&job.status, "job.status", errors);
    let error_message = job.error_message.as_deref().and_then(|m| expr(m, "job.error_message", errors));
    let poll = compile_request(&job.poll, "job.poll", true, errors);
    for var in poll.iter().flat_map(Request::vars) {
        if !matches!(var, Var::Ref | Var::Kind) {
            errors.push("job.poll: only {ref} and {kind} are known when a job is polled".to_owned());
            break;
        }
    }
    Some(Job {
        reference: reference?,
        poll: poll?,
        status: status?,
        completed: job.completed.clone(),
        failed: job.failed.clone(),
        error_message,
        policy: JobPolicy {
            poll_interval: job.poll_interval,
            poll_backoff_max: job.poll_backoff_max,
            job_timeout: job.job_timeout,
        },
    })
}

type Languages = (Option<BTreeMap<String, String>>, Option<String>);

fn compile_languages(config: &HttpConfig, errors: &mut Vec<String>) -> Languages {
    let languages = config.languages.as_ref().map(|table| {
        table
            .iter()
            .filter_map(|(tag, value)| match crate::language::canonical(tag) {
                Some(t) if !t.contains('-') => Some((t, value.clone())),
                _ => {
                    errors.push(format!("languages.{tag}: keys are BCP 47 primary language subtags (`en`, `pt`)"));
                    None
                }
            })
            .collect::<BTreeMap<_, _>>()
    });
    let default_language = config.default_language.as_deref().and_then(|tag| {
        let canonical = crate::language::canonical(tag);
        if canonical.is_none() {
            errors.push(format!("default_language: `{tag}` is not a BCP 47 language tag"));
        }
        if let (Some(c), Some(table)) = (&canonical, &languages)
            && !table.contains_key(primary(c))
        {
            errors.push(format!("default_language: `{tag}` is not in `languages`"));
        }
        canonical
    });
    (languages, default_language)
}

fn compile_data_sections(
    config: &HttpConfig,
    kinds: &[Kind],
    mappings: &Mappings,
    errors: &mut Vec<String>,
) -> Vec<(Kind, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for (name, shown) in &config.data_sections {
        let Some(kind) = kinds.iter().copied().find(|k| k.as_str() == name) else {
            errors.push(format!("data_sections.{name}: `{name}` is not one of this provider's kinds"));
            continue;
        };
        let m = mappings.section(name);
        let mut fields = Vec::new();
        for (i, section) in shown.iter().enumerate() {
            if CONTENT_FIELDS.contains(&section.field.as_str()) || !m.has(&section.field) {
                errors.push(format!(
                    "data_sections.{name}[{i}].field: `{}` is not a data field of mappings.{name}",
                    section.field
                ));
                continue;
            }
            fields.push((section.field.clone(), section.title.clone().unwrap_or_else(|| title_of(&section.field))));
        }
        out.push((kind, fields));
    }
    out
}

fn compile_kinds(config: &HttpConfig, errors: &mut Vec<String>) -> Vec<Kind> {
    config
        .kinds
        .iter()
        .filter_map(|k| {
            let kind = Kind::parse(k);
            if kind.is_none() {
                let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                errors.push(format!("kinds: `{k}` is not a kind ({})", all.join(", ")));
            }
            kind
        })
        .collect()
}

fn compile_auth(config: &HttpConfig, errors: &mut Vec<String>) -> Auth {
    match &config.resolved_auth {
        None => Auth::None,
        Some(ResolvedAuth::Bearer(token)) => {
            header_auth("authorization", &format!("Bearer {}", token.expose()), errors)
        }
        Some(ResolvedAuth::Header { name, value }) => header_auth(name, value.expose(), errors),
        Some(ResolvedAuth::Query { name, value }) => Auth::Query(name.clone(), value.expose().clone()),
        Some(ResolvedAuth::OAuth2 { token_url, client_id, client_secret, scope }) => Auth::OAuth2(Box::new(
            ClientCredentials::new(token_url.clone(), client_id.clone(), client_secret.clone(), scope.clone()),
        )),
    }
}

/// `request` with a kind's overrides.
fn merge(base: &HttpRequestTemplate, over: Option<&HttpRequestOverride>) -> HttpRequestTemplate {
    let Some(over) = over else { return base.clone() };
    HttpRequestTemplate {
        method: over.method.clone().unwrap_or_else(|| base.method.clone()),
        path: over.path.clone().unwrap_or_else(|| base.path.clone()),
        query: over.query.clone().unwrap_or_else(|| base.query.clone()),
        headers: over.headers.clone().unwrap_or_else(|| base.headers.clone()),
        body: over.body.clone().or_else(|| base.body.clone()),
    }
}

fn compile_request(t: &HttpRequestTemplate, path: &str, allow_ref: bool, errors: &mut Vec<String>) -> Option<Request> {
    let before = errors.len();
    let method = match t.method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        other => {
            errors.push(format!("{path}.method: `{other}` is not GET, POST, PUT or PATCH"));
            Method::GET
        }
    };
    let mut template = |source: &str, at: String| {
        Template::parse(source, allow_ref).map_err(|e| errors.push(format!("{at}: {e}"))).ok()
    };
    let path_template = template(&t.path, format!("{path}.path"));
    let query: Vec<(String, Template)> =
        t.query.iter().filter_map(|(k, v)| template(v, format!("{path}.query.{k}")).map(|t| (k.clone(), t))).collect();
    let parsed: Vec<(&String, Option<Template>)> =
        t.headers.iter().map(|(name, value)| (name, template(value, format!("{path}.headers.{name}")))).collect();
    let mut headers = Vec::new();
    for (name, parsed) in parsed {
        match HeaderName::try_from(name.as_str()) {
            Ok(header) => headers.extend(parsed.map(|t| (header, t))),
            Err(_) => errors.push(format!("{path}.headers.{name}: not an HTTP header name")),
        }
    }
    let body = t.body.as_ref().map(|b| BodyTemplate::parse(b, &format!("{path}.body"), allow_ref, errors));
    if errors.len() > before {
        return None;
    }
    Some(Request { method, path: path_template?, query, headers, body })
}

fn expr(source: &str, path: &str, errors: &mut Vec<String>) -> Option<Expr> {
    Expr::compile(source)
        .map_err(|e| errors.push(format!("{path}: `{source}` is not a valid JSONPath expression: {e}")))
        .ok()
}

fn compile_errors(config: &HttpConfig, errors: &mut Vec<String>) -> Errors {
    let e = &config.errors;
    Errors {
        message: e
            .message
            .iter()
            .enumerate()
            .filter_map(|(i, m)| expr(m, &format!("errors.message[{i}]"), errors))
            .collect(),
        code: e.code.as_deref().and_then(|c| expr(c, "errors.code", errors)),
        ok_codes: e.ok_codes.iter().filter_map(code_text).collect(),
        by_status: e.by_status.clone(),
        by_code: e.by_code.clone(),
    }
}

fn header_auth(name: &str, value: &str, errors: &mut Vec<String>) -> Auth {
    let header =
        HeaderName::try_from(name).map_err(|_| errors.push(format!("auth.header.name: `{name}` is not a header name")));
    let value = HeaderValue::try_from(value)
        .map_err(|_| errors.push("auth: the secret is not a valid HTTP header value".to_owned()));
    match (header, value) {
        (Ok(header), Ok(mut value)) => {
            value.set_sensitive(true);
            Auth::Header(header, value)
        }
        _ => Auth::None,
    }
}

/// A code or status as text: strings as they are, numbers and booleans written out.
fn code_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The primary language subtag of a canonical tag (`pt` of `pt-BR`).
fn primary(tag: &str) -> &str {
    tag.split('-').next().unwrap_or(tag)
}

/// The data fields of a mapping: a singular JSONPath gives its value, any
/// other the list of what it selects; fields that select nothing are left out.
fn data_fields(m: &SectionMapping, root: &Value) -> Option<Value> {
    let mut data = serde_json::Map::new();
    for (field, expr) in m.fields().filter(|(f, _)| !CONTENT_FIELDS.contains(f)) {
        let nodes = expr.nodes(root);
        if expr.is_singular() {
            if let Some(v) = nodes.into_iter().find(|v| !v.is_null()) {
                data.insert(field.to_owned(), v.clone());
            }
        } else if !nodes.is_empty() || expr.present(root) {
            let values = match nodes.as_slice() {
                [Value::Array(items)] => items.clone(),
                _ => nodes.into_iter().cloned().collect(),
            };
            data.insert(field.to_owned(), Value::Array(values));
        }
    }
    (!data.is_empty()).then_some(Value::Object(data))
}

/// `actions_taken` → `Actions taken`.
fn title_of(field: &str) -> String {
    let words = field.replace('_', " ");
    let mut chars = words.chars();
    chars.next().map(|c| c.to_uppercase().collect::<String>() + chars.as_str()).unwrap_or_default()
}

/// A data value as section items: strings as they are, booleans `Yes`/`No`,
/// objects as their values joined by `: `.
fn items_of(value: &Value) -> Vec<String> {
    fn one(v: &Value) -> Option<String> {
        let text = match v {
            Value::String(s) => crate::content::normalize_whitespace(s),
            Value::Number(n) => n.to_string(),
            Value::Bool(true) => "Yes".to_owned(),
            Value::Bool(false) => "No".to_owned(),
            // `{"type": "PERSON", "value": "Maria Lopez"}` → `PERSON: Maria Lopez`.
            Value::Object(fields) => fields.values().filter_map(one).collect::<Vec<_>>().join(": "),
            Value::Array(_) | Value::Null => String::new(),
        };
        (!text.is_empty()).then_some(text)
    }
    match value {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

fn one_line(e: &regex::Error) -> String {
    crate::content::normalize_whitespace(&e.to_string())
}

#[cfg(test)]
mod tests;
