//! Several replicas of the real binary sharing one Redis behave as one gateway:
//! any replica answers any id, one vendor call for identical requests across
//! replicas, jobs and webhooks survive a SIGKILLed replica, long-polls wake
//! across replicas, rate limits hold in total, a Redis outage degrades instead
//! of failing, and every key the gateway writes expires.
//!
//! Each test has its own key prefix (or its own `redis-server`), its own
//! simulators and its own gateway processes, so they run in parallel with each
//! other and with the rest of the suite.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use providers::commbox::simulator::{self as commbox, CommBoxSimulator};
use providers::elevateai::simulator::{self as elevateai, ElevateAiSimulator, OUTAGE_CHAT};
use providers::yeastar::simulator::{self as yeastar, YeastarSimulator};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{
    GatewayProcess, KEY, Receiver, WEBHOOK_SECRET, body_of, client, commbox_body, commbox_yaml, config_yaml,
    docs_request, elevateai_yaml, eventually, record, start_receiver, verify,
};
use crate::redis_support::{PrivateRedis, TestRedis, key_type, pttl, unique_prefix};

/// A key limited to 10 requests a second with a burst of 10, across all replicas.
const LIMITED_KEY: &str = "limited-test-key-0123456789";
/// A caller with a daily quota of 5 requests.
const BUDGET_KEY: &str = "budget-test-key-0123456789";

/// Configured TTLs, each different so a key's PTTL tells which one it got.
const SUMMARY_TTL: Duration = Duration::from_secs(3600);
const FAILURE_TTL: Duration = Duration::from_secs(120);
const QUESTION_TTL: Duration = Duration::from_secs(1800);

/// How a test's replicas are set up.
struct Options<'a> {
    replicas: usize,
    redis_url: &'a str,
    key_prefix: &'a str,
    /// `store.timeout`.
    store_timeout: &'a str,
}

impl<'a> Options<'a> {
    fn new(replicas: usize, redis: &'a TestRedis) -> Self {
        Self { replicas, redis_url: redis.url(), key_prefix: redis.prefix(), store_timeout: "500ms" }
    }
}

/// Gateway processes sharing one Redis, in front of in-process simulators.
struct Cluster {
    yeastar: yeastar::RunningSimulator,
    commbox: commbox::RunningSimulator,
    _elevateai: elevateai::RunningSimulator,
    replicas: Vec<GatewayProcess>,
    http: reqwest::Client,
    config: tempfile::NamedTempFile,
}

impl Cluster {
    async fn start(options: Options<'_>) -> Self {
        let yeastar = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
        let commbox = CommBoxSimulator::start(commbox::SimOptions {
            processing: Duration::from_millis(100),
            ..commbox::SimOptions::default()
        })
        .await
        .unwrap();
        let elevateai = ElevateAiSimulator::start(elevateai::SimOptions::default()).await.unwrap();
        let Options { replicas, redis_url, key_prefix, store_timeout } = options;
        let store = format!(
            "store:\n  redis_url: {redis_url}\n  key_prefix: {key_prefix}\n  job_lease: 1s\n  timeout: {store_timeout}\n  \
             summary_ttl: {}s\n  failure_ttl: {}s\n  question_ttl: {}s\n",
            SUMMARY_TTL.as_secs(),
            FAILURE_TTL.as_secs(),
            QUESTION_TTL.as_secs()
        );
        let webhooks =
            "webhooks:\n  allow_private_networks: true\n  timeout: 1s\n  retry_initial: 100ms\n  retry_max: 300ms\n";
        let base = format!(
            "{}{}{}{store}{webhooks}",
            config_yaml(&yeastar.base_url(), "", ""),
            commbox_yaml(&commbox.base_url(), ""),
            elevateai_yaml(&elevateai.base_url(), ""),
        );
        let limited = format!(
            "auth:\n  keys:\n    limited:\n      key: {LIMITED_KEY}\n      rate_limit: {{ per_second: 10, burst: 10 }}\n    \
             budget:\n      key: {BUDGET_KEY}\n      quota: {{ requests: 5, per: day }}\n"
        );
        let yaml = base.replacen("auth:\n  keys:\n", &limited, 1);
        assert_ne!(yaml, base, "the limited key was added");
        let mut config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        config.write_all(yaml.as_bytes()).unwrap();
        let mut cluster =
            Self { yeastar, commbox, _elevateai: elevateai, replicas: Vec::new(), http: client(), config };
        cluster.add_replicas(replicas).await;
        cluster
    }

