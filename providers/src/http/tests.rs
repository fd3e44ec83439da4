//! Unit tests of `type: http`: providers built from YAML as the gateway builds
//! them, against a scripted vendor on 127.0.0.1 ([`Stub`]: what it received, what
//! it answers) or the ElevateAI simulator with its OAuth 2.0 token endpoint.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gateway_config::{Config, HttpConfig};
use tokio::net::TcpListener;

use super::*;
use crate::canonical::{Conversation, Party};
use crate::elevateai::simulator::{BILLING_CALL, ElevateAiSimulator, OAuthOptions, RunningSimulator, SimOptions};

/// What the scripted vendor received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// An answer of the scripted vendor.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: &Value) -> Reply {
    Reply { status, headers: Vec::new(), body: body.to_string() }
}

impl Reply {
    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Where the stub's token endpoint is.
const STUB_TOKEN_PATH: &str = "/oauth/token";

#[derive(Debug)]
struct Script {
    /// Vendor requests (not token requests), in order.
    seen: Vec<Seen>,
    /// Token requests, in order.
    token_requests: Vec<Seen>,
    /// The next vendor answers; then `fallback`.
    replies: VecDeque<Reply>,
    fallback: Reply,
    /// What the token endpoint answers instead of a new token `t<n>`.
    token_reply: Option<Reply>,
}

/// A vendor on 127.0.0.1: records each request and answers the next scripted
/// reply; `POST /oauth/token` hands out tokens `t1`, `t2`, ... living an hour.
#[derive(Clone)]
struct Stub {
    script: Arc<Mutex<Script>>,
    url: String,
}

impl Stub {
    async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script {
            seen: Vec::new(),
            token_requests: Vec::new(),
            replies: VecDeque::new(),
            fallback: reply(200, &json!({"answer": "The customer asked about an invoice. The agent answered."})),
            token_reply: None,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(stub_answer).with_state(Arc::clone(&script));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { script, url }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    /// The next vendor answer (after those already queued).
    fn then(&self, reply: Reply) {
        self.script().replies.push_back(reply);
    }

    /// Every vendor answer once the queued ones are given.
    fn always(&self, reply: Reply) {
        self.script().fallback = reply;
    }

    fn seen(&self) -> Vec<Seen> {
        self.script().seen.clone()
    }

    fn calls(&self) -> usize {
        self.script().seen.len()
    }

    fn token_requests(&self) -> Vec<Seen> {
        self.script().token_requests.clone()
    }
}

async fn stub_answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen { method, path: uri.path().to_owned(), query: uri.query().map(str::to_owned), headers, body };
    let reply = {
        let mut script = script.lock().unwrap();
        if seen.path == STUB_TOKEN_PATH {
            script.token_requests.push(seen);
            let n = script.token_requests.len();
            script.token_reply.clone().unwrap_or_else(|| {
                reply(200, &json!({"access_token": format!("t{n}"), "token_type": "Bearer", "expires_in": 3600}))
            })
        } else {
            script.seen.push(seen);
            let next = script.replies.pop_front();
            next.unwrap_or_else(|| script.fallback.clone())
        }
    };
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, HeaderValue::try_from(value).unwrap());
    }
    response
}

