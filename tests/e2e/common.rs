//! The harness: the real gateway on 127.0.0.1:0 against in-process simulators,
//! or the real binary as a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gateway_config::Config;
use hmac::{Hmac, KeyInit, Mac};
use providers::commbox::simulator::{self as commbox, CommBoxSimulator};
use providers::elevateai::simulator::{self as elevateai, ElevateAiSimulator};
use providers::yeastar::simulator::{RunningSimulator, SimOptions, SimRecord, YeastarSimulator};
use serde_json::{Value, json};
use sha2::Sha256;
use summary_gateway::App;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The main test key (all providers).
pub const KEY: &str = "crm-test-key-0123456789";
/// A key allowed only on `pbx-other`.
pub const NARROW_KEY: &str = "narrow-test-key-0123456789";
/// A key limited to a burst of 2 and then one request per 1000 s.
pub const TINY_KEY: &str = "tiny-test-key-0123456789";

/// The main key's webhook secret (Standard Webhooks `whsec_` + base64 of 32 bytes).
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI=";

/// The docs' example: cdr 20260513223234-3EE9E asked for the caller, extension 3202.
pub fn docs_request() -> Value {
    json!({"provider": "pbx", "conversation": {"id": "20260513223234-3EE9E", "party": "caller", "extension_id": 3202}})
}

/// Test configuration. `{sim}` is the simulator's URL; `server` and `pbx` are
/// extra YAML lines (already indented) under `server:` and `providers.pbx:`.
pub fn config_yaml(sim: &str, server: &str, pbx: &str) -> String {
    format!(
        r"
server:
  listen: 127.0.0.1:0
{server}
auth:
  keys:
    crm:
      key: {KEY}
      rate_limit: {{ per_second: 10000, burst: 10000 }}
      webhook_secret: {WEBHOOK_SECRET}
    narrow:
      key: {NARROW_KEY}
      providers: [pbx-other]
    tiny:
      key: {TINY_KEY}
      rate_limit: {{ per_second: 0.001, burst: 2 }}
providers:
  pbx:
    type: yeastar
    base_url: {sim}
    client_id: demo-client-id
    client_secret: demo-client-secret
{pbx}
  pbx-other:
    type: yeastar
    base_url: {sim}
    client_id: demo-client-id
    client_secret: demo-client-secret
"
    )
}

/// The `cb` CommBox provider (YAML lines under `providers:`), polling every 50 ms.
pub fn commbox_yaml(url: &str, extra: &str) -> String {
    format!(
        "  cb:\n    type: commbox\n    base_url: {url}\n    token: demo-commbox-token\n    poll_interval: 50ms\n    poll_backoff_max: 200ms\n    timeout: 3s\n{extra}\n"
    )
}

/// Which adapter a test's provider runs on: the built-in one, or its description
/// as a declarative provider (`config/examples/http-*.yaml`, `type: http`) at the
/// same simulator. Tests that prove a built-in adapter run on both, unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavour {
    #[default]
    BuiltIn,
    Declared,
}

impl Flavour {
    /// The `provider_type` of the resource: the built-in `builtin`, or `http`.
    pub const fn type_name(self, builtin: &'static str) -> &'static str {
        match self {
            Self::BuiltIn => builtin,
            Self::Declared => "http",
        }
    }
}

/// Generates `builtin::<test>` and `declared::<test>` for each `async fn <test>(Flavour)`.
#[macro_export]
macro_rules! on_both_flavours {
    ($($test:ident),* $(,)?) => {
        mod builtin {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::common::Flavour::BuiltIn).await;
            })*
        }
        mod declared {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::common::Flavour::Declared).await;
            })*
        }
    };
}