    /// Starts `n` more replicas (in parallel) and waits until they listen.
    async fn add_replicas(&mut self, n: usize) {
        let starting: Vec<_> = (0..n)
            .map(|_| {
                let path = self.config.path().to_owned();
                tokio::task::spawn_blocking(move || GatewayProcess::spawn(&path, &[]))
            })
            .collect();
        for replica in starting {
            self.replicas.push(replica.await.unwrap());
        }
    }

    fn url(&self, replica: usize) -> String {
        self.replicas[replica].url()
    }

    fn get(&self, replica: usize, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url(replica))).bearer_auth(KEY).timeout(Duration::from_secs(30))
    }

    fn post(&self, replica: usize, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url(replica))).bearer_auth(KEY).timeout(Duration::from_secs(30))
    }

    async fn summarize(&self, replica: usize, body: &Value) -> reqwest::Response {
        self.post(replica, "/v1/summaries").json(body).send().await.unwrap()
    }

    /// POST /v1/summaries, answered in time: (status, `Cache-Status`, body).
    async fn summarize_within(&self, replica: usize, body: &Value, limit: Duration) -> (u16, String, Value) {
        let started = Instant::now();
        let r = self.post(replica, "/v1/summaries").json(body).timeout(limit * 3).send().await;
        let r = r.unwrap_or_else(|e| panic!("replica {replica} did not answer {body} in {:?}: {e}", limit * 3));
        let elapsed = started.elapsed();
        let status = r.status().as_u16();
        eprintln!("replica {replica}: {status} in {elapsed:?}");
        let cache = r.headers().get("cache-status").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(elapsed <= limit, "replica {replica} took {elapsed:?} (> {limit:?}) to answer {status} {body}");
        (status, cache, body)
    }

    /// GET /v1/summaries/{id}?wait=N: (status, body).
    async fn wait_for(&self, replica: usize, id: &str, secs: u64) -> (u16, Value) {
        let r = self.get(replica, &format!("/v1/summaries/{id}?wait={secs}")).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// GET /readyz: (status, body).
    async fn readyz(&self, replica: usize) -> (u16, Value) {
        let r = self.http.get(format!("{}/readyz", self.url(replica))).timeout(Duration::from_secs(5)).send().await;
        let r = r.unwrap_or_else(|e| panic!("replica {replica}: /readyz did not answer: {e}"));
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Polls /readyz until it answers 200 with this `status`, failing on any
    /// other HTTP status (a Redis outage must never take a replica out of the ingress).
    async fn until_ready_status(&self, replica: usize, want: &str) {
        until(&format!("replica {replica}: /readyz {want}"), Duration::from_secs(10), async || {
            let (status, body) = self.readyz(replica).await;
            assert_eq!(status, 200, "replica {replica}: /readyz {body}");
            assert_eq!(body["store"], "redis", "{body}");
            (body["status"] == want).then_some(())
        })
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // What the replicas said, for the failure report: warnings and errors, then the tail.
        for (i, replica) in self.replicas.iter().enumerate() {
            let output = replica.output();
            let lines: Vec<&str> = output.lines().collect();
            let notable: Vec<&str> =
                lines.iter().copied().filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")).collect();
            eprintln!("--- replica {i} ({}): warnings and errors (last 40)", replica.addr);
            for line in &notable[notable.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
            eprintln!("--- replica {i}: last 25 lines");
            for line in &lines[lines.len().saturating_sub(25)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Polls `probe` until it gives `Some`, at most `limit`: for states only a
/// request can observe.
async fn until<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on 127.0.0.1: (its `/hook` URL, what it records).
async fn webhook_receiver() -> (String, Receiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let rx = Receiver::default();
    start_receiver(listener, rx.clone());
    (hook, rx)
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap_or_else(|| panic!("no id in {resource}")).to_owned()
}

// Each scenario runs on the shared test Redis, and again on a Redis Cluster of
// its own (`on_a_cluster`).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_summary_made_on_one_replica_is_read_from_another() {
    read_anywhere(TestRedis::new("read-anywhere")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_of_a_killed_replica_is_finished_by_another_and_its_webhook_delivered() {
    job_takeover(TestRedis::new("failover")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_on_one_replica_wakes_when_the_job_completes_on_another() {
    wake_across(TestRedis::new("wake")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_identical_requests_on_each_of_three_replicas_make_one_vendor_call() {
    one_vendor_call(TestRedis::new("single-flight")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_three_replicas() {
    fleet_rate_limit(TestRedis::new("rate-limit")).await;
}

/// The same scenarios on a 3-master Redis Cluster with a replica per master
/// (`TestCluster`): keys spread over the masters by hash tag, events by the
/// cluster's forwarding of `PUBLISH` to every node.
mod on_a_cluster {
    use crate::redis_support::TestRedis;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_summary_made_on_one_replica_is_read_from_another() {
        super::read_anywhere(TestRedis::cluster("read-anywhere")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_job_of_a_killed_replica_is_finished_by_another_and_its_webhook_delivered() {
        super::job_takeover(TestRedis::cluster("failover")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_wait_on_one_replica_wakes_when_the_job_completes_on_another() {
        super::wake_across(TestRedis::cluster("wake")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twenty_identical_requests_on_each_of_three_replicas_make_one_vendor_call() {
        super::one_vendor_call(TestRedis::cluster("single-flight")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rate_limit_holds_across_three_replicas() {
        super::fleet_rate_limit(TestRedis::cluster("rate-limit")).await;
    }
}

async fn read_anywhere(redis: TestRedis) {
    let c = Cluster::start(Options::new(2, &redis)).await;

    let r = c.summarize(0, &docs_request()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-status"], "summary-gateway; fwd=miss");
    let made: Value = r.json().await.unwrap();
    let id = id_of(&made);
    let calls = c.yeastar.sim.stats().summary_calls;

    // By id on the other replica.
    let r = c.get(1, &format!("/v1/summaries/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(r.json::<Value>().await.unwrap(), made);
    // The same request on the other replica: the same resource, no vendor call.
    let r = c.summarize(1, &docs_request()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-status"], "summary-gateway; hit");
    assert_eq!(r.json::<Value>().await.unwrap(), made);
    assert_eq!(c.yeastar.sim.stats().summary_calls, calls, "B answered from the shared store");

    // A job started on B is answered by id on A, final.
    let r = c.summarize(1, &commbox_body("read anywhere")).await;
    assert_eq!(r.status(), 202);
    let job = id_of(&r.json().await.unwrap());
    let (status, done) = c.wait_for(0, &job, 15).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "{done}");
    // An id no replica made is 404 everywhere.
    let r = c.get(0, "/v1/summaries/sum_0123456789abcdef0123456789abcdef").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

async fn job_takeover(redis: TestRedis) {
    let mut c = Cluster::start(Options::new(2, &redis)).await;
    let con = RefCell::new(redis.connection());
    let (hook, rx) = webhook_receiver().await;

    let mut body = commbox_body("[sim:hold] failover");
    body["callback_url"] = json!(hook);
    let r = c.summarize(0, &body).await;
    assert_eq!(r.status(), 202);
    let id = id_of(&r.json().await.unwrap());
    let lease = format!("{}:{{jobs}}:lease:{id}", redis.prefix());
    eventually("the job's lease", || pttl(&mut con.borrow_mut(), &lease) > 0).await;
    let left = pttl(&mut con.borrow_mut(), &lease);
    assert!(left <= 1000, "the lease lasts job_lease (1s), not {left} ms");
    let jobs = format!("{}:{{jobs}}:jobs", redis.prefix());
    let in_jobs: bool = redis::cmd("HEXISTS").arg(jobs).arg(&id).query(&mut *con.borrow_mut()).unwrap();
    assert!(in_jobs, "the pending job is in the shared job table");

    // A dies without a word while CommBox is still working.
    c.replicas[0].kill();
    let killed = Instant::now();
    let polls = c.commbox.sim.stats().polls;
    let commbox = c.commbox.sim.clone();
    eventually("replica B to take the job over and poll CommBox", || commbox.stats().polls >= polls + 2).await;
    let takeover = killed.elapsed();
    eprintln!("B polls A's job {takeover:?} after A was killed");
    assert!(takeover < Duration::from_secs(5), "took over after {takeover:?} (job_lease 1s)");

    c.commbox.sim.release();
    let (status, done) = c.wait_for(1, &id, 15).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "{done}");
    eventually("the webhook, delivered by B", || !rx.got.lock().unwrap().is_empty()).await;
    let (headers, delivered) = rx.got.lock().unwrap()[0].clone();
    verify(WEBHOOK_SECRET, &headers, &delivered);
    let resource: Value = serde_json::from_slice(&delivered).unwrap();
    assert_eq!((resource["id"].as_str(), resource["status"].as_str()), (Some(id.as_str()), Some("completed")));
    assert_eq!(c.commbox.sim.stats().submits, 1, "B resumed A's vendor job instead of submitting another");

    let outbox = format!("{}:{{jobs}}:outbox", redis.prefix());
    eventually("the delivered webhook to leave the outbox", || {
        redis::cmd("HLEN").arg(&outbox).query::<u64>(&mut *con.borrow_mut()).unwrap() == 0
    })
    .await;
}

/// A webhook receiver that leaves every delivery unanswered until `open`
/// (the replica sending it dies mid-request), then answers 204.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    rx: Receiver,
}

async fn gated(
    axum::extract::State(gate): axum::extract::State<Gate>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    *gate.rx.attempts.lock().unwrap() += 1;
    if !gate.open.load(Ordering::SeqCst) {
        // Longer than any test: the sender gives up (webhooks.timeout) or dies first.
        tokio::time::sleep(Duration::from_secs(120)).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    gate.rx.got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_cut_off_by_a_killed_replica_is_delivered_by_another() {
    let redis = TestRedis::new("outbox-failover");
    // One replica at first, so that it is the one delivering.
    let mut c = Cluster::start(Options::new(1, &redis)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let gate = Gate::default();
    let app = Router::new().route("/hook", post(gated)).with_state(gate.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut body = commbox_body("outbox failover");
    body["callback_url"] = json!(hook);
    let r = c.post(0, "/v1/summaries").header("prefer", "wait=10").json(&body).send().await.unwrap();
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let attempts = Arc::clone(&gate.rx.attempts);
    eventually("A's delivery to be in progress", || *attempts.lock().unwrap() >= 1).await;

    // B joins, A dies mid-delivery; only then does the receiver answer, so
    // whatever it gets came from B.
    c.add_replicas(1).await;
    c.replicas[0].kill();
    gate.open.store(true, Ordering::SeqCst);
    // A's claim on the delivery outlives any attempt of its own (the gateway
    // leases it for 2 × webhooks.timeout + 5 s = 7 s here), then B may take it.
    let killed = Instant::now();
    let got = Arc::clone(&gate.rx.got);
    until("B to deliver the webhook A was sending", Duration::from_secs(15), async || {
        (!got.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    eprintln!("B delivered {:?} after A was killed", killed.elapsed());
    let (headers, delivered) = got.lock().unwrap()[0].clone();
    verify(WEBHOOK_SECRET, &headers, &delivered);
    assert_eq!(serde_json::from_slice::<Value>(&delivered).unwrap()["id"], done["id"]);
}

async fn wake_across(redis: TestRedis) {
    let c = Cluster::start(Options::new(2, &redis)).await;
    let r = c.summarize(0, &commbox_body("[sim:hold] wake across")).await;
    assert_eq!(r.status(), 202);
    let id = id_of(&r.json().await.unwrap());

    let waits: Vec<_> = (0..10)
        .map(|_| {
            let request = c.get(1, &format!("/v1/summaries/{id}?wait=30")).send();
            tokio::spawn(async move {
                let r = request.await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // The job is released only once B's metrics show its long-polls parked and
    // Redis counts both replicas on the fleet's event channel: from then on, only
    // the event of the job's end on A can answer B's waits early.
    until("B's long-polls to park", Duration::from_secs(10), async || {
        let metrics = c.get(1, "/metrics").send().await.unwrap().text().await.unwrap();
        metrics.lines().any(|l| l == "sg_long_polls_waiting 10").then_some(())
    })
    .await;
    until("both replicas to subscribe to the fleet's events", Duration::from_secs(10), async || {
        (event_subscribers(&redis) == 2).then_some(())
    })
    .await;
    assert!(waits.iter().all(|w| !w.is_finished()), "waits on B are parked while the job is pending");

    c.commbox.sim.release();
    let released = Instant::now();
    // Without the wake-up B would still answer `completed`, but only when its
    // 30 s wait runs out (it reads the store again then): only the time tells
    // the two apart, so the bound is generous for a loaded machine yet far
    // from 30 s.
    let woken_by = tokio::time::Instant::now() + Duration::from_secs(10);
    for wait in waits {
        let (status, resource) = tokio::time::timeout_at(woken_by, wait)
            .await
            .expect("B's waits were not woken when the job completed on A")
            .unwrap();
        assert_eq!((status, resource["status"].as_str()), (200, Some("completed")), "{resource}");
    }
    eprintln!("B's waits answered {:?} after the release", released.elapsed());
}

/// Subscribers of the fleet's event channel (`<prefix>:events`), as Redis counts
/// them (on a cluster: summed over the nodes, each counting its own).
fn event_subscribers(redis: &TestRedis) -> i64 {
    let channel = format!("{}:events", redis.prefix());
    redis
        .nodes()
        .iter()
        .map(|node| {
            let mut con = crate::redis_support::connect(node).unwrap();
            let (_, subscribers): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(&mut con).unwrap();
            subscribers
        })
        .sum()
}

async fn one_vendor_call(redis: TestRedis) {
    let c = Cluster::start(Options::new(3, &redis)).await;
    // Each replica logs in to the PBX first (an uncached 409), then the PBX slows
    // down so that all 60 requests overlap the one summary call.
    for replica in 0..3 {
        assert_eq!(c.summarize(replica, &body_of("20260513231500-7A1F0")).await.status(), 409);
    }
    c.yeastar.sim.set_latency(Duration::from_millis(300));
    let before = c.yeastar.sim.stats().summary_calls;
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let request = c.post(i % 3, "/v1/summaries").json(&docs_request()).send();
            tokio::spawn(async move {
                let r = request.await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        let (status, resource) = call.await.unwrap();
        assert_eq!(status, 200, "{resource}");
        ids.push(id_of(&resource));
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(c.yeastar.sim.stats().summary_calls - before, 1, "3 replicas × 20 identical requests, one PBX call");

    // The same for a job: one CommBox submission.
    let body = commbox_body("[sim:hold] one job for all");
    let submits: Vec<_> = (0..60)
        .map(|i| {
            let request = c.post(i % 3, "/v1/summaries").json(&body).send();
            tokio::spawn(async move {
                let r = request.await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for submit in submits {
        let (status, resource) = submit.await.unwrap();
        assert_eq!(status, 202, "{resource}");
        ids.push(id_of(&resource));
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(c.commbox.sim.stats().submits, 1, "3 replicas × 20 identical jobs, one CommBox submission");
    c.commbox.sim.release();
    let (status, done) = c.wait_for(2, &ids[0], 15).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "{done}");
}

async fn fleet_rate_limit(redis: TestRedis) {
    let c = Cluster::start(Options::new(3, &redis)).await;
    let run = Duration::from_secs(3);
    let started = Instant::now();
    // 8 callers, each round-robin over the replicas, ~100 requests/s each:
    // far more than 10/s at every replica.
    let callers: Vec<_> = (0..8_usize)
        .map(|caller| {
            let http = c.http.clone();
            let urls: Vec<String> = (0..3).map(|r| c.url(r)).collect();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = caller;
                while started.elapsed() < run {
                    let r = http
                        .get(format!("{}/v1/providers", urls[i % 3]))
                        .bearer_auth(LIMITED_KEY)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    if status == 429 {
                        assert!(r.headers().contains_key("retry-after"), "429 without Retry-After");
                    }
                    seen.push(status);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for caller in callers {
        statuses.extend(caller.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(allowed + limited, statuses.len(), "only 200 and 429: {statuses:?}");
    // GCRA: at most the burst plus the rate over the time that passed (+1 for rounding).
    eprintln!("{allowed} allowed, {limited} limited in {elapsed:.2}s");
    let allowed_f = f64::from(u32::try_from(allowed).unwrap());
    let ceiling = 10.0 * elapsed + 10.0 + 1.0;
    assert!(
        allowed_f <= ceiling,
        "{allowed} allowed in {elapsed:.2}s across 3 replicas: over 10/s + burst 10 ({ceiling:.0}); \
         each replica limiting on its own would allow about {:.0}",
        3.0 * (10.0 * elapsed + 10.0)
    );
    assert!(allowed >= 10, "at least the burst is allowed: {allowed} of {}", statuses.len());
    assert!(limited > 0, "the callers asked for more than the limit");

    let key = format!("{}:{{rl:limited}}:gcra", redis.prefix());
    let left = pttl(&mut redis.connection(), &key);
    assert!(left > 0 && left <= 60_000, "{key}: PTTL {left} ms (keys: {:?})", redis.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_degrades_the_replicas_and_jobs_resume_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let prefix = unique_prefix("outage");
    let c = Cluster::start(Options { replicas: 2, redis_url: &url, key_prefix: &prefix, store_timeout: "300ms" }).await;
    for cdr in 0..8 {
        c.yeastar.sim.add_record(record(&format!("20260601000000-{cdr:05}")));
    }
    let fresh = |n: usize| body_of(&format!("20260601000000-{n:05}"));
    let limit = Duration::from_secs(2);
    for replica in 0..2 {
        c.until_ready_status(replica, "ready").await;
    }
    // Before the outage: a completed summary and a job CommBox keeps pending.
    let (status, _, before) = c.summarize_within(0, &docs_request(), limit).await;
    assert_eq!(status, 200, "{before}");
    let r = c.summarize(0, &commbox_body("[sim:hold] across the outage")).await;
    assert_eq!(r.status(), 202);
    let job = id_of(&r.json().await.unwrap());

    // A slow Redis (frozen: connections accepted, nothing answered).
    redis.pause();
    for replica in 0..2 {
        let (status, _, s) = c.summarize_within(replica, &fresh(replica), limit).await;
        assert_eq!((status, s["status"].as_str()), (200, Some("completed")), "slow Redis, new: {s}");
        let (status, _, s) = c.summarize_within(replica, &docs_request(), limit).await;
        assert_eq!((status, s["id"].clone()), (200, before["id"].clone()), "slow Redis, repeated: {s}");
    }
    for replica in 0..2 {
        c.until_ready_status(replica, "degraded").await;
    }
    redis.resume();
    for replica in 0..2 {
        c.until_ready_status(replica, "ready").await;
    }

    // Redis gone.
    redis.stop();
    for replica in 0..2 {
        let (status, _, s) = c.summarize_within(replica, &fresh(2 + replica), limit).await;
        assert_eq!((status, s["status"].as_str()), (200, Some("completed")), "Redis down, new: {s}");
        let (status, _, s) = c.summarize_within(replica, &docs_request(), limit).await;
        assert_eq!((status, s["id"].clone()), (200, before["id"].clone()), "Redis down, repeated: {s}");
    }
    for replica in 0..2 {
        c.until_ready_status(replica, "degraded").await;
        let (_, ready) = c.readyz(replica).await;
        assert_eq!(ready["store"], "redis", "{ready}");
        // A new job cannot be kept: refused, not accepted and lost.
        let (status, _, problem) = c.summarize_within(replica, &commbox_body("during the outage"), limit).await;
        assert_eq!(status, 503, "Redis down, new job: {problem}");
        let code = problem["code"].as_str().unwrap_or_default();
        assert!(matches!(code, "provider_unavailable" | "overloaded"), "{problem}");
        // The pending job is not lost either; whatever the answer, never a 500.
        let r = c.get(replica, &format!("/v1/summaries/{job}")).timeout(limit * 3).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 200 | 503), "Redis down, GET pending job: {}", r.status());
    }

    // Redis back, with its data.
    redis.start_again();
    for replica in 0..2 {
        c.until_ready_status(replica, "ready").await;
    }
    let r = c.summarize(1, &commbox_body("after the outage")).await;
    assert_eq!(r.status(), 202, "jobs are accepted again");
    let after = id_of(&r.json().await.unwrap());
    c.commbox.sim.release();
    let (status, done) = c.wait_for(1, &job, 15).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "the job from before the outage: {done}");
    let (status, done) = c.wait_for(0, &after, 15).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "the job from after the outage: {done}");
}

/// Asserts that `key` expires within (`ttl` - 60 s, `ttl`].
fn assert_ttl(con: &mut dyn redis::ConnectionLike, key: &str, ttl: Duration) {
    let left = pttl(con, key);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap();
    assert!(left > ttl_ms - 60_000 && left <= ttl_ms, "{key}: PTTL {left} ms, expected about {ttl_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_keys_expire_as_configured() {
    let redis = TestRedis::new("ttl");
    let c = Cluster::start(Options::new(1, &redis)).await;
    let con = RefCell::new(redis.connection());
    let p = redis.prefix();

    let r = c.summarize(0, &docs_request()).await;
    assert_eq!(r.status(), 200);
    let completed = id_of(&r.json().await.unwrap());
    assert_ttl(&mut *con.borrow_mut(), &format!("{p}:{{{completed}}}:summary"), SUMMARY_TTL);

    let r = c.post(0, "/v1/summaries").header("prefer", "wait=10").json(&commbox_body("[sim:fail] ttl")).send();
    let failed: Value = r.await.unwrap().json().await.unwrap();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_ttl(&mut *con.borrow_mut(), &format!("{p}:{{{}}}:summary", id_of(&failed)), FAILURE_TTL);

    let question =
        json!({"provider": "ai", "conversation": {"id": OUTAGE_CHAT}, "question": "When did the outage start?"});
    let r = c.post(0, "/v1/questions").json(&question).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ttl(&mut *con.borrow_mut(), &format!("{p}:{{q:ai:{OUTAGE_CHAT}}}:ledger"), QUESTION_TTL);

    // Finished jobs leave the job table; nothing else is kept forever.
    let jobs = format!("{p}:{{jobs}}:jobs");
    eventually("the failed job to leave the job table", || {
        redis::cmd("HLEN").arg(&jobs).query::<u64>(&mut *con.borrow_mut()).unwrap() == 0
    })
    .await;
    let tables = [jobs, format!("{p}:{{jobs}}:outbox"), format!("{p}:{{jobs}}:due")];
    let mut con = con.into_inner();
    let mut forever = Vec::new();
    for key in redis.keys() {
        eprintln!("{key}: {} ms ({})", pttl(&mut con, &key), key_type(&mut con, &key));
        if !tables.contains(&key) && pttl(&mut con, &key) == -1 {
            forever.push(format!("{key} ({})", key_type(&mut con, &key)));
        }
    }
    assert!(forever.is_empty(), "keys without expiry: {forever:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_holds_across_three_replicas() {
    let redis = TestRedis::new("quota");
    let c = Cluster::start(Options::new(3, &redis)).await;
    // 12 at once, 4 at each replica, for a fleet-wide quota of 5.
    let requests: Vec<_> = (0..12_usize)
        .map(|i| {
            c.http
                .post(format!("{}/v1/summaries", c.url(i % 3)))
                .bearer_auth(BUDGET_KEY)
                .json(&docs_request())
                .timeout(Duration::from_secs(30))
                .send()
        })
        .collect();
    let mut statuses = Vec::new();
    for r in futures::future::join_all(requests).await {
        let r = r.unwrap();
        let status = r.status().as_u16();
        if status == 429 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "quota_exceeded", "{body}");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429], "5 of 12 for the fleet");

    let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let key = format!("{}:{{quota:budget}}:all:d{day}", redis.prefix());
    let mut con = redis.connection();
    let used: i64 =
        redis::cmd("GET").arg(&key).query(&mut con).unwrap_or_else(|e| panic!("{key}: {e} (keys: {:?})", redis.keys()));
    assert_eq!(used, 5, "{key}: refused requests are not charged");
    let left = pttl(&mut con, &key);
    assert!(left > 0 && left <= 86_400_000 * 2, "{key}: PTTL {left} ms");
}
