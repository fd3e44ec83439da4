//! Graceful rollouts: SIGTERM under load fails no request.
//!
//! The drain sequence (`server.shutdown_delay`, `server.drain_timeout`): on
//! SIGTERM `/readyz` answers 503 `not_ready` at once and long-polls answer with
//! the current state; for `shutdown_delay` the gateway keeps serving new requests
//! (the load balancer needs that long to drop it); then it stops accepting, lets
//! in-flight requests and background work finish (at most `drain_timeout`) and
//! exits 0. With Redis its pending jobs go to another replica; with the memory
//! store it keeps polling them.
//!
//! Every test runs the real binary: signals are what is tested.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use providers::commbox::simulator::{self as commbox, CommBoxSimulator};
use providers::yeastar::simulator::{self as yeastar, YeastarSimulator};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::common::{
    GatewayProcess, KEY, Receiver, WEBHOOK_SECRET, body_of, client, commbox_body, commbox_yaml, config_yaml,
    docs_request, eventually, record, start_receiver, verify,
};
use crate::redis_support::TestRedis;

/// Fast webhook retries to loopback receivers.
const WEBHOOKS: &str =
    "webhooks:\n  allow_private_networks: true\n  timeout: 1s\n  retry_initial: 100ms\n  retry_max: 300ms\n";

/// Lines under `server:`.
fn server_lines(shutdown_delay: &str, drain_timeout: &str) -> String {
    format!("  shutdown_delay: {shutdown_delay}\n  drain_timeout: {drain_timeout}")
}

fn config_file(yaml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    file
}

/// Starts the binary on `config` without blocking the runtime.
async fn spawn(config: &tempfile::NamedTempFile) -> GatewayProcess {
    let path = config.path().to_owned();
    tokio::task::spawn_blocking(move || GatewayProcess::spawn(&path, &[])).await.unwrap()
}

/// What SIGTERM came to: the exit code, the time from the signal to the exit,
/// and the process (for its output).
struct Exit {
    code: Option<i32>,
    took: Duration,
    gw: GatewayProcess,
}

/// SIGTERM now; the returned task ends when the process has exited (or was
/// killed after 30 s, with code `None`).
fn sigterm(mut gw: GatewayProcess) -> tokio::task::JoinHandle<Exit> {
    tokio::task::spawn_blocking(move || {
        let sent = Instant::now();
        let code = gw.terminate();
        Exit { code, took: sent.elapsed(), gw }
    })
}

/// A call leg the PBX knows (added with [`record`]): a miss the first time.
fn leg(n: usize) -> String {
    format!("20260601120000-{n:05}")
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap_or_else(|| panic!("no id: {resource}")).to_owned()
}

/// What `/readyz` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Ready,
    /// 503 `not_ready`.
    NotReady,
    /// No answer (refused, reset, timed out): not listening any more.
    Down,
}

/// The test's load balancer: probes each replica's `/readyz` every 50 ms and
/// sends requests round robin to those that answered 200 last.
struct Balancer {
    urls: Vec<String>,
    ready: Vec<AtomicBool>,
    /// Per replica, every change of its probe result, in order.
    changes: Vec<Mutex<Vec<(Instant, Probe)>>>,
    /// Probe answers outside the contract (a 503 that is not problem+json `not_ready`, ...).
    odd: Mutex<Vec<String>>,
    next: AtomicUsize,
    /// Stops the probes.
    stop: AtomicBool,
    /// Stops the load ([`generate_load`]).
    load_done: AtomicBool,
    /// Per replica, requests of the load answered so far.
    answered: Vec<AtomicUsize>,
    /// Notified at every answer of the load.
    progress: tokio::sync::Notify,
}

impl Balancer {
    /// Waits until replica `i` has answered `counts[i]` requests of the load, for every `i`.
    async fn until_answered(&self, counts: &[usize]) {
        loop {
            let notified = self.progress.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if counts.iter().zip(&self.answered).all(|(want, got)| got.load(Ordering::SeqCst) >= *want) {
                return;
            }
            tokio::time::timeout(Duration::from_secs(10), notified).await.expect("the load makes progress");
        }
    }