/// The provider `name` of an example file (`config/examples/<file>`) as YAML lines
/// under `providers:`, renamed `as_name`, pointed at `url` with `auth` (inline, the
/// simulator's) and `top` (keys set on the provider) and `job` (keys set on its
/// `job`) written over it.
pub fn declared_yaml(
    example: &str,
    name: &str,
    as_name: &str,
    url: &str,
    auth: Value,
    top: &[(String, Value)],
    job: &[(String, Value)],
) -> String {
    let file: serde_yaml::Value = serde_yaml::from_str(example).expect("the example is YAML");
    let mut provider: Value =
        serde_json::to_value(&file["providers"][name]).expect("the example provider converts to JSON");
    assert!(provider.is_object(), "no provider {name} in the example");
    provider["base_url"] = json!(url);
    provider["auth"] = auth;
    for (key, value) in top {
        provider[key] = value.clone();
    }
    for (key, value) in job {
        provider["job"][key] = value.clone();
    }
    let yaml = serde_yaml::to_string(&json!({ as_name: provider })).expect("YAML");
    let mut indented = String::new();
    for line in yaml.lines() {
        indented.push_str("  ");
        indented.push_str(line);
        indented.push('\n');
    }
    indented
}

/// The `cb` provider as the declarative description of CommBox, polling every
/// 50 ms; `extra` is the built-in's YAML lines (`    job_timeout: 400ms`), whose
/// job keys go under `job`.
pub fn declared_commbox_yaml(url: &str, extra: &str) -> String {
    let mut top = vec![("timeout".to_owned(), json!("3s"))];
    let mut job = vec![("poll_interval".to_owned(), json!("50ms")), ("poll_backoff_max".to_owned(), json!("200ms"))];
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.trim().split_once(": ").expect("`key: value` lines");
        let value: Value = serde_yaml::from_str(value).expect("a YAML value");
        let list =
            if matches!(key, "poll_interval" | "poll_backoff_max" | "job_timeout") { &mut job } else { &mut top };
        list.retain(|(k, _)| k != key);
        list.push((key.to_owned(), value));
    }
    declared_yaml(
        include_str!("../../config/examples/http-commbox.yaml"),
        "commbox-http",
        "cb",
        url,
        json!({ "bearer": "demo-commbox-token" }),
        &top,
        &job,
    )
}

/// The ElevateAI providers with `ai` as the declarative description of ElevateAI
/// (summary, details, topics) and `ai-std` built-in; `extra` (the built-in's YAML
/// lines under `ai`) is written over the description.
pub fn declared_elevateai_yaml(url: &str, extra: &str) -> String {
    let mut top = vec![("timeout".to_owned(), json!("5s")), ("queue_timeout".to_owned(), json!("5s"))];
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.trim().split_once(": ").expect("`key: value` lines");
        top.retain(|(k, _)| k != key);
        top.push((key.to_owned(), serde_yaml::from_str(value).expect("a YAML value")));
    }
    let auth = json!({ "header": { "name": "X-API-Token", "value": "demo-elevateai-token" } });
    let ai = declared_yaml(
        include_str!("../../config/examples/http-elevateai.yaml"),
        "elevateai-http",
        "ai",
        url,
        auth,
        &top,
        &[],
    );
    let std = elevateai_yaml(url, "");
    let std = &std[std.find("  ai-std:").expect("the ai-std provider")..];
    format!("{ai}{std}")
}

/// The ElevateAI providers (YAML lines under `providers:`): `ai` (variant cx) and
/// `ai-std` (variant standard), both at the same simulator; `extra` goes under `ai`.
pub fn elevateai_yaml(url: &str, extra: &str) -> String {
    format!(
        "  ai:\n    type: elevateai\n    base_url: {url}\n    token: demo-elevateai-token\n    timeout: 5s\n    queue_timeout: 5s\n{extra}\n  ai-std:\n    type: elevateai\n    variant: standard\n    base_url: {url}\n    token: demo-elevateai-token\n    timeout: 5s\n"
    )
}

/// An ElevateAI summary request body of `kind` about `interaction`.
pub fn elevateai_body(provider: &str, kind: &str, interaction: &str) -> Value {
    json!({"provider": provider, "kind": kind, "conversation": {"id": interaction}})
}

/// A text CommBox accepts (over 150 characters); `tag` makes it distinct.
pub fn conversation_text(tag: &str) -> String {
    format!(
        "Agent: Good morning, thank you for calling Acme support, how can I help? Client: Hi, I noticed my March \
         invoice was charged twice. Agent: I see the duplicate and have refunded it. Client: Thanks! ({tag})"
    )
}

/// A CommBox summary request body.
pub fn commbox_body(tag: &str) -> Value {
    json!({"provider": "cb", "conversation": {"text": conversation_text(tag)}})
}

