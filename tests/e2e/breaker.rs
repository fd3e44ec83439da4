//! The per-provider circuit breaker: against a vendor that dies and comes back
//! (the real binary, so its `/metrics` and its log are this test's alone),
//! vendor answers that must never open it, a job's polls, and two replicas
//! sharing Redis.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use providers::CircuitState;
use providers::elevateai::simulator as elevateai;
use providers::yeastar::simulator::{RecordState, SimOptions, YeastarSimulator};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::common::{
    GatewayProcess, KEY, Setup, TestGateway, body_of, client, commbox_body, config_yaml, docs_request, elevateai_body,
    eventually, expect_problem, record,
};
use crate::redis_support::TestRedis;

/// A vendor address that is dead — it accepts every connection and closes it at
/// once, counting them — until [`Flaky::revive`]; then it forwards to `upstream`.
struct Flaky {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    dead_hits: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Flaky {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, dead_hits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let (up_, hits_) = (Arc::clone(&up), Arc::clone(&dead_hits));
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if up_.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        if let Ok(mut back) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut back).await;
                        }
                    });
                } else {
                    hits_.fetch_add(1, Ordering::SeqCst);
                    drop(conn);
                }
            }
        });
        Self { addr, up, dead_hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn revive(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn dead_hits(&self) -> u32 {
        self.dead_hits.load(Ordering::SeqCst)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the series `name{provider="<provider>"...}` in a Prometheus text page.
fn series(page: &str, name: &str, provider: &str) -> Option<f64> {
    let label = format!("provider=\"{provider}\"");
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

/// The status `/v1/providers` gives `name`.
async fn status_of(http: &reqwest::Client, url: &str, name: &str) -> String {
    let list: Value =
        http.get(format!("{url}/v1/providers")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    let entry = list["data"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
    entry["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
#[allow(clippy::float_cmp, reason = "gauge values and small counts, exact in f64")]
async fn a_dead_vendor_opens_the_breaker_which_answers_without_calling_it_and_closes_when_it_is_back() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let vendor = Flaky::start(sim.addr).await;
    let pbx = "    circuit_breaker: { consecutive_failures: 3, open_for: 3s }";
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(config_yaml(&vendor.url(), "", pbx).as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn(file.path(), &[]);
    let (http, url) = (client(), gw.url());
    let summarize = || http.post(format!("{url}/v1/summaries")).bearer_auth(KEY).json(&docs_request()).send();

    // Three failed calls: each one reached the (dead) vendor.
    for attempt in 1..=3 {
        let problem = expect_problem(summarize().await.unwrap(), 503, "provider_unavailable").await;
        assert!(!problem["detail"].as_str().unwrap().contains("circuit"), "{problem}");
        assert_eq!(vendor.dead_hits(), attempt);
    }

    // Open: answered at once with Retry-After, and the vendor sees nothing more.
    let mut refused = Vec::new();
    for _ in 0..20 {
        let response = summarize().await.unwrap();
        refused.push(response.headers()["x-request-id"].to_str().unwrap().to_owned());
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3).contains(&retry_after), "Retry-After: {retry_after}");
        let problem = expect_problem(response, 503, "provider_unavailable").await;
        assert_eq!(problem["provider"], "pbx", "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("circuit open"), "{problem}");
    }
    assert_eq!(vendor.dead_hits(), 3, "no connection attempt while the breaker is open");
    assert_eq!(status_of(&http, &url, "pbx").await, "circuit_open");
    assert_eq!(status_of(&http, &url, "pbx-other").await, "available", "per provider");
    let page = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(series(&page, "sg_provider_circuit_state", "pbx"), Some(1.0), "{page}");
    assert_eq!(series(&page, "sg_provider_circuit_state", "pbx-other"), Some(0.0), "{page}");
    assert_eq!(series(&page, "sg_provider_circuit_rejected_total", "pbx"), Some(20.0), "{page}");
    let tried = series(&page, "sg_vendor_calls_total", "pbx").unwrap();
    assert_eq!(tried, 3.0, "refused requests are not vendor calls: {page}");

    // The vendor is back: once `open_for` has passed, a trial call closes the breaker.
    vendor.revive();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = summarize().await.unwrap();
        if response.status() == 200 {
            break;
        }
        refused.push(response.headers()["x-request-id"].to_str().unwrap().to_owned());
        expect_problem(response, 503, "provider_unavailable").await;
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(vendor.dead_hits(), 3);
    assert_eq!(status_of(&http, &url, "pbx").await, "available");
    let page = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(series(&page, "sg_provider_circuit_state", "pbx"), Some(0.0), "{page}");
    assert_eq!(sim.sim.stats().summary_calls, 1, "one trial call, which succeeded");

    // The log: one line per transition, none per refused request.
    assert_eq!(gw.terminate(), Some(0));
    let lines: Vec<Value> = gw.output().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let about = |text: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["provider"] == "pbx" && l["message"].as_str().is_some_and(|m| m.starts_with(text)))
            .collect()
    };
    let opened = about("circuit breaker opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["level"], "WARN");
    assert_eq!(about("circuit breaker half-open").len(), 1);
    let closed = about("circuit breaker closed");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["level"], "INFO");
    let per_refused_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .filter(|l| l["span"]["request_id"].as_str().is_some_and(|id| refused.iter().any(|r| r == id)))
        .collect();
    assert!(per_refused_request.is_empty(), "{} refused requests logged: {per_refused_request:#?}", refused.len());
}

#[tokio::test]
async fn not_found_and_not_ready_answers_never_open_the_breaker() {
    // As eager as a breaker can be: any failure opens it.
    let eager = "    circuit_breaker: { consecutive_failures: 1, failure_ratio: 0.01, min_calls: 1 }";
    let gw = TestGateway::start_with(Setup { pbx: eager.to_owned(), ai: eager.to_owned(), ..Setup::default() }).await;

    for i in 0..10 {
        // Yeastar: errcode 60001 (no such summary) and errcode 2 (still processing).
        let unknown = format!("20990101{i:06}-00000");
        expect_problem(gw.summarize(&body_of(&unknown)).await, 404, "not_found").await;
        let processing = format!("20260513{i:06}-7A1F0");
        gw.sim.add_record(providers::yeastar::simulator::SimRecord {
            state: RecordState::Processing,
            ..record(&processing)
        });
        expect_problem(gw.summarize(&body_of(&processing)).await, 409, "conversation_not_ready").await;
        // ElevateAI: HTTP 404 (no such interaction) and 409 (audio still processing).
        let body = elevateai_body("ai", "summary", &uuid::Uuid::new_v4().to_string());
        expect_problem(gw.summarize(&body).await, 404, "not_found").await;
        let body = elevateai_body("ai", "summary", elevateai::PROCESSING_CALL);
        expect_problem(gw.summarize(&body).await, 409, "conversation_not_ready").await;
    }
    assert_eq!(gw.sim.stats().summary_calls, 20, "every request reached the PBX");
    assert_eq!(gw.elevateai.stats().requests.get("summary"), Some(&20), "and ElevateAI");
    let list: Value = gw.get("/v1/providers").send().await.unwrap().json().await.unwrap();
    for name in ["pbx", "ai"] {
        let entry = list["data"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(entry["status"], "available", "{entry}");
    }
    // Still closed: a real answer goes through.
    assert_eq!(gw.summarize(&docs_request()).await.status(), 200);
}

#[tokio::test]
async fn a_jobs_polls_wait_out_an_open_breaker_without_calling_and_the_job_still_completes() {
    let gw = TestGateway::start_with(Setup {
        cb: "    circuit_breaker: { consecutive_failures: 2, open_for: 1s }".into(),
        ..Setup::default()
    })
    .await;
    let submitted = gw.summarize(&commbox_body("breaker")).await;
    assert_eq!(submitted.status(), 202);
    let id = submitted.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // The next two polls fail with 500: the breaker opens.
    gw.commbox.fail_next(500, 2);
    let cb = Arc::clone(&gw.app.live().providers["cb"]);
    eventually("the breaker opens", || cb.circuit_state() == CircuitState::Open).await;
    let polls_when_opened = gw.commbox.stats().polls;

    let done = gw.get(&format!("/v1/summaries/{id}?wait=10")).send().await.unwrap();
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(gw.commbox.stats().polls, polls_when_opened + 1, "while open the poller called nothing; then one trial");
    assert_eq!(cb.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn with_redis_a_replica_whose_call_fails_while_anothers_breaker_is_open_opens_too() {
    let redis = TestRedis::new("breaker");
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let vendor = Flaky::start(sim.addr).await;
    let store = format!("store:\n  redis_url: {}\n  key_prefix: {}\n", redis.url(), redis.prefix());
    let pbx = "    circuit_breaker: { consecutive_failures: 3, open_for: 10s }";
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(format!("{store}{}", config_yaml(&vendor.url(), "", pbx)).as_bytes()).unwrap();
    let (a, b) = (GatewayProcess::spawn(file.path(), &[]), GatewayProcess::spawn(file.path(), &[]));
    let http = client();
    let summarize = |gw: &GatewayProcess| {
        http.post(format!("{}/v1/summaries", gw.url())).bearer_auth(KEY).json(&docs_request()).send()
    };

    for _ in 0..3 {
        expect_problem(summarize(&a).await.unwrap(), 503, "provider_unavailable").await;
    }
    assert_eq!(status_of(&http, &a.url(), "pbx").await, "circuit_open");
    let mark = format!("{}:{{shared:breaker:pbx:open}}", redis.prefix());
    let left = crate::redis_support::pttl(&mut redis.connection(), &mark);
    assert!((1..=10_000).contains(&left), "{mark}: PTTL {left}");

    // B has seen nothing yet; its first failed call finds A's mark.
    assert_eq!(status_of(&http, &b.url(), "pbx").await, "available");
    expect_problem(summarize(&b).await.unwrap(), 503, "provider_unavailable").await;
    assert_eq!(vendor.dead_hits(), 4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&http, &b.url(), "pbx").await != "circuit_open" {
        assert!(Instant::now() < deadline, "B did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let problem = expect_problem(summarize(&b).await.unwrap(), 503, "provider_unavailable").await;
        assert!(problem["detail"].as_str().unwrap().contains("circuit open"), "{problem}");
    }
    assert_eq!(vendor.dead_hits(), 4, "the fleet spent 4 calls on the dead vendor, not 3 per replica");
}