    fn start(urls: Vec<String>) -> Arc<Self> {
        let n = urls.len();
        let lb = Arc::new(Self {
            urls,
            ready: (0..n).map(|_| AtomicBool::new(false)).collect(),
            changes: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            odd: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            load_done: AtomicBool::new(false),
            answered: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            progress: tokio::sync::Notify::new(),
        });
        for replica in 0..n {
            let lb = Arc::clone(&lb);
            tokio::spawn(async move {
                let http = client();
                while !lb.stop.load(Ordering::SeqCst) {
                    let probe = lb.probe(&http, replica).await;
                    lb.ready[replica].store(probe == Probe::Ready, Ordering::SeqCst);
                    lb.record(replica, probe);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        lb
    }

    async fn probe(&self, http: &reqwest::Client, replica: usize) -> Probe {
        let url = format!("{}/readyz", self.urls[replica]);
        let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await else { return Probe::Down };
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let Ok(body) = r.json::<Value>().await else {
            // Cut while answering: going away.
            return Probe::Down;
        };
        match status {
            200 => Probe::Ready,
            503 => {
                if content_type != "application/problem+json" || body["code"] != "not_ready" {
                    self.odd.lock().unwrap().push(format!("replica {replica}: /readyz 503 {content_type} {body}"));
                }
                Probe::NotReady
            }
            _ => {
                self.odd.lock().unwrap().push(format!("replica {replica}: /readyz {status} {body}"));
                Probe::NotReady
            }
        }
    }

    fn record(&self, replica: usize, probe: Probe) {
        let mut changes = self.changes[replica].lock().unwrap();
        if changes.last().is_none_or(|(_, last)| *last != probe) {
            changes.push((Instant::now(), probe));
        }
    }

    /// The next ready replica, round robin.
    fn pick(&self) -> Option<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|&r| self.ready[r].load(Ordering::SeqCst))
    }

    fn changes(&self, replica: usize) -> Vec<(Instant, Probe)> {
        self.changes[replica].lock().unwrap().clone()
    }

    /// When the probes first saw `probe` on `replica`.
    fn first(&self, replica: usize, probe: Probe) -> Option<Instant> {
        self.changes(replica).into_iter().find(|(_, p)| *p == probe).map(|(t, _)| t)
    }

    async fn until_ready(&self, replica: usize) {
        let started = Instant::now();
        while !self.ready[replica].load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(10), "replica {replica} never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One kind of request in the load.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// The docs' example again: answered from the store.
    Hit,
    /// A call leg not asked for before: a PBX call.
    Miss(usize),
    /// A new CommBox job with `Prefer: wait=5`.
    LongPoll(usize),
}

/// What one request of the load came to.
struct Sent {
    replica: usize,
    at: Instant,
    load: Load,
    /// The status and body, or the transport error.
    answer: Result<(u16, Value), String>,
}

impl Sent {
    /// Why this answer breaks the contract, if it does.
    fn failure(&self) -> Option<String> {
        let (status, body) = match &self.answer {
            Ok(answer) => answer,
            Err(e) => return Some(format!("replica {}: {:?}: transport error: {e}", self.replica, self.load)),
        };
        let state = body["status"].as_str();
        let ok = match self.load {
            Load::Hit | Load::Miss(_) => (*status, state) == (200, Some("completed")),
            Load::LongPoll(_) => matches!((*status, state), (200, Some("completed")) | (202, Some("pending"))),
        };
        (!ok).then(|| format!("replica {}: {:?}: {status} {body}", self.replica, self.load))
    }

    /// The id of a job this request left pending.
    fn pending_job(&self) -> Option<String> {
        match &self.answer {
            Ok((202, body)) => Some(id_of(body)),
            _ => None,
        }
    }
}

async fn send(http: &reqwest::Client, url: &str, load: Load) -> Result<(u16, Value), String> {
    let request = http.post(format!("{url}/v1/summaries")).bearer_auth(KEY).timeout(Duration::from_secs(10));
    let request = match load {
        Load::Hit => request.json(&docs_request()),
        Load::Miss(n) => request.json(&body_of(&leg(n))),
        Load::LongPoll(n) => request.header("prefer", "wait=5").json(&commbox_body(&format!("rollout {n}"))),
    };
    let r = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.map_err(|e| format!("{status}, body cut: {e:?}"))?;
    Ok((status, body))
}

/// A steady stream until `lb.load_done`: one request every `every`, at most `concurrency`
/// in flight, each to the replica the balancer picks; half cache hits, 30 %
/// misses, 20 % CommBox long-polls. Requests with no ready replica to go to
/// count as failures.
async fn generate_load(lb: Arc<Balancer>, every: Duration, concurrency: usize) -> Vec<Sent> {
    let http = client();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = Vec::new();
    let mut unsent = Vec::new();
    let mut i = 0_usize;
    while !lb.load_done.load(Ordering::SeqCst) {
        tick.tick().await;
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let load = match i % 10 {
            0..5 => Load::Hit,
            5..8 => Load::Miss(i),
            _ => Load::LongPoll(i),
        };
        i += 1;
        let at = Instant::now();
        let Some(replica) = lb.pick() else {
            unsent.push(Sent { replica: usize::MAX, at, load, answer: Err("no ready replica".into()) });
            continue;
        };
        let (http, url, lb) = (http.clone(), lb.urls[replica].clone(), Arc::clone(&lb));
        in_flight.push(tokio::spawn(async move {
            let answer = send(&http, &url, load).await;
            lb.answered[replica].fetch_add(1, Ordering::SeqCst);
            lb.progress.notify_waiters();
            drop(permit);
            Sent { replica, at, load, answer }
        }));
    }
    let mut sent = unsent;
    for request in in_flight {
        sent.push(request.await.unwrap());
    }
    sent
}

/// Replica B of two on one Redis (A is returned on its own, to be SIGTERMed),
/// a PBX answering in 50 ms (and knowing 2000 call legs) and a CommBox
/// finishing jobs in 300 ms.
struct Fleet {
    _pbx: yeastar::RunningSimulator,
    cb: commbox::RunningSimulator,
    b: GatewayProcess,
    _config: tempfile::NamedTempFile,
}

impl Fleet {
    async fn start(redis: &TestRedis, shutdown_delay: Duration, drain_timeout: Duration) -> (Self, GatewayProcess) {
        let pbx = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
        let cb = CommBoxSimulator::start(commbox::SimOptions {
            processing: Duration::from_millis(300),
            ..commbox::SimOptions::default()
        })
        .await
        .unwrap();
        for n in 0..2000 {
            pbx.sim.add_record(record(&leg(n)));
        }
        let store = format!(
            "store:\n  redis_url: {}\n  key_prefix: {}\n  job_lease: 1s\n  timeout: 500ms\n",
            redis.url(),
            redis.prefix()
        );
        let server = server_lines(
            &humantime::format_duration(shutdown_delay).to_string(),
            &humantime::format_duration(drain_timeout).to_string(),
        );
        let config = config_file(&format!(
            "{}{}{store}{WEBHOOKS}",
            config_yaml(&pbx.base_url(), &server, ""),
            commbox_yaml(&cb.base_url(), ""),
        ));
        let (a, b) = tokio::join!(spawn(&config), spawn(&config));
        pbx.sim.set_latency(Duration::from_millis(50));
        (Self { _pbx: pbx, cb, b, _config: config }, a)
    }
}

/// `n` jobs CommBox keeps pending, started on (and so polled by) the replica at `url`.
async fn held_jobs(url: &str, n: usize) -> Vec<String> {
    let http = client();
    let mut held = Vec::new();
    for i in 0..n {
        let r = http
            .post(format!("{url}/v1/summaries"))
            .bearer_auth(KEY)
            .json(&commbox_body(&format!("[sim:hold] handover {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        held.push(id_of(&r.json().await.unwrap()));
    }
    held
}

/// A load balancer slow to drop A: once A's `/readyz` says 503, a hit, a miss
/// and a long-poll go to A anyway (answered: `shutdown_delay` is for them).
fn stragglers(lb: &Arc<Balancer>, a_url: String) -> tokio::task::JoinHandle<Vec<Sent>> {
    let lb = Arc::clone(lb);
    tokio::spawn(async move {
        eventually("A's /readyz to answer 503 or A to go", || lb.changes(0).iter().any(|(_, p)| *p != Probe::Ready))
            .await;
        if lb.first(0, Probe::NotReady).is_none() {
            // Gone without a 503: asserted below, with the probes' record.
            return Vec::new();
        }
        let http = client();
        let sent = [Load::Hit, Load::Miss(1999), Load::LongPoll(1_000_000)].map(|load| {
            let (http, url) = (http.clone(), a_url.clone());
            tokio::spawn(
                async move { Sent { replica: 0, at: Instant::now(), load, answer: send(&http, &url, load).await } },
            )
        });
        let mut answers = Vec::new();
        for s in sent {
            answers.push(s.await.unwrap());
        }
        answers
    })
}

/// A's `/readyz` said 503 soon after SIGTERM, and A kept listening for about
/// `shutdown_delay` after that; B was ready throughout.
fn assert_a_left_the_balancer_before_it_stopped_listening(lb: &Balancer, signalled: Instant, shutdown_delay: Duration) {
    let changes = lb.changes(0);
    let not_ready = lb.first(0, Probe::NotReady).unwrap_or_else(|| panic!("A's /readyz never said 503: {changes:?}"));
    let down = lb.first(0, Probe::Down).unwrap_or_else(|| panic!("A never stopped listening: {changes:?}"));
    eprintln!(
        "A: /readyz 503 {:?} after SIGTERM, stopped listening {:?} after that",
        not_ready.saturating_duration_since(signalled),
        down.saturating_duration_since(not_ready)
    );
    assert!(not_ready < down, "A stopped accepting before its /readyz said 503: {changes:?}");
    assert!(
        down - not_ready >= shutdown_delay / 2,
        "A stopped accepting {:?} after /readyz said 503: shutdown_delay is {shutdown_delay:?}",
        down - not_ready
    );
    assert!(not_ready.saturating_duration_since(signalled) < Duration::from_millis(500), "/readyz said 503 late");
    assert_eq!(lb.changes(1).iter().map(|(_, p)| *p).collect::<Vec<_>>(), [Probe::Ready], "B's /readyz");
    assert!(lb.odd.lock().unwrap().is_empty(), "{:?}", lb.odd.lock().unwrap());
}

/// A released the leases of `held` on its way out, and B finishes every job in
/// `jobs` once CommBox does.
async fn assert_b_finishes_a_jobs(fleet: &Fleet, redis: &TestRedis, a_pid: u32, held: &[String], jobs: &[String]) {
    let mut con = redis.connection();
    for id in held {
        let key = format!("{}:{{jobs}}:lease:{id}", redis.prefix());
        let holder: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert!(
            !holder.as_deref().is_some_and(|h| h.starts_with(&format!("{a_pid}-"))),
            "{id}: still leased by A ({holder:?}) after A exited; B is {}",
            fleet.b.pid()
        );
    }
    fleet.cb.sim.release();
    let released = Instant::now();
    let http = client();
    for id in jobs {
        let r = http.get(format!("{}/v1/summaries/{id}?wait=10", fleet.b.url())).bearer_auth(KEY).send().await.unwrap();
        let status = r.status().as_u16();
        let resource: Value = r.json().await.unwrap();
        assert_eq!((status, resource["status"].as_str()), (200, Some("completed")), "{id} on B: {resource}");
    }
    eprintln!("B finished A's {} pending jobs {:?} after the release", jobs.len(), released.elapsed());
}

/// The headline: two replicas on one Redis behind a load balancer that follows
/// `/readyz`; A is SIGTERMed in the middle of ~140 requests/s. Not one request
/// fails, A leaves the balancer before it stops listening, B serves the rest,
/// and the jobs A was polling are finished by B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    const SHUTDOWN_DELAY: Duration = Duration::from_secs(1);
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    let redis = TestRedis::new("rollout");
    let (fleet, a) = Fleet::start(&redis, SHUTDOWN_DELAY, DRAIN_TIMEOUT).await;
    let (a_pid, a_url) = (a.pid(), a.url());
    let held = held_jobs(&a_url, 3).await;

    let lb = Balancer::start(vec![a_url.clone(), fleet.b.url()]);
    lb.until_ready(0).await;
    lb.until_ready(1).await;
    let started = Instant::now();
    let load = tokio::spawn(generate_load(Arc::clone(&lb), Duration::from_millis(7), 16));

    // Once both replicas have answered a good part of the load, the rollout reaches A.
    lb.until_answered(&[80, 80]).await;
    let signalled = Instant::now();
    let exit = sigterm(a);
    let stragglers = stragglers(&lb, a_url);

    // The load goes on through A's whole drain, however slow the machine, and
    // until B has served a good part of it alone.
    let Exit { code, took, gw: a } = exit.await.unwrap();
    let b_so_far = lb.answered[1].load(Ordering::SeqCst);
    lb.until_answered(&[0, b_so_far + 100]).await;
    lb.load_done.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();
    let run = started.elapsed();
    let stragglers = stragglers.await.unwrap();
    lb.stop.store(true, Ordering::SeqCst);

    // Not one failure, in the load or among the stragglers.
    let failures: Vec<String> = sent.iter().chain(&stragglers).filter_map(Sent::failure).collect();
    let per_replica = |replica: usize, after: bool| {
        sent.iter().filter(|s| s.replica == replica && (s.at >= signalled) == after).count()
    };
    let drained_long_polls: Vec<String> = sent.iter().chain(&stragglers).filter_map(Sent::pending_job).collect();
    eprintln!(
        "{} requests in {run:?}: A {} before SIGTERM, {} after; B {} before, {} after; {} long-polls answered pending; \
         A exited {code:?} {took:?} after SIGTERM",
        sent.len(),
        per_replica(0, false),
        per_replica(0, true),
        per_replica(1, false),
        per_replica(1, true),
        drained_long_polls.len(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g.:\n{}\n--- A's output:\n{}",
        failures.len(),
        sent.len() + stragglers.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        a.output()
    );

    // A: out of the balancer first, then no longer listening, then exit 0 in time; B served the rest.
    assert_eq!(code, Some(0), "A's exit code; its output:\n{}", a.output());
    assert!(took < SHUTDOWN_DELAY + DRAIN_TIMEOUT, "A took {took:?} to exit");
    assert_a_left_the_balancer_before_it_stopped_listening(&lb, signalled, SHUTDOWN_DELAY);
    assert!(per_replica(0, false) > 20 && per_replica(1, true) > 100, "the load was spread, then went to B");

    // Handover: B finishes the jobs A was polling.
    let jobs: Vec<String> = held.iter().chain(&drained_long_polls).cloned().collect();
    assert_b_finishes_a_jobs(&fleet, &redis, a_pid, &held, &jobs).await;
}

/// Long-polls are answered with the current state on SIGTERM, not cut and not
/// held: the one in flight, and new ones arriving during `shutdown_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_polls_are_answered_at_once_on_sigterm() {
    let pbx = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let cb = CommBoxSimulator::start(commbox::SimOptions {
        processing: Duration::from_millis(100),
        ..commbox::SimOptions::default()
    })
    .await
    .unwrap();
    let config = config_file(&format!(
        "{}{}",
        config_yaml(&pbx.base_url(), &server_lines("3s", "10s"), ""),
        commbox_yaml(&cb.base_url(), ""),
    ));
    let gw = spawn(&config).await;
    let url = gw.url();
    let http = client();
    let post = |tag: &str| {
        http.post(format!("{url}/v1/summaries"))
            .bearer_auth(KEY)
            .header("prefer", "wait=20")
            .timeout(Duration::from_secs(30))
            .json(&commbox_body(&format!("[sim:hold] {tag}")))
            .send()
    };
    let get = |id: &str| {
        http.get(format!("{url}/v1/summaries/{id}?wait=20")).bearer_auth(KEY).timeout(Duration::from_secs(30)).send()
    };

    // A long-poll in flight on a job CommBox holds. (Should SIGTERM come before
    // it is parked, it is answered the same way: the test cannot pass wrongly.)
    let in_flight = tokio::spawn(post("in flight"));
    eventually("the job to be submitted", || cb.sim.stats().submits == 1).await;
    let signalled = Instant::now();
    let exit = sigterm(gw);
    let r = in_flight.await.unwrap().unwrap();
    let answered = signalled.elapsed();
    let status = r.status().as_u16();
    let pending: Value = r.json().await.unwrap();
    eprintln!("the long-poll in flight was answered {answered:?} after SIGTERM: {status}");
    assert_eq!((status, pending["status"].as_str()), (202, Some("pending")), "{pending}");
    assert!(answered < Duration::from_secs(2), "the long-poll in flight took {answered:?} after SIGTERM");
    let id = id_of(&pending);

    // During shutdown_delay (3 s): still serving, and new long-polls are answered at once.
    let started = Instant::now();
    let during = |e: reqwest::Error| -> reqwest::Response { panic!("not served during shutdown_delay: {e}") };
    let readyz = http.get(format!("{url}/readyz")).send().await.unwrap_or_else(during);
    assert_eq!(readyz.status(), 503, "/readyz while draining");
    let r = get(&id).await.unwrap_or_else(during);
    let (status, resource): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!((status, resource["status"].as_str()), (200, Some("pending")), "GET ?wait during the delay: {resource}");
    let r = post("new").await.unwrap_or_else(during);
    let (status, resource): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!((status, resource["status"].as_str()), (202, Some("pending")), "POST wait during the delay: {resource}");
    let took = started.elapsed();
    eprintln!("/readyz and two new long-polls answered {took:?} during shutdown_delay");
    assert!(took < Duration::from_secs(2), "new long-polls during shutdown_delay took {took:?}");
    assert!(signalled.elapsed() < Duration::from_secs(3), "all of it within shutdown_delay");

    // The memory store's pollers finish the jobs once CommBox does; then exit 0.
    cb.sim.release();
    let Exit { code, took, gw } = exit.await.unwrap();
    eprintln!("exited {code:?} {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{}", gw.output());
    assert!(took < Duration::from_secs(3 + 10), "took {took:?} to exit");
}

/// With the embedded store nobody else can finish a pending job: on SIGTERM the
/// gateway keeps polling it, delivers its webhook, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_memory_store_a_pending_job_finishes_and_its_webhook_is_sent_before_exit() {
    let pbx = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let cb = CommBoxSimulator::start(commbox::SimOptions {
        processing: Duration::from_millis(1500),
        ..commbox::SimOptions::default()
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let rx = Receiver::default();
    let _receiver = start_receiver(listener, rx.clone());
    let config = config_file(&format!(
        "{}{}{WEBHOOKS}",
        config_yaml(&pbx.base_url(), &server_lines("0s", "10s"), ""),
        commbox_yaml(&cb.base_url(), ""),
    ));
    let gw = spawn(&config).await;
    let mut body = commbox_body("memory store drain");
    body["callback_url"] = json!(hook);
    let r = client().post(format!("{}/v1/summaries", gw.url())).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = id_of(&r.json().await.unwrap());

    let polls_before = cb.sim.stats().polls;
    let Exit { code, took, gw } = sigterm(gw).await.unwrap();
    let polls_after = cb.sim.stats().polls - polls_before;
    eprintln!("exited {code:?} {took:?} after SIGTERM, polling CommBox {polls_after} times meanwhile");
    assert_eq!(code, Some(0), "{}", gw.output());
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        1,
        "the webhook was delivered before exit ({polls_after} polls after SIGTERM); output:\n{}",
        gw.output()
    );
    let (headers, delivered) = &got[0];
    verify(WEBHOOK_SECRET, headers, delivered);
    let resource: Value = serde_json::from_slice(delivered).unwrap();
    assert_eq!((resource["id"].as_str(), resource["status"].as_str()), (Some(id.as_str()), Some("completed")));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// A request that cannot finish does not hold the exit past `drain_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drain_timeout_bounds_the_exit() {
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
    let pbx = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let config = config_file(&config_yaml(&pbx.base_url(), &server_lines("0s", "1s"), "    timeout: 10s"));
    let gw = spawn(&config).await;
    pbx.sim.set_latency(Duration::from_secs(8));
    let request = client().post(format!("{}/v1/summaries", gw.url())).bearer_auth(KEY).json(&body_of(&leg(1))).send();
    let stuck = tokio::spawn(async move { request.await.map(|r| r.status().as_u16()) });
    eventually("the request to reach the PBX", || pbx.sim.stats().summary_calls == 1).await;

    let Exit { code, took, gw } = sigterm(gw).await.unwrap();
    let output = gw.output();
    eprintln!("exited {code:?} {took:?} after SIGTERM; the stuck request: {:?}", stuck.await.unwrap());
    assert!(code.is_some(), "killed after 30 s: it did not exit by itself; output:\n{output}");
    assert!(took < DRAIN_TIMEOUT + Duration::from_secs(2), "took {took:?} with drain_timeout {DRAIN_TIMEOUT:?}");
    let logged = output.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|l| {
        l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("drain") && m.contains("timeout"))
    });
    assert!(logged, "no WARN line says the drain timeout cut the exit short:\n{output}");
}