/// A gateway served in-process, with its Yeastar and CommBox simulators.
pub struct TestGateway {
    pub url: String,
    /// The configuration it started with (YAML, secrets inline), to reload a changed copy.
    pub yaml: String,
    pub sim: YeastarSimulator,
    pub commbox: CommBoxSimulator,
    _commbox: commbox::RunningSimulator,
    pub elevateai: ElevateAiSimulator,
    _elevateai: elevateai::RunningSimulator,
    pub client: reqwest::Client,
    pub app: Arc<App>,
    _sim: RunningSimulator,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// What a test varies.
#[derive(Default)]
pub struct Setup {
    pub server: &'static str,
    pub pbx: String,
    pub sim: SimOptions,
    /// Point the providers here instead of at the simulator.
    pub vendor_url: Option<String>,
    /// The CommBox simulator's options (processing 100 ms unless set).
    pub commbox: Option<commbox::SimOptions>,
    /// Extra YAML lines under `providers.cb:` (indented by 4). `${GATEWAY_URL}`
    /// anywhere in the YAML becomes the gateway's own URL.
    pub cb: String,
    /// Extra top-level YAML sections (e.g. `webhooks:`).
    pub extra: String,
    /// More callers: YAML lines under `auth.keys:` (indented by 4), put first.
    pub keys: String,
    /// The ElevateAI simulator's options (its defaults unless set).
    pub elevateai: Option<elevateai::SimOptions>,
    /// Extra YAML lines under `providers.ai:` (indented by 4).
    pub ai: String,
    /// More providers: YAML lines under `providers:` (indented by 2), put first.
    pub providers: String,
    /// The adapter of `cb`: built-in, or CommBox described as `type: http`.
    pub cb_flavour: Flavour,
    /// The adapter of `ai`: built-in, or ElevateAI described as `type: http`.
    pub ai_flavour: Flavour,
}

pub fn client() -> reqwest::Client {
    providers::outbound::install_crypto_provider();
    reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap()
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        let sim = YeastarSimulator::start(setup.sim).await.unwrap();
        let commbox_options = setup.commbox.unwrap_or_else(|| commbox::SimOptions {
            processing: Duration::from_millis(100),
            ..commbox::SimOptions::default()
        });
        let cb_sim = CommBoxSimulator::start(commbox_options).await.unwrap();
        let ai_sim = ElevateAiSimulator::start(setup.elevateai.unwrap_or_default()).await.unwrap();
        let vendor = setup.vendor_url.clone().unwrap_or_else(|| sim.base_url());
        let cb_vendor = setup.vendor_url.clone().unwrap_or_else(|| cb_sim.base_url());
        let ai_vendor = setup.vendor_url.unwrap_or_else(|| ai_sim.base_url());
        let yaml = format!(
            "{}{}{}{}",
            config_yaml(&vendor, setup.server, &setup.pbx),
            match setup.cb_flavour {
                Flavour::BuiltIn => commbox_yaml(&cb_vendor, &setup.cb),
                Flavour::Declared => declared_commbox_yaml(&cb_vendor, &setup.cb),
            },
            match setup.ai_flavour {
                Flavour::BuiltIn => elevateai_yaml(&ai_vendor, &setup.ai),
                Flavour::Declared => declared_elevateai_yaml(&ai_vendor, &setup.ai),
            },
            setup.extra
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let yaml = yaml.replacen("\nproviders:\n", &format!("\nproviders:\n{}", setup.providers), 1);
        let yaml = yaml.replacen("\nauth:\n  keys:\n", &format!("\nauth:\n  keys:\n{}", setup.keys), 1);
        let yaml = yaml.replace("${GATEWAY_URL}", &url);
        let config = Config::from_yaml(&providers::registry::config_types(), &yaml, &|_| None)
            .unwrap_or_else(|e| panic!("test config:\n{e}"));
        let app = App::new(config).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(summary_gateway::run(listener, Arc::clone(&app), async move {
            let _ = rx.await;
        }));
        Self {
            url,
            yaml,
            sim: sim.sim.clone(),
            commbox: cb_sim.sim.clone(),
            _commbox: cb_sim,
            elevateai: ai_sim.sim.clone(),
            _elevateai: ai_sim,
            client: client(),
            app,
            _sim: sim,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).bearer_auth(KEY)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url)).bearer_auth(KEY)
    }

    /// POST /v1/summaries with the main key.
    pub async fn summarize(&self, body: &Value) -> reqwest::Response {
        self.post("/v1/summaries").json(body).send().await.unwrap()
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }
}