/// The provider keys (YAML, unindented) of `p`, a `type: http` provider at `url`.
fn config(url: &str, keys: &str) -> (gateway_config::CommonConfig, HttpConfig) {
    let keys: String = keys.lines().filter(|l| !l.trim().is_empty()).flat_map(|l| ["    ", l, "\n"]).collect();
    let yaml = format!(
        "auth: {{ keys: {{ t: {{ key: k }} }} }}\nproviders:\n  p:\n    type: http\n    base_url: {url}\n    timeout: 3s\n{keys}"
    );
    let config =
        Config::from_yaml(&crate::registry::config_types(), &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let p = &config.providers["p"];
    let Some(http) = p.vendor.settings::<HttpConfig>() else { panic!("not type: http") };
    (p.common.clone(), http.clone())
}

fn declared(url: &str, keys: &str) -> Declared {
    declared_or_errors(url, keys).unwrap_or_else(|e| panic!("{e:?}"))
}

fn declared_or_errors(url: &str, keys: &str) -> Result<Declared, Vec<String>> {
    let (common, http) = config(url, keys);
    Declared::new(Arc::from("p"), &common, &http, &AnswerBudget::default())
}

/// A reference provider reading `$.answer` of `GET /v1/items/{id}`, with `extra` keys.
fn reference(url: &str, extra: &str) -> Declared {
    declared(
        url,
        &format!(
            "input: reference\nrequest: {{ path: \"/v1/items/{{conversation.id}}\" }}\nmappings: {{ summary: {{ text: \"$.answer\" }} }}\n{extra}"
        ),
    )
}

fn by_id(id: &str) -> SummaryRequest {
    SummaryRequest {
        kind: Kind::Summary,
        language: None,
        conversation: Conversation { id: Some(id.into()), ..Conversation::default() },
    }
}

fn by_text(text: &str, language: Option<&str>) -> SummaryRequest {
    SummaryRequest {
        kind: Kind::Summary,
        language: language.map(str::to_owned),
        conversation: Conversation { text: Some(text.into()), ..Conversation::default() },
    }
}

/// A synchronous provider's result.
async fn summary(p: &Declared, req: &SummaryRequest) -> Result<Completed, ProviderError> {
    match p.start(req, None).await? {
        Started::Done(done) => Ok(done),
        Started::Job(job) => panic!("a job {job} from a provider without `job`"),
    }
}

fn vendor_of(e: &ProviderError) -> (Option<u16>, Option<Value>, Option<String>) {
    let v = e.vendor().cloned().unwrap_or_default();
    (v.status, v.code, v.message)
}

#[tokio::test]
async fn a_2xx_whose_code_is_not_in_ok_codes_is_an_error_and_by_code_comes_before_by_status() {
    let stub = Stub::start().await;
    let p = reference(
        &stub.url,
        r#"errors: { code: "$.code", ok_codes: [0, "OK"], by_code: { "60001": not_found, "E_BUSY": provider_unavailable }, by_status: { 404: conversation_not_ready, 409: provider_error } }"#,
    );
    for ok in [json!({"code": 0, "answer": "A."}), json!({"code": "OK", "answer": "A."}), json!({"answer": "A."})] {
        stub.then(reply(200, &ok));
        assert_eq!(summary(&p, &by_id("1")).await.unwrap().content.sections[0].items, ["A."], "{ok}");
    }

    stub.then(reply(200, &json!({"code": 7, "message": "quota exceeded", "answer": "A."})));
    let err = summary(&p, &by_id("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert_eq!(vendor_of(&err), (Some(200), Some(json!(7)), Some("quota exceeded".into())));

    // A vendor code in `by_code` wins over the status, in a 2xx and in an error status.
    for status in [200, 404] {
        stub.then(reply(status, &json!({"code": 60001})));
        let err = summary(&p, &by_id("1")).await.unwrap_err();
        assert!(matches!(err, ProviderError::NotFound { .. }), "{status}: {err:?}");
    }
    stub.then(reply(409, &json!({"code": "E_BUSY"})));
    assert!(matches!(summary(&p, &by_id("1")).await, Err(ProviderError::Unavailable { .. })));
    // A code not in `by_code`: `by_status`, instead of the defaults.
    stub.then(reply(404, &json!({"code": 7})));
    assert!(matches!(summary(&p, &by_id("1")).await, Err(ProviderError::NotReady { .. })));
    stub.then(reply(409, &json!({"code": 7})));
    assert!(matches!(summary(&p, &by_id("1")).await, Err(ProviderError::Rejected { .. })));
    assert_eq!(stub.calls(), 9);
}

#[tokio::test]
async fn without_a_table_statuses_map_as_api_md_says() {
    let stub = Stub::start().await;
    let p = reference(&stub.url, "");
    let mut calls = 0;
    let mut answer = async |reply: Reply| {
        stub.then(reply);
        calls += 1;
        summary(&p, &by_id(&calls.to_string())).await
    };

    for (status, body) in [(400, json!({"message": "bad id"})), (422, json!({"error": "bad id"}))] {
        let err = answer(reply(status, &body)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Rejected { .. }), "{status}: {err:?}");
        assert_eq!(vendor_of(&err), (Some(status), None, Some("bad id".into())));
    }
    assert!(p.is_available(), "a refused request is not refused credentials");

    for status in [401, 403] {
        let err = answer(reply(status, &json!({"description": "no such key"}))).await.unwrap_err();
        assert!(matches!(err, ProviderError::Rejected { .. }), "{status}: {err:?}");
        assert_eq!(vendor_of(&err).2.as_deref(), Some("no such key"));
        assert!(!p.is_available(), "{status}: /v1/providers shows credentials_rejected");
        answer(reply(404, &json!({}))).await.unwrap_err();
        assert!(!p.is_available(), "until a success");
        answer(reply(200, &json!({"answer": "A."}))).await.unwrap();
        assert!(p.is_available(), "{status}: a success ends it");
    }

    let err = answer(reply(404, &json!({"message": "unknown"}))).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");

    let err = answer(reply(409, &json!({})).with_header("retry-after", "12")).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotReady { retry_after, .. } if retry_after == Duration::from_secs(12)));
    let err = answer(reply(409, &json!({}))).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotReady { retry_after, .. } if retry_after == Duration::from_secs(30)));

    for (status, retry_after) in [(500, None), (502, None), (503, Some("7")), (504, None)] {
        let mut r = reply(status, &json!({"message": "down"}));
        if let Some(after) = retry_after {
            r = r.with_header("retry-after", after);
        }
        let err = answer(r).await.unwrap_err();
        let expected = Duration::from_secs(retry_after.map_or(5, |a| a.parse().unwrap()));
        assert!(
            matches!(err, ProviderError::Unavailable { retry_after, .. } if retry_after == expected),
            "{status}: {err:?}"
        );
        assert_eq!(vendor_of(&err), (Some(status), None, Some("down".into())));
    }

    let not_json = Reply { status: 200, headers: Vec::new(), body: "<html>hello</html>".into() };
    let err = answer(not_json).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { ref message, .. } if message.contains("not JSON")), "{err:?}");
    let err = answer(reply(200, &json!({"other": 1}))).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { ref message, .. } if message.contains("mappings.summary")));
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_throttling_are_retried_within_the_deadline_unless_the_table_maps_them() {
    let stub = Stub::start().await;
    let p = reference(&stub.url, "");
    stub.then(reply(408, &json!({})));
    stub.then(reply(429, &json!({})));
    summary(&p, &by_id("1")).await.expect("retried past a 408 and a 429");
    assert_eq!(stub.calls(), 3);

    stub.always(reply(408, &json!({})));
    let err = summary(&p, &by_id("2")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert_eq!(stub.calls(), 6, "two retries, then the error");

    stub.always(reply(429, &json!({})).with_header("retry-after", "4"));
    let err = summary(&p, &by_id("3")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Overloaded { retry_after } if retry_after == Duration::from_secs(4)));
    assert_eq!(stub.calls(), 9);

    // Mapped by the table: taken at its word, not retried.
    let mapped = reference(&stub.url, "errors: { by_status: { 429: provider_unavailable } }");
    let err = summary(&mapped, &by_id("4")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    assert_eq!(stub.calls(), 10);
}

#[tokio::test]
async fn a_body_templates_placeholders_arrive_with_their_json_types() {
    let stub = Stub::start().await;
    let p = declared(
        &stub.url,
        r#"
input: reference
request:
  method: POST
  path: "/v1/calls/{conversation.id}/summary"
  query: { kind: "{kind}", who: "{conversation.party}" }
  headers: { X-Extension: "{conversation.extension_id}" }
  body:
    id: "{conversation.id}"
    extension: "{conversation.extension_id}"
    party: "{conversation.party}"
    label: "ext {conversation.extension_id} of {{x}}"
    kind: "{kind}"
    fixed: [1, true, null, "{kind}"]
    nested: { language: "{language}" }
mappings: { summary: { text: "$.answer" } }
"#,
    );
    let req = SummaryRequest {
        kind: Kind::Summary,
        language: None,
        conversation: Conversation {
            id: Some("a/b c?#".into()),
            party: Some(Party::Callee),
            extension_id: Some(3202),
            text: None,
        },
    };
    p.validate(&req).unwrap();
    summary(&p, &req).await.unwrap();
    let seen = &stub.seen()[0];
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/calls/a%2Fb%20c%3F%23/summary", "the id stays one path segment");
    assert_eq!(seen.query.as_deref(), Some("kind=summary&who=callee"));
    assert_eq!(seen.header("x-extension"), Some("3202"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.json(),
        json!({"id": "a/b c?#", "extension": 3202, "party": "callee", "label": "ext 3202 of {x}", "kind": "summary",
               "fixed": [1, true, null, "summary"], "nested": {"language": null}})
    );

    // A text is sent as it is, quotes and line breaks included.
    let text = declared(
        &stub.url,
        r#"
input: text
request: { method: PUT, path: /summaries, query: { q: "{conversation.text}" }, body: { text: "{conversation.text}" } }
mappings: { summary: { text: "$.answer" } }
"#,
    );
    let said = "Agent: \"Hello & welcome\"\nClient: 50% off?";
    summary(&text, &by_text(said, None)).await.unwrap();
    let seen = &stub.seen()[1];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PUT", "/summaries"));
    assert_eq!(seen.json(), json!({ "text": said }));
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(seen.query.as_deref().unwrap().as_bytes()).into_owned().collect();
    assert_eq!(query, [("q".to_owned(), said.to_owned())]);
}

#[tokio::test]
async fn a_mapping_of_data_fields_alone_gives_a_titled_section_per_field() {
    let stub = Stub::start().await;
    let p = declared(
        &stub.url,
        r#"
input: reference
kinds: [details]
request: { path: "/v1/items/{conversation.id}/details" }
mappings:
  details: { reasons: "$.reasons[*]", actions_taken: "$.actionsTakenByAgent[*]", entities: "$.entities[*]",
             resolved: "$.isResolved", score: "$.score", missing: "$.nothing[*]" }
"#,
    );
    assert_eq!(p.kinds(), [Kind::Details]);
    stub.then(reply(
        200,
        &json!({"reasons": ["Double charge"], "actionsTakenByAgent": ["Refunded", "Apologised"],
                "entities": [{"type": "AMOUNT", "value": "$89.99"}], "isResolved": true, "score": 4}),
    ));
    let req = SummaryRequest { kind: Kind::Details, ..by_id("7") };
    let done = summary(&p, &req).await.unwrap();
    assert_eq!(
        done.data,
        Some(json!({"reasons": ["Double charge"], "actions_taken": ["Refunded", "Apologised"],
                    "entities": [{"type": "AMOUNT", "value": "$89.99"}], "resolved": true, "score": 4}))
    );
    let mut sections: Vec<(Option<&str>, Vec<&str>)> = done
        .content
        .sections
        .iter()
        .map(|s| (s.title.as_deref(), s.items.iter().map(String::as_str).collect()))
        .collect();
    sections.sort();
    assert_eq!(
        sections,
        [
            (Some("Actions taken"), vec!["Refunded", "Apologised"]),
            (Some("Entities"), vec!["AMOUNT: $89.99"]),
            (Some("Reasons"), vec!["Double charge"]),
            (Some("Resolved"), vec!["Yes"]),
            (Some("Score"), vec!["4"]),
        ],
        "a field that selects nothing has no section"
    );
    assert!(done.content.markdown.contains("Actions taken"), "{}", done.content.markdown);
    assert_eq!(done.provider_ref, None, "no provider_ref without one configured or a job");
}

#[tokio::test]
async fn content_format_reads_the_text_as_html_markdown_or_prose() {
    let stub = Stub::start().await;
    let sections = |format: &str, text: &str| {
        let p = reference(&stub.url, &format!("content_format: {format}"));
        let stub = stub.clone();
        let text = text.to_owned();
        async move {
            stub.then(reply(200, &json!({ "answer": text })));
            let done = summary(&p, &by_id("1")).await.unwrap();
            done.content.sections.into_iter().map(|s| (s.title, s.items)).collect::<Vec<_>>()
        }
    };
    let titled = |t: &str, items: &[&str]| (Some(t.to_owned()), items.iter().map(|i| (*i).to_owned()).collect());
    let expected = vec![titled("Reason", &["Double charge"]), titled("Outcome", &["Refunded", "Customer thanked"])];

    let html =
        "<p>Reason</p><ul><li>Double charge</li></ul><p>Outcome</p><ul><li>Refunded</li><li>Customer thanked</li></ul>";
    assert_eq!(sections("html", html).await, expected);
    let markdown = "- **Reason**:\n  - Double charge\n- **Outcome**:\n  - Refunded\n  - Customer thanked";
    assert_eq!(sections("markdown", markdown).await, expected);
    let prose = "The customer was charged twice.\n\n- Refunded\n- Customer thanked";
    assert_eq!(
        sections("text", prose).await,
        [(None, vec!["The customer was charged twice.".to_owned(), "Refunded".into(), "Customer thanked".into()])]
    );
}

#[tokio::test]
async fn a_language_table_maps_tags_and_refuses_unlisted_ones() {
    let stub = Stub::start().await;
    let p = declared(
        &stub.url,
        r#"
input: text
min_text_chars: 10
languages: { en: english, pt: portuguese }
default_language: en
request: { method: POST, path: /summaries, body: { text: "{conversation.text}", language: "{language}" } }
mappings: { summary: { text: "$.answer" } }
"#,
    );
    assert_eq!(p.language(Kind::Summary, Some("pt-br")), Ok(Some("pt-BR".to_owned())));
    assert_eq!(p.language(Kind::Summary, None), Ok(Some("en".to_owned())), "the default");
    let refused = p.language(Kind::Summary, Some("de-AT")).unwrap_err();
    assert!(
        matches!(&refused, RequestProblem::UnsupportedLanguage(m) if m.contains("de-AT") && m.contains("en, pt")),
        "{refused:?}"
    );
    assert!(matches!(p.language(Kind::Summary, Some("not a tag")), Err(RequestProblem::Invalid(_))));

    let text = "Agent: hello. Client: my invoice.";
    for tag in ["pt-BR", "en"] {
        summary(&p, &by_text(text, Some(tag))).await.unwrap();
    }
    let languages: Vec<Value> = stub.seen().iter().map(|s| s.json()["language"].clone()).collect();
    assert_eq!(languages, [json!("portuguese"), json!("english")]);

    // Without a table, `{language}` is the tag; without it anywhere, no language at all.
    let as_given = declared(
        &stub.url,
        "input: text\nrequest: { path: /s, query: { lang: \"{language}\", t: \"{conversation.text}\" } }\nmappings: { summary: { text: \"$.answer\" } }",
    );
    assert_eq!(as_given.language(Kind::Summary, Some("de-at")), Ok(Some("de-AT".to_owned())));
    let none = declared(
        &stub.url,
        "input: text\nrequest: { path: /s, body: { t: \"{conversation.text}\" } }\nmappings: { summary: { text: \"$.answer\" } }",
    );
    assert_eq!(none.language(Kind::Summary, Some("de-at")), Ok(None), "not part of the request's identity");
    assert!(matches!(none.language(Kind::Summary, Some("!!")), Err(RequestProblem::Invalid(_))));
}

#[tokio::test]
async fn conversations_are_checked_before_any_call() {
    let url = "http://127.0.0.1:9";
    let guid = reference(url, "id_pattern: \"[0-9a-f]{8}-[0-9a-f]{4}\"");
    guid.validate(&by_id("3f6a2c1e-8b4d")).unwrap();
    for bad in ["x3f6a2c1e-8b4d", "3f6a2c1e-8b4dx", "3F6A2C1E-8B4D", ""] {
        let err = guid.validate(&by_id(bad)).unwrap_err();
        assert!(matches!(err, RequestProblem::Invalid(ref m) if m.starts_with("conversation.id")), "{bad}: {err:?}");
    }
    let any = reference(url, "");
    any.validate(&by_id(&"x".repeat(256))).unwrap();
    for bad in ["x".repeat(257), "a\u{7}b".to_owned(), String::new()] {
        assert!(matches!(any.validate(&by_id(&bad)), Err(RequestProblem::Invalid(_))), "{bad:?}");
    }
    let mut text_given = by_id("1");
    text_given.conversation.text = Some("Hello".into());
    assert!(matches!(any.validate(&text_given), Err(RequestProblem::Invalid(_))));
    assert!(matches!(any.validate(&by_text("Hello", None)), Err(RequestProblem::Invalid(_))), "no id");

    let party = declared(
        url,
        "input: reference\nrequest: { path: \"/c/{conversation.id}/{conversation.party}\" }\nmappings: { summary: { text: \"$.a\" } }",
    );
    let err = party.validate(&by_id("1")).unwrap_err();
    assert!(matches!(err, RequestProblem::Invalid(ref m) if m.starts_with("conversation.party")), "{err:?}");

    let text = declared(
        url,
        "input: text\nmin_text_chars: 20\nrequest: { path: /s, body: { t: \"{conversation.text}\" } }\nmappings: { summary: { text: \"$.a\" } }",
    );
    assert!(
        matches!(text.validate(&by_text("  too short   ", None)), Err(RequestProblem::TextTooShort(m)) if m.contains("20"))
    );
    text.validate(&by_text("long enough, surely, yes", None)).unwrap();
    assert!(matches!(text.validate(&by_id("1")), Err(RequestProblem::Invalid(_))));

    let errors = declared_or_errors(
        url,
        "input: reference\nid_pattern: \"[0-9\"\nrequest: { path: /x }\nmappings: { summary: { text: \"$.a\" } }",
    )
    .err()
    .unwrap();
    assert!(errors.iter().any(|e| e.starts_with("id_pattern: `[0-9` is not a regular expression")), "{errors:?}");
}

#[tokio::test]
async fn static_credentials_go_where_auth_says() {
    let stub = Stub::start().await;
    let cases = [
        ("auth: { bearer: b3arer }", "authorization", "Bearer b3arer"),
        ("auth: { header: { name: X-API-Token, value: h3ader } }", "x-api-token", "h3ader"),
    ];
    for (auth, header, value) in cases {
        summary(&reference(&stub.url, auth), &by_id("1")).await.unwrap();
        let seen = stub.seen().pop().unwrap();
        assert_eq!(seen.header(header), Some(value), "{auth}");
        assert_eq!(seen.query, None, "{auth}");
    }

    // In the query: after the template's own parameters, encoded.
    let query = "auth: { query: { name: api_key, value: \"k&y=1 +\" } }";
    summary(&reference(&stub.url, query), &by_id("1")).await.unwrap();
    assert_eq!(stub.seen().pop().unwrap().query.as_deref(), Some("api_key=k%26y%3D1+%2B"));
    let with_query = declared(
        &stub.url,
        &format!(
            "{query}\ninput: reference\nrequest: {{ path: /x, query: {{ id: \"{{conversation.id}}\" }} }}\nmappings: {{ summary: {{ text: \"$.answer\" }} }}"
        ),
    );
    summary(&with_query, &by_id("a b")).await.unwrap();
    let seen = stub.seen().pop().unwrap();
    assert_eq!(seen.query.as_deref(), Some("id=a+b&api_key=k%26y%3D1+%2B"));
    assert_eq!(seen.header("authorization"), None);

    // A transport failure does not carry the URL, so not the query's secret either.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let down = reference(&format!("http://{closed}"), query);
    let err = summary(&down, &by_id("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("k&y") && !format!("{err:?}").contains("k%26y"), "{err:?}");
}

/// An OAuth 2.0 provider (client `cid`, `secret`, scope `summaries`) reading ElevateAI's summary route at `url`.
fn oauth_provider(url: &str, token_url: &str, secret: &str) -> Declared {
    declared(
        url,
        &format!(
            "input: reference\nauth: {{ oauth2: {{ token_url: \"{token_url}\", client_id: cid, client_secret: {secret}, scope: summaries }} }}\nrequest: {{ path: \"/v1/interactions/{{conversation.id}}/gen-ai/cx/summary\" }}\nmappings: {{ summary: {{ text: \"$.summary\" }} }}"
        ),
    )
}

/// The ElevateAI simulator with its token endpoint (client `cid` / `s3cret`, tokens living `lifetime`).
async fn oauth_simulator(lifetime: Duration, latency: Duration) -> RunningSimulator {
    let oauth = OAuthOptions { client_id: "cid".into(), client_secret: "s3cret".into(), token_lifetime: lifetime };
    ElevateAiSimulator::start(SimOptions { latency, oauth: Some(oauth), max_concurrent: 64, ..SimOptions::default() })
        .await
        .unwrap()
}

fn at_simulator(sim: &RunningSimulator, secret: &str) -> Declared {
    oauth_provider(&sim.base_url(), &format!("{}/oauth/token", sim.base_url()), secret)
}

#[tokio::test(start_paused = true)]
async fn an_oauth_token_is_renewed_a_tenth_of_its_life_before_expires_in_at_most_a_minute() {
    for (lifetime, renewed_after) in [(100, 90), (3600, 3540)] {
        let sim = oauth_simulator(Duration::from_secs(lifetime), Duration::ZERO).await;
        let p = at_simulator(&sim, "s3cret");
        let started = Instant::now();
        summary(&p, &by_id(BILLING_CALL)).await.unwrap();
        assert_eq!(sim.stats().tokens_issued, 1);
        assert_eq!(sim.stats().scopes, ["summaries"]);
        tokio::time::sleep_until(started + Duration::from_millis(renewed_after * 1000 - 100)).await;
        summary(&p, &by_id(BILLING_CALL)).await.unwrap();
        assert_eq!(sim.stats().tokens_issued, 1, "{lifetime} s: still the first token");
        tokio::time::advance(Duration::from_millis(200)).await;
        summary(&p, &by_id(BILLING_CALL)).await.unwrap();
        let stats = sim.stats();
        assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2), "{lifetime} s: renewed");
        assert_eq!((stats.requests["summary"], stats.stale_tokens), (3, 0), "never sent a token past its renewal");
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_token_and_one_renewal() {
    let sim = oauth_simulator(Duration::from_secs(3600), Duration::from_millis(50)).await;
    let p = at_simulator(&sim, "s3cret");
    let req = by_id(BILLING_CALL);
    let all = futures::future::join_all((0..10).map(|_| summary(&p, &req))).await;
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    assert_eq!((sim.stats().token_requests, sim.stats().tokens_issued), (1, 1), "one token for all");

    // Revoked before its time: every request's 401 leads to one renewal between them.
    sim.revoke_tokens();
    let all = futures::future::join_all((0..10).map(|_| summary(&p, &req))).await;
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2), "one renewal for ten refused requests");
    assert!((1..=10).contains(&stats.stale_tokens), "{stats:?}");
    assert_eq!(stats.requests["summary"], 20, "each succeeded with one token or the other");
    assert!(p.is_available());
}

#[tokio::test]
async fn a_token_the_vendor_refuses_is_renewed_once_per_request() {
    let stub = Stub::start().await;
    let p = oauth_provider(&stub.url, &format!("{}{STUB_TOKEN_PATH}", stub.url), "s3cret");
    stub.always(reply(200, &json!({"summary": "The customer asked. The agent answered."})));
    stub.then(reply(401, &json!({"message": "token revoked"})));
    stub.then(reply(401, &json!({"message": "token revoked"})));
    let err = summary(&p, &by_id("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert!(!p.is_available());
    let seen: Vec<Option<String>> = stub.seen().iter().map(|s| s.header("authorization").map(str::to_owned)).collect();
    assert_eq!(seen, [Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())], "one renewal, no loop");

    // The renewed token stays: the next request uses it, and its success ends the refusal.
    summary(&p, &by_id("2")).await.unwrap();
    assert_eq!(stub.seen()[2].header("authorization"), Some("Bearer t2"));
    assert!(p.is_available());

    // What the token requests looked like (RFC 6749 §4.4.2, §2.3.1).
    let tokens = stub.token_requests();
    assert_eq!(tokens.len(), 2);
    let first = &tokens[0];
    assert_eq!(first.method, Method::POST);
    assert_eq!(first.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(first.header("accept"), Some("application/json"));
    assert_eq!(first.header("authorization"), Some("Basic Y2lkOnMzY3JldA=="), "base64 of cid:s3cret");
    assert_eq!(first.body, "grant_type=client_credentials&scope=summaries");
}

#[tokio::test(start_paused = true)]
async fn a_refused_client_is_not_asked_again_for_30_s() {
    let sim = oauth_simulator(Duration::from_secs(3600), Duration::ZERO).await;
    let p = at_simulator(&sim, "not-the-secret");
    let err = summary(&p, &by_id(BILLING_CALL)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert_eq!(vendor_of(&err).0, Some(401));
    assert_eq!(vendor_of(&err).1, Some(json!("invalid_client")));
    assert!(!p.is_available(), "/v1/providers shows credentials_rejected");
    for _ in 0..5 {
        let err = summary(&p, &by_id(BILLING_CALL)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    }
    assert_eq!(oauth::REJECTED_FOR, Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(29)).await;
    summary(&p, &by_id(BILLING_CALL)).await.unwrap_err();
    assert_eq!(sim.stats().token_requests, 1, "not asked again within 30 s");
    tokio::time::advance(Duration::from_secs(2)).await;
    summary(&p, &by_id(BILLING_CALL)).await.unwrap_err();
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.token_refusals, stats.tokens_issued), (2, 2, 0), "asked again after");
    assert!(stats.requests.is_empty(), "no vendor call without a token");
    assert!(!p.is_available());
}

#[tokio::test]
async fn a_token_endpoint_that_fails_is_unavailable_and_asked_again() {
    let stub = Stub::start().await;
    let p = oauth_provider(&stub.url, &format!("{}{STUB_TOKEN_PATH}", stub.url), "s3cret");
    stub.always(reply(200, &json!({"summary": "The customer asked. The agent answered."})));
    stub.script().token_reply = Some(reply(503, &json!({})).with_header("retry-after", "9"));
    let err = summary(&p, &by_id("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { retry_after, .. } if retry_after == Duration::from_secs(9)));
    assert!(p.is_available(), "a failing endpoint is not a refused client");
    stub.script().token_reply = Some(reply(200, &json!({"access_token": "mac", "token_type": "MAC"})));
    let err = summary(&p, &by_id("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { ref message, .. } if message.contains("bearer")), "{err:?}");
    stub.script().token_reply = None;
    summary(&p, &by_id("1")).await.unwrap();
    assert_eq!(stub.token_requests().len(), 3, "asked again each time");
    assert_eq!(stub.calls(), 1);
}