/// Waits (at most 10 s) until `condition` holds: for states a test cannot
/// await directly, such as a request being in flight at the simulator.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A summary record for call leg `cdr` (party src, extension 3202).
pub fn record(cdr: &str) -> SimRecord {
    SimRecord {
        cdr_id: cdr.to_owned(),
        party: "src".into(),
        ext_id: 3202,
        answer_key: None,
        state: providers::yeastar::simulator::RecordState::Ready,
        summary: json!({"id": 1, "call_id": cdr, "summary": "<p>Call Summary</p><ul><li>A call.</li></ul>", "created_at": 1_778_682_824, "updated_at": 1_778_682_824, "name": "Agent", "ext_num": "3202"}),
    }
}

pub fn body_of(cdr: &str) -> Value {
    json!({"provider": "pbx", "conversation": {"id": cdr, "party": "caller", "extension_id": 3202}})
}

/// Asserts a problem+json answer with this status and code, whose `request_id`
/// matches the `x-request-id` header; returns the body.
pub async fn expect_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type for {code}"
    );
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(!request_id.is_empty());
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
    body
}

/// The real `summary-gateway` binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_summary-gateway"))
}

/// A gateway process with its output captured.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl GatewayProcess {
    /// Starts `summary-gateway serve --config <path>` with JSON logs and waits for it to listen.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = binary();
        cmd.args(["serve", "--config"]).arg(config);
        Self::spawn_command(cmd, env)
    }

    /// [`Self::spawn`] under `ulimit -n nofile` (soft and hard).
    pub fn spawn_with_nofile(config: &Path, env: &[(&str, &str)], nofile: u32) -> Self {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_summary-gateway"))
            .arg(config);
        Self::spawn_command(cmd, env)
    }

    fn spawn_command(mut cmd: Command, env: &[(&str, &str)]) -> Self {
        cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            let addr_tx = addr_tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "listening"
                        && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = addr_tx.send(addr);
                    }
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            }));
        }
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("the gateway did not start:\n{}", output.lock().unwrap());
        });
        Self { child, addr, output, readers }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then waits (at most 30 s) for the exit and the end of its
    /// output; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        let mut code = None;
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if code.is_none() {
            let _ = self.child.kill();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        code
    }

    /// Everything it printed so far (all of it after `terminate`).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// SIGKILL: the process dies at once, without draining or any last word (a
    /// crashed or evicted pod); waits for the exit and the end of its output.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// A webhook receiver that records what it got; answers `fail_first` 503s first.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    pub attempts: Arc<Mutex<u32>>,
    pub fail_first: u32,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let attempt = {
        let mut a = rx.attempts.lock().unwrap();
        *a += 1;
        *a
    };
    if attempt <= rx.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    rx.got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// Serves `rx` at `/hook` on `listener` in a background task.
pub fn start_receiver(listener: TcpListener, rx: Receiver) -> tokio::task::JoinHandle<()> {
    let app = Router::new().route("/hook", post(receive)).with_state(rx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Verifies a Standard Webhooks signature from scratch.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp = headers["webhook-timestamp"].to_str().unwrap();
    let ts: u64 = timestamp.parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(ts) < 300, "timestamp {ts} vs now {now}");
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let signatures = headers["webhook-signature"].to_str().unwrap();
    assert!(signatures.split(' ').any(|s| s == expected), "{signatures} != {expected}");
}

impl GatewayProcess {
    /// Its process id: a replica names itself `<pid>-<random>` in a shared store's leases.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs `cmd` to its end with its stdout and stderr captured, waiting on the
/// process itself (no polling). `Err` holds what it printed when it ran past
/// `deadline` and was killed.
pub fn run_to_end(cmd: &mut Command, deadline: Duration) -> Result<std::process::Output, std::process::Output> {
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the process");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    if let Ok(output) = done_rx.recv_timeout(deadline) {
        return Ok(output.expect("wait for the process"));
    }
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    Err(done_rx.recv().expect("the waiter ends with the process").expect("wait for the process"))
}
