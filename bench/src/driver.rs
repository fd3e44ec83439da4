//! The run: starts the four server processes, runs the scenarios one after
//! the other, prints a row for each, then the comparisons with the baselines
//! and the verdict on each target.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use providers::yeastar::simulator::SimOptions;
use serde_json::Value;

use crate::load::{self, Check, Conn, Latencies, LoadResult, Outcome, Plan, Rate, Target, Usage};
use crate::num::{to_f64, to_u64};
use crate::process::ServerProcess;
use crate::procfs::{self, Sample};
use crate::servers::{EXTENSION, leg_id};
use crate::waiting::{self, FdLimit};

/// What a run does (see `RunArgs` in main.rs for the defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    pub seconds: Duration,
    pub warmup: Duration,
    pub open_seconds: Duration,
    pub vendor_open_seconds: Duration,
    pub misses: u64,
    pub rate: f64,
    pub vendor_rate: f64,
    pub connections: usize,
    pub open_connections: usize,
    pub driver_threads: usize,
    /// Segments of each alternating open-loop comparison.
    pub rounds: u32,
    /// Rounds of the closed-loop scenarios a, b, c (a, b, c, a, b, c, …).
    pub closed_rounds: u32,
    /// Long-polls parked at once in scenario w.
    pub waiters: usize,
    pub strict: bool,
}

/// The targets (README: performance targets).
const HIT_CPU_TARGET_US: f64 = 12.0;
const MISS_CPU_TARGET_US: f64 = 30.0;
const P99_ADDED_TARGET_MS: f64 = 0.5;
const RSS_TARGET_MB: f64 = 50.0;
const WAITER_RSS_TARGET_KIB: f64 = 64.0;
const IDLE_CPU_TARGET_MS: f64 = 50.0;

/// The gateway's only key in the benchmark configuration.
const KEY: &str = "sg-bench-key-0123456789abcdef";
const PROVIDER: &str = "pbx";
/// The docs' example call leg, in the simulator's fixtures: the cache-hit request.
const DOCS_LEG: &str = "20260513223234-3EE9E";
const SIM_USER_AGENT: &str = "OpenAPI sg-bench";
/// The CommBox provider of the benchmark configuration (scenario w).
const COMMBOX_PROVIDER: &str = "cb";
/// Its poll interval: how long after the simulator's release the gateway learns of it (jittered 2/3–5/3).
const COMMBOX_POLL: &str = "100ms";
/// The text of w's job: `[sim:hold]` keeps it pending until the simulator's release.
const HELD_TEXT: &str = "[sim:hold] The caller asked why the March invoice was charged twice. The agent found a \
    duplicate card payment in the billing history and refunded it. The caller thanked the agent and the ticket was closed.";
/// The `wait` of w's long-polls, seconds (the gateway's maximum).
const WAIT_SECS: u64 = 60;
/// Before w's first RSS reading, after creating the held job.
const SETTLE_BEFORE: Duration = Duration::from_millis(500);
/// Longest wait for the gateway to settle once w's requests are written.
const SETTLE_AT_MOST: Duration = Duration::from_secs(15);
/// w's idle window: the gateway's CPU time while the requests wait.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

pub fn run(settings: &Settings) -> ExitCode {
    let mut builder = if settings.driver_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(settings.driver_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sg-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(drive(settings)) {
        Ok(good) if good || !settings.strict => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sg-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The four server processes and what the scenarios need from the warm-up.
struct Servers {
    sim: ServerProcess,
    /// The CommBox simulator (scenario w).
    commbox: ServerProcess,
    gateway: ServerProcess,
    baseline: ServerProcess,
    /// The cached summary of the docs' example: the bytes the baseline answers with.
    cached: Bytes,
    /// Its id, for `GET /v1/summaries/{id}`.
    id: String,
    /// An access token of the simulator, for asking it directly.
    token: String,
}

/// Which call legs each vendor scenario asks for. The simulator direct and the
/// gateway ask for the same legs in the same order (the simulator's cost per
/// lookup grows with a leg's position in its list).
struct Legs {
    /// `[0, warm)`: warm the vendor path (connections, token) before d1 and d2.
    warm: u64,
    /// d1 and d2.
    closed: Range<u64>,
    /// d3 and d4, from `closed.end` on.
    open: Rate,
    /// How many the simulator is seeded with.
    records: u64,
}

impl Legs {
    fn plan(s: &Settings) -> Self {
        let warm = u64::try_from(s.connections).unwrap_or(u64::MAX).saturating_mul(20);
        let closed = warm..warm + s.misses;
        let open = Rate {
            per_second: s.vendor_rate,
            warmup: segment_warmup(s),
            measure: s.vendor_open_seconds,
            first_number: closed.end,
        };
        let records = open.first_number + load::numbers_needed(&open, s.rounds);
        Self { warm, closed, open, records }
    }
}

/// The warm-up of each open-loop segment.
fn segment_warmup(s: &Settings) -> Duration {
    s.warmup.min(Duration::from_millis(250))
}

/// Runs everything; true if every target was met and every answer was the expected one.
async fn drive(s: &Settings) -> Result<bool, String> {
    let started = Instant::now();
    let driver_before = procfs::sample_self().map_err(|e| format!("/proc/self: {e}"))?;
    let ticks = procfs::clock_ticks_per_second();
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let legs = Legs::plan(s);
    // Before the servers start: they inherit it.
    let fds = waiting::raise_fd_limit();
    print_header(s, ticks, legs.records, &fds);
    let servers = start_servers(s, dir.path(), legs.records).await?;

    let mut bench = Bench { s, ticks, rows: Vec::new(), waiting: None };
    print_columns();
    let after_hits = run_hits(&mut bench, &servers).await?;
    run_vendor(&mut bench, &servers, &legs).await?;
    let memory = Memory {
        after_hits,
        end: servers.gateway.sample()?,
        stored: 1 + legs.warm + s.misses + load::scheduled(&legs.open, s.rounds),
        summary_bytes: servers.cached.len(),
    };
    // Last: its thousands of connections must not count in the peak RSS judged
    // above, nor in the RSS growth per stored summary.
    run_waiting(&mut bench, &servers).await?;
    let driver_after = procfs::sample_self().map_err(|e| format!("/proc/self: {e}"))?;
    drop(servers);

    bench.print_comparisons(&memory);
    bench.print_waiting();
    let targets_met = bench.print_targets(&memory);
    let clean = bench.rows.iter().all(|r| r.result.unexpected == 0 && r.result.failed == 0);
    if !clean {
        println!(
            "\nWARNING: some requests failed or got unexpected answers (marked `!` above): the numbers are suspect."
        );
    }
    println!(
        "\nRun took {:.0} s; the driver (load generator) used {:.1} s of CPU.",
        started.elapsed().as_secs_f64(),
        procfs::cpu_between(driver_before, driver_after, ticks).as_secs_f64()
    );
    Ok(targets_met && clean)
}

/// Starts the simulator and the gateway, warms the cache hit, then starts the
/// baseline with the cached bytes and gets a simulator token.
async fn start_servers(s: &Settings, dir: &Path, records: u64) -> Result<Servers, String> {
    progress(&format!(
        "starting the simulator ({records} extra call legs), the CommBox simulator, the gateway and the baseline"
    ));
    let sim = ServerProcess::spawn(
        "simulator",
        &args(&["serve-sim", "--listen", "127.0.0.1:0", "--records", &records.to_string()]),
        &[],
    )?;
    let commbox = ServerProcess::spawn("commbox-sim", &args(&["serve-commbox-sim", "--listen", "127.0.0.1:0"]), &[])?;
    let config = dir.join("gateway.yaml");
    std::fs::write(&config, gateway_yaml(&sim.url(), &commbox.url(), s))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let mut gateway_args = args(&["serve-gateway", "--config"]);
    gateway_args.push(config.into_os_string());
    let gateway = ServerProcess::spawn("gateway", &gateway_args, &[("RUST_LOG", "warn")])?;

    // The first request is a miss, the second a hit: its bytes are what the baseline answers with.
    let hit = gateway_hit_target(gateway.addr);
    let mut conn = Conn::open(gateway.addr).await?;
    let (parts, first) = conn.exchange((hit.make)(0)).await?;
    if parts.status != StatusCode::OK {
        return Err(format!("the gateway answered the docs' example with {}: {}", parts.status, lossy(&first)));
    }
    let (parts, cached) = conn.exchange((hit.make)(0)).await?;
    if !(hit.check)(&parts, &cached) {
        return Err(format!("the second request was not a cache hit: {} {:?}", parts.status, parts.headers));
    }
    let id = serde_json::from_slice::<Value>(&cached)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or("the cached summary has no id")?;
    let body_file = dir.join("cached-summary.json");
    std::fs::write(&body_file, &cached).map_err(|e| format!("cannot write {}: {e}", body_file.display()))?;
    let mut baseline_args = args(&["serve-baseline", "--listen", "127.0.0.1:0", "--body-file"]);
    baseline_args.push(body_file.into_os_string());
    let baseline = ServerProcess::spawn("baseline", &baseline_args, &[])?;
    let token = simulator_token(sim.addr).await?;
    progress(&format!(
        "gateway {} (pid {}), simulator {} (pid {}), CommBox simulator {} (pid {}), baseline {} (pid {}); cached summary {} bytes",
        gateway.addr,
        gateway.pid(),
        sim.addr,
        sim.pid(),
        commbox.addr,
        commbox.pid(),
        baseline.addr,
        baseline.pid(),
        cached.len()
    ));
    Ok(Servers { sim, commbox, gateway, baseline, cached, id, token })
}

/// a-c (closed loop) and e (open loop): the static answer and the cache hits.
/// Returns the gateway's memory after them (its store holds one summary).
async fn run_hits(bench: &mut Bench<'_>, servers: &Servers) -> Result<Sample, String> {
    let s = bench.s;
    let (gateway, baseline) = (&servers.gateway, &servers.baseline);
    let closed = format!("closed c={}", s.connections);
    let base_target = baseline_target(baseline.addr, servers.cached.len());
    let hit = gateway_hit_target(gateway.addr);

    let get_target = gateway_get_target(gateway.addr, &servers.id);
    let mut results = load::closed_loop_alternating(
        &[(&base_target, &[baseline.pid()]), (&hit, &[gateway.pid()]), (&get_target, &[gateway.pid()])],
        s.connections,
        s.warmup,
        s.seconds,
        s.closed_rounds,
    )
    .await?
    .into_iter();
    let mut next = || results.next().ok_or("a closed-loop result is missing");
    bench.add("a", "baseline: static answer, POST", &closed, next()?, &["base"]);
    bench.add("b", "gateway: POST /v1/summaries, cache hit", &closed, next()?, &["gw"]);
    bench.add("c", "gateway: GET /v1/summaries/{id}", &closed, next()?, &["gw"]);

    // e: a fixed rate, the baseline and the cache hit in alternating segments.
    let rate = Rate { per_second: s.rate, warmup: segment_warmup(s), measure: s.open_seconds, first_number: 0 };
    let (base_open, hit_open) = load::open_loop_alternating(
        (&base_target, &[baseline.pid()]),
        (&hit, &[gateway.pid()]),
        s.open_connections,
        &rate,
        s.rounds,
    )
    .await?;
    let open = format!("open {}/s", s.rate);
    bench.add("e1", "baseline: static answer, POST", &open, base_open, &["base"]);
    bench.add("e2", "gateway: POST /v1/summaries, cache hit", &open, hit_open, &["gw"]);
    gateway.sample()
}

/// d: vendor round trips, every request a call leg never asked before; the
/// simulator asked directly for the same legs first.
async fn run_vendor(bench: &mut Bench<'_>, servers: &Servers, legs: &Legs) -> Result<(), String> {
    let s = bench.s;
    let (gateway, sim) = (&servers.gateway, &servers.sim);
    let sim_target = simulator_target(sim.addr, &servers.token);
    let miss_target = gateway_miss_target(gateway.addr);
    let closed = format!("closed c={}", s.connections);
    let both = [gateway.pid(), sim.pid()];

    load::closed_loop(&sim_target, s.connections, Plan::Numbers(0..legs.warm), &[sim.pid()]).await?;
    let r = load::closed_loop(&sim_target, s.connections, Plan::Numbers(legs.closed.clone()), &[sim.pid()]).await?;
    bench.add("d1", "simulator direct: getaisummary, new leg", &closed, r, &["sim"]);
    load::closed_loop(&miss_target, s.connections, Plan::Numbers(0..legs.warm), &both).await?;
    let r = load::closed_loop(&miss_target, s.connections, Plan::Numbers(legs.closed.clone()), &both).await?;
    bench.add("d2", "gateway: POST, miss → simulator", &closed, r, &["gw", "sim"]);

    let (sim_open, miss_open) = load::open_loop_alternating(
        (&sim_target, &[sim.pid()]),
        (&miss_target, &both),
        s.open_connections,
        &legs.open,
        s.rounds,
    )
    .await?;
    let open = format!("open {}/s", s.vendor_rate);
    bench.add("d3", "simulator direct: getaisummary, new leg", &open, sim_open, &["sim"]);
    bench.add("d4", "gateway: POST, miss → simulator", &open, miss_open, &["gw", "sim"]);
    Ok(())
}

/// What scenario w measured, besides its row.
struct Waiting {
    /// `--waiters`, and the note if the open-files limit capped it.
    requested: usize,
    cap_note: Option<String>,
    /// Requests parked (written) at once.
    parked: usize,
    /// The gateway with the held job only, and with the requests parked.
    before: Sample,
    after: Sample,
    /// Time from the last request written to `after`, and whether the gateway had settled by then.
    settled_after: Duration,
    stable: bool,
    /// The gateway's CPU time in the idle window while they waited.
    idle_cpu: Duration,
    idle_window: Duration,
    /// Release → first and last expected answer.
    first: Option<Duration>,
    last: Option<Duration>,
    /// The gateway's CPU time from the release to the last answer.
    wake_cpu: Duration,
    completed: u64,
}

impl Waiting {
    fn bytes_per_request(&self) -> f64 {
        waiting::bytes_per_request(self.before, self.after, self.parked)
    }
}

/// w: `--waiters` long-polls parked on one CommBox job the simulator holds, then
/// all woken by its end.
async fn run_waiting(bench: &mut Bench<'_>, servers: &Servers) -> Result<(), String> {
    let (gateway, commbox) = (&servers.gateway, &servers.commbox);
    let limits = [std::process::id(), gateway.pid()]
        .map(|pid| procfs::max_open_files(pid).map_err(|e| format!("/proc/{pid}/limits: {e}")));
    let limits = limits.into_iter().collect::<Result<Vec<u64>, String>>()?;
    let (n, cap_note) = waiting::usable_waiters(bench.s.waiters, &limits);
    if let Some(note) = &cap_note {
        progress(note);
    }
    let id = create_held_job(gateway.addr).await?;
    tokio::time::sleep(SETTLE_BEFORE).await;
    let before = gateway.sample()?;

    let request = waiting::get_request(gateway.addr, &format!("/v1/summaries/{id}?wait={WAIT_SECS}"), KEY);
    let parked = waiting::park(gateway.addr, &request, n);
    let (written, _) = parked.all_written(Duration::from_secs(120)).await?;
    let settled = waiting::settle(gateway.pid(), bench.ticks, SETTLE_AT_MOST).await?;
    let idle_from = gateway.sample()?;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_to = gateway.sample()?;
    let idle_window = idle_started.elapsed();

    let released = Instant::now();
    release_held_jobs(commbox.addr).await?;
    let answers = parked.answers().await;
    let woken = gateway.sample()?;

    let mut result = LoadResult { requests: u64::try_from(answers.len()).unwrap_or(u64::MAX), ..LoadResult::default() };
    let mut latencies = Vec::with_capacity(answers.len());
    let (mut first, mut last) = (None::<Duration>, None::<Duration>);
    for answer in answers {
        let outcome = match (answer.at, answer.outcome) {
            (Some(at), Outcome::Expected) if at < released => {
                Outcome::Unexpected("a completed answer before the release".to_owned())
            }
            (_, outcome) => outcome,
        };
        let since = answer.at.map(|at| at.saturating_duration_since(released));
        match outcome {
            Outcome::Expected => {
                let since = since.unwrap_or_default();
                first = Some(first.map_or(since, |f| f.min(since)));
                last = Some(last.map_or(since, |l| l.max(since)));
                latencies.push(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
            }
            Outcome::Unexpected(problem) => {
                result.unexpected += 1;
                result.problem.get_or_insert(problem);
            }
            Outcome::Failed(problem) => {
                result.failed += 1;
                result.problem.get_or_insert(problem);
            }
        }
    }
    let completed = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
    result.latencies = Latencies::from_unsorted(latencies);
    result.elapsed = last.unwrap_or_else(|| released.elapsed()).max(Duration::from_millis(1));
    result.usage = vec![Usage { ticks: woken.ticks.saturating_sub(idle_to.ticks), end: woken }];
    let load = format!("{} parked", thousands(u64::try_from(n).unwrap_or(u64::MAX)));
    bench.add("w", "gateway: GET /v1/summaries/{id}?wait=60", &load, result, &["gw"]);
    bench.waiting = Some(Waiting {
        requested: bench.s.waiters,
        cap_note,
        parked: written,
        before,
        after: settled.sample,
        settled_after: settled.after,
        stable: settled.stable,
        idle_cpu: procfs::cpu_between(idle_from, idle_to, bench.ticks),
        idle_window,
        first,
        last,
        wake_cpu: procfs::cpu_between(idle_to, woken, bench.ticks),
        completed,
    });
    Ok(())
}

/// `POST /v1/summaries` for the CommBox provider with a `[sim:hold]` text: 202
/// and the id of a job that stays pending until the simulator's release.
async fn create_held_job(addr: SocketAddr) -> Result<String, String> {
    let body = serde_json::json!({"provider": COMMBOX_PROVIDER, "conversation": {"text": HELD_TEXT}}).to_string();
    let request = json_post(&host(addr), &bearer(), "/v1/summaries", Bytes::from(body));
    let (parts, answer) = Conn::open(addr).await?.exchange(request).await?;
    if parts.status != StatusCode::ACCEPTED {
        return Err(format!("the held CommBox job was answered {}, not 202: {}", parts.status, lossy(&answer)));
    }
    serde_json::from_slice::<Value>(&answer)
        .ok()
        .filter(|v| v["status"] == "pending")
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or_else(|| format!("the held CommBox job's answer has no pending id: {}", lossy(&answer)))
}

/// `POST /_sim/release` on the CommBox simulator: its held jobs end (completed).
async fn release_held_jobs(addr: SocketAddr) -> Result<(), String> {
    let request = Request::post("/_sim/release")
        .header(HOST, host(addr))
        .body(Full::new(Bytes::new()))
        .expect("a valid release request");
    let (parts, answer) = Conn::open(addr).await?.exchange(request).await?;
    if parts.status.is_success() {
        Ok(())
    } else {
        Err(format!("the CommBox simulator answered the release with {}: {}", parts.status, lossy(&answer)))
    }
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn progress(message: &str) {
    eprintln!("sg-bench: {message}");
}

fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()
}

fn gateway_yaml(sim_url: &str, commbox_url: &str, s: &Settings) -> String {
    let sim = SimOptions::default();
    let commbox = providers::commbox::simulator::SimOptions::default();
    let concurrency = s.connections.max(s.open_connections).max(256);
    format!(
        r"# Written by sg-bench: one key with a limit the load never reaches, one Yeastar
# provider pointing at the simulator process, one CommBox provider pointing at
# the CommBox simulator process (scenario w).
server:
  listen: 127.0.0.1:0
auth:
  keys:
    bench:
      key: {KEY}
      rate_limit: {{ per_second: 1000000, burst: 1000000 }}
providers:
  {PROVIDER}:
    type: yeastar
    base_url: {sim_url}
    client_id: {id}
    client_secret: {secret}
    timeout: 10s
    max_concurrency: {concurrency}
  {COMMBOX_PROVIDER}:
    type: commbox
    base_url: {commbox_url}
    token: {token}
    poll_interval: {COMMBOX_POLL}
",
        id = sim.client_id,
        secret = sim.client_secret,
        token = commbox.token,
    )
}

// ---------------------------------------------------------------- requests

fn host(addr: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&addr.to_string()).expect("a socket address is a valid Host header")
}

fn bearer() -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {KEY}")).expect("the key is a valid header value")
}

fn json_post(host: &HeaderValue, auth: &HeaderValue, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, auth.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(body))
        .expect("a valid POST request")
}

fn summary_body(leg: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"provider":"{PROVIDER}","conversation":{{"id":"{leg}","party":"caller","extension_id":{EXTENSION}}}}}"#
    ))
}

fn cache_status_is(expected: &'static str) -> Check {
    Arc::new(move |parts, _| {
        parts.status == StatusCode::OK && parts.headers.get("cache-status").is_some_and(|v| v == expected)
    })
}

/// b and e2: the docs' example, the same body every time.
fn gateway_hit_target(addr: SocketAddr) -> Target {
    let (host, auth) = (host(addr), bearer());
    let body = summary_body(DOCS_LEG);
    Target {
        addr,
        make: Arc::new(move |_| json_post(&host, &auth, "/v1/summaries", body.clone())),
        check: cache_status_is("summary-gateway; hit"),
    }
}

/// c: the cached summary by id.
fn gateway_get_target(addr: SocketAddr, id: &str) -> Target {
    let (host, auth) = (host(addr), bearer());
    let path = format!("/v1/summaries/{id}");
    Target {
        addr,
        make: Arc::new(move |_| {
            Request::get(path.as_str())
                .header(HOST, host.clone())
                .header(AUTHORIZATION, auth.clone())
                .body(Full::new(Bytes::new()))
                .expect("a valid GET request")
        }),
        check: Arc::new(|parts, _| parts.status == StatusCode::OK),
    }
}

/// d2 and d4: call leg `n`, never asked before.
fn gateway_miss_target(addr: SocketAddr) -> Target {
    let (host, auth) = (host(addr), bearer());
    Target {
        addr,
        make: Arc::new(move |n| json_post(&host, &auth, "/v1/summaries", summary_body(&leg_id(n)))),
        check: cache_status_is("summary-gateway; fwd=miss"),
    }
}

/// a and e1: the same request as the cache hit (its answer is the same bytes).
fn baseline_target(addr: SocketAddr, answer_len: usize) -> Target {
    let (host, auth) = (host(addr), bearer());
    let body = summary_body(DOCS_LEG);
    Target {
        addr,
        make: Arc::new(move |_| json_post(&host, &auth, "/v1/summaries", body.clone())),
        check: Arc::new(move |parts, body| parts.status == StatusCode::OK && body.len() == answer_len),
    }
}

/// d1 and d3: the request the gateway's Yeastar adapter sends for call leg `n`.
fn simulator_target(addr: SocketAddr, token: &str) -> Target {
    let host = host(addr);
    let token = token.to_owned();
    Target {
        addr,
        make: Arc::new(move |n| {
            let uri = format!(
                "/openapi/v2.0/cdr/getaisummary?access_token={token}&cdr_id={}&src_ext_id={EXTENSION}",
                leg_id(n)
            );
            Request::get(uri)
                .header(HOST, host.clone())
                .header(USER_AGENT, HeaderValue::from_static(SIM_USER_AGENT))
                .body(Full::new(Bytes::new()))
                .expect("a valid getaisummary request")
        }),
        check: Arc::new(|parts, body| {
            parts.status == StatusCode::OK && body.windows(12).any(|w| w == br#""errcode":0,"#)
        }),
    }
}

/// `POST /openapi/v1.0/get_token` with the simulator's default credentials.
async fn simulator_token(addr: SocketAddr) -> Result<String, String> {
    let sim = SimOptions::default();
    let body = serde_json::json!({"username": sim.client_id, "password": sim.client_secret}).to_string();
    let request = Request::post("/openapi/v1.0/get_token")
        .header(HOST, host(addr))
        .header(USER_AGENT, HeaderValue::from_static(SIM_USER_AGENT))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(body)))
        .expect("a valid get_token request");
    let (_, answer) = Conn::open(addr).await?.exchange(request).await?;
    serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .ok_or_else(|| format!("the simulator gave no access token: {}", lossy(&answer)))
}

// ---------------------------------------------------------------- report

struct Row {
    key: &'static str,
    result: LoadResult,
    /// CPU µs per request of each watched process, with its short name.
    cpu: Vec<(&'static str, f64)>,
}

struct Bench<'a> {
    s: &'a Settings,
    ticks: u64,
    rows: Vec<Row>,
    waiting: Option<Waiting>,
}

struct Memory {
    /// The gateway after scenarios a-c and e (its store holds one summary).
    after_hits: Sample,
    /// The gateway at the end, after the vendor round trips.
    end: Sample,
    /// Summaries in the gateway's store after the vendor round trips.
    stored: u64,
    summary_bytes: usize,
}

fn print_header(s: &Settings, ticks: u64, records: u64, fds: &FdLimit) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("sg-bench: summary-gateway against baselines measured in the same run");
    println!(
        "machine: {cores} cores, CLK_TCK {ticks}; load generator: {} thread(s) in this process, server processes re-executed from it",
        s.driver_threads
    );
    println!(
        "closed loop: {} connections; a, b, c in turn over {} round(s), {:.1} s measured each in all, {:.1} s warm-up first; vendor round trip: {} distinct call legs ({records} seeded)",
        s.connections,
        s.closed_rounds,
        s.seconds.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.misses
    );
    println!(
        "open loop: {} req/s over {} connections; baseline and gateway alternate in {} segments each, {:.1} s measured in all ({:.1} s for vendor round trips), {:.2} s warm-up per segment",
        s.rate,
        s.open_connections,
        s.rounds,
        s.open_seconds.as_secs_f64(),
        s.vendor_open_seconds.as_secs_f64(),
        s.warmup.min(Duration::from_millis(250)).as_secs_f64(),
    );
    println!(
        "waiting requests (w): {} long-polls ?wait={WAIT_SECS} on one held CommBox job, a connection each, {:.0} s idle window; {}",
        thousands(u64::try_from(s.waiters).unwrap_or(u64::MAX)),
        IDLE_WINDOW.as_secs_f64(),
        fds.describe()
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn megabytes(kib: u64) -> f64 {
    to_f64(kib) * 1024.0 / 1e6
}

pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict(value: f64, target: f64, unit: &str) -> String {
    if value <= target {
        "PASS".to_owned()
    } else {
        format!("over by {:.2} {unit} (+{:.0}%)", value - target, (value / target - 1.0) * 100.0)
    }
}

fn print_columns() {
    println!();
    println!(
        "{:<4}{:<42}{:<14}{:>9}{:>9}  {:<21}{:>8}{:>8}{:>8}  RSS MB now/peak",
        "", "scenario", "load", "requests", "req/s", "CPU µs/request", "p50 ms", "p99 ms", "max ms"
    );
}

impl Bench<'_> {
    fn add(&mut self, key: &'static str, what: &str, load: &str, result: LoadResult, names: &[&'static str]) {
        let requests = to_f64(result.requests.max(1));
        let cpu: Vec<(&'static str, f64)> = names
            .iter()
            .zip(&result.usage)
            .map(|(name, usage)| (*name, micros(procfs::ticks_to_time(usage.ticks, self.ticks)) / requests))
            .collect();
        let memory = result.usage.first().map(|u| u.end).unwrap_or_default();
        let cpu_text = cpu.iter().map(|(name, us)| format!("{us:.1} {name}")).collect::<Vec<_>>().join(" + ");
        let l = &result.latencies;
        println!(
            "{key:<4}{what:<42}{load:<14}{:>9}{:>9}  {cpu_text:<21}{:>8.3}{:>8.3}{:>8.3}  {:.1}/{:.1}",
            thousands(result.requests),
            thousands(to_u64(result.per_second())),
            millis(l.per_mille(500)),
            millis(l.per_mille(990)),
            millis(l.max()),
            megabytes(memory.rss_kib),
            megabytes(memory.hwm_kib),
        );
        if result.unexpected > 0 || result.failed > 0 {
            println!(
                "    ! {} unexpected answers, {} failed requests; first: {}",
                result.unexpected,
                result.failed,
                result.problem.as_deref().unwrap_or("?")
            );
        }
        self.rows.push(Row { key, result, cpu });
    }

    fn row(&self, key: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.key == key)
    }

    /// CPU µs/request of process `name` in row `key`.
    fn cpu(&self, key: &str, name: &str) -> f64 {
        self.row(key).and_then(|r| r.cpu.iter().find(|(n, _)| *n == name)).map_or(f64::NAN, |(_, us)| *us)
    }

    fn latency(&self, key: &str, per_mille: usize) -> f64 {
        self.row(key).map_or(f64::NAN, |r| millis(r.result.latencies.per_mille(per_mille)))
    }

    fn print_comparisons(&self, memory: &Memory) {
        let base = self.cpu("a", "base");
        let hit = self.cpu("b", "gw");
        let get = self.cpu("c", "gw");
        let mut out = String::new();
        let _ = writeln!(out, "\nAgainst the baselines of this run");
        let _ = writeln!(
            out,
            "  cache hit, POST (b − a):   {hit:.1} − {base:.1} = {:+.1} µs CPU/request added by the gateway ({:.1}× the static answer)",
            hit - base,
            hit / base
        );
        let _ = writeln!(
            out,
            "  cache hit, GET  (c − a):   {get:.1} − {base:.1} = {:+.1} µs CPU/request added ({:.1}× the static answer)",
            get - base,
            get / base
        );
        let miss = self.cpu("d2", "gw");
        let (sim_via, sim_direct) = (self.cpu("d2", "sim"), self.cpu("d1", "sim"));
        let _ = writeln!(
            out,
            "  vendor round trip (d2):    gateway {miss:.1} µs CPU/request on top of the vendor's own {sim_via:.1} µs (simulator answered directly: {sim_direct:.1} µs, d1)"
        );
        let _ = writeln!(
            out,
            "                             {:.1}× a cache hit's CPU; throughput {} req/s via the gateway vs {} req/s direct",
            miss / hit,
            thousands(self.row("d2").map_or(0, |r| to_u64(r.result.per_second()))),
            thousands(self.row("d1").map_or(0, |r| to_u64(r.result.per_second()))),
        );
        let _ = writeln!(
            out,
            "  vendor round trip at {}/s (d4 − d3): added latency p50 {:+.3} ms, p99 {:+.3} ms; gateway CPU {:.1} µs/request at this rate",
            self.s.vendor_rate,
            self.latency("d4", 500) - self.latency("d3", 500),
            self.latency("d4", 990) - self.latency("d3", 990),
            self.cpu("d4", "gw"),
        );
        let _ = writeln!(
            out,
            "  cache hit at {}/s (e2 − e1): added latency p50 {:+.3} ms, p99 {:+.3} ms; CPU {:.1} µs/request (baseline {:.1}) at this rate",
            self.s.rate,
            self.latency("e2", 500) - self.latency("e1", 500),
            self.latency("e2", 990) - self.latency("e1", 990),
            self.cpu("e2", "gw"),
            self.cpu("e1", "base"),
        );
        if let (Some(base), Some(gw)) = (self.row("e1"), self.row("e2")) {
            let pairs = base.result.segment_p99.iter().zip(&gw.result.segment_p99);
            let mut differences: Vec<f64> = pairs.clone().map(|(b, g)| millis(*g) - millis(*b)).collect();
            differences.sort_by(f64::total_cmp);
            let text: Vec<String> = pairs.map(|(b, g)| format!("{:.3}/{:.3}", millis(*b), millis(*g))).collect();
            let _ = writeln!(
                out,
                "                             p99 per segment, baseline/gateway ms: {}; median difference {:+.3} ms",
                text.join("  "),
                differences.get(differences.len() / 2).copied().unwrap_or(f64::NAN),
            );
        }
        if let Some(lag) = self.row("e2").and_then(|r| r.result.lag.as_ref()) {
            let _ = writeln!(
                out,
                "                             (the load generator's own lag, schedule → send: p50 {:.3} ms, p99 {:.3} ms; in both runs)",
                millis(lag.per_mille(500)),
                millis(lag.per_mille(990)),
            );
        }
        let growth = memory.end.rss_kib.saturating_sub(memory.after_hits.rss_kib);
        let per_entry = to_f64(growth) * 1024.0 / to_f64(memory.stored.saturating_sub(1).max(1));
        let _ = writeln!(
            out,
            "  gateway memory:            peak RSS {:.1} MB under the cache-hit load (a-c, e; one summary stored)",
            megabytes(memory.after_hits.hwm_kib),
        );
        let _ = writeln!(
            out,
            "                             {:.1} MB after the vendor round trips stored {} summaries: ≈ {:.0} bytes of RSS per stored summary of {} bytes",
            megabytes(memory.end.rss_kib),
            thousands(memory.stored),
            per_entry,
            memory.summary_bytes,
        );
        let _ = writeln!(
            out,
            "                             → a full store (store.max_bytes, default 32 MiB weighed as key + body + 1 KiB) holds ≈ {} such summaries ≈ {:.0} MB of RSS",
            thousands(full_store_entries(memory.summary_bytes)),
            per_entry * crate::num::to_f64(full_store_entries(memory.summary_bytes)) / 1e6
        );
        print!("{out}");
    }

    /// Scenario w's own numbers, after the comparisons.
    fn print_waiting(&self) {
        let Some(w) = &self.waiting else { return };
        let n = u64::try_from(w.parked).unwrap_or(u64::MAX);
        let per = w.bytes_per_request();
        let mut out = String::new();
        let _ =
            writeln!(out, "\nWaiting requests (w): {} long-polls parked at once on one held CommBox job", thousands(n));
        if let Some(note) = &w.cap_note {
            let _ = writeln!(out, "  NOTE: {note}");
        } else if w.parked < w.requested {
            let _ = writeln!(out, "  NOTE: only {} of {} requests could be sent", w.parked, w.requested);
        }
        let _ = writeln!(
            out,
            "  gateway RSS:               {:.1} MB with the held job only → {:.1} MB with them waiting ({}settled {:.1} s after the last was written)",
            megabytes(w.before.rss_kib),
            megabytes(w.after.rss_kib),
            if w.stable { "" } else { "NOT " },
            w.settled_after.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "                             = {per:.0} bytes ({:.1} KiB) of RSS per waiting request: the gateway's side of its",
            per / 1024.0
        );
        let _ = writeln!(
            out,
            "                             connection (hyper's connection state and buffers) + the handler's future (its timer, its"
        );
        let _ = writeln!(
            out,
            "                             watch receiver); the kernel's socket memory is not in RSS, so a waiter costs the machine more"
        );
        let _ = writeln!(
            out,
            "  gateway CPU while waiting: {:.0} ms in a {:.1} s idle window (the job's poller asks the simulator every ~{COMMBOX_POLL} meanwhile)",
            millis(w.idle_cpu),
            w.idle_window.as_secs_f64(),
        );
        let show = |d: Option<Duration>| d.map_or_else(|| "—".to_owned(), |d| format!("{:.0} ms", millis(d)));
        let _ = writeln!(
            out,
            "  release → answers:         first {}, last {}; {} of {} completed; gateway CPU {:.0} ms to wake and answer them ({:.0} µs each)",
            show(w.first),
            show(w.last),
            thousands(w.completed),
            thousands(n),
            millis(w.wake_cpu),
            micros(w.wake_cpu) / to_f64(n.max(1)),
        );
        let _ = writeln!(
            out,
            "                             (the first answer waits for the job's next poll, every 2/3–5/3 × {COMMBOX_POLL}; first → last is the fan-out)"
        );
        print!("{out}");
    }

    /// What to read next to target `i`: the same run's baseline for it.
    fn target_note(&self, i: usize) -> Option<String> {
        match i {
            0 => Some(format!(
                "(static-answer baseline a: {:.1} µs/request, so the gateway adds {:+.1} µs; GET c: {:.1} µs)",
                self.cpu("a", "base"),
                self.cpu("b", "gw") - self.cpu("a", "base"),
                self.cpu("c", "gw"),
            )),
            1 => Some(format!(
                "(a cache hit b costs {:.1} µs: the vendor round trip adds {:+.1} µs; the simulator's own {:.1} µs are not in it)",
                self.cpu("b", "gw"),
                self.cpu("d2", "gw") - self.cpu("b", "gw"),
                self.cpu("d2", "sim"),
            )),
            2 => {
                let (base, gw) = (self.row("e1")?, self.row("e2")?);
                let mut differences: Vec<f64> = base
                    .result
                    .segment_p99
                    .iter()
                    .zip(&gw.result.segment_p99)
                    .map(|(b, g)| millis(*g) - millis(*b))
                    .collect();
                differences.sort_by(f64::total_cmp);
                let lag = gw.result.lag.as_ref().map_or(f64::NAN, |l| millis(l.per_mille(990)));
                Some(format!(
                    "(p99 {:.3} ms − {:.3} ms; median of the per-segment differences {:+.3} ms; the load generator's own lag p99 {lag:.3} ms)",
                    millis(gw.result.latencies.per_mille(990)),
                    millis(base.result.latencies.per_mille(990)),
                    differences.get(differences.len() / 2).copied().unwrap_or(f64::NAN),
                ))
            }
            4 => self.waiting.as_ref().map(|w| {
                format!(
                    "(RSS {:.1} → {:.1} MB for {} parked requests; user-space memory only: the kernel's socket buffers are not in RSS)",
                    megabytes(w.before.rss_kib),
                    megabytes(w.after.rss_kib),
                    thousands(u64::try_from(w.parked).unwrap_or(u64::MAX)),
                )
            }),
            5 => Some(format!(
                "(over {:.1} s; it includes the job's own polls of the CommBox simulator, every ~{COMMBOX_POLL})",
                self.waiting.as_ref().map_or(f64::NAN, |w| w.idle_window.as_secs_f64())
            )),
            _ => None,
        }
    }

    /// Prints the verdicts; true if every target is met.
    fn print_targets(&self, memory: &Memory) -> bool {
        let added_p99 = self.latency("e2", 990) - self.latency("e1", 990);
        let peak = megabytes(memory.after_hits.hwm_kib);
        let targets = [
            ("cache hit: gateway CPU per request (b)", self.cpu("b", "gw"), HIT_CPU_TARGET_US, "µs", 1),
            ("vendor round trip: gateway CPU per request (d2)", self.cpu("d2", "gw"), MISS_CPU_TARGET_US, "µs", 1),
            (
                if (self.s.rate - 1000.0).abs() < f64::EPSILON {
                    "p99 added latency at 1,000 req/s (e2 − e1)"
                } else {
                    "p99 added latency at --rate (e2 − e1)"
                },
                added_p99,
                P99_ADDED_TARGET_MS,
                "ms",
                3,
            ),
            ("gateway peak RSS under load, store ~empty (a-c, e)", peak, RSS_TARGET_MB, "MB", 1),
            (
                "gateway RSS per waiting request (w)",
                self.waiting.as_ref().map_or(f64::NAN, |w| w.bytes_per_request() / 1024.0),
                WAITER_RSS_TARGET_KIB,
                "KiB",
                1,
            ),
            (
                "gateway CPU while they wait, idle window (w)",
                self.waiting.as_ref().map_or(f64::NAN, |w| millis(w.idle_cpu)),
                IDLE_CPU_TARGET_MS,
                "ms",
                0,
            ),
        ];
        println!("\nTargets");
        println!("  {:<50}{:>12}{:>12}   verdict", "", "value", "target");
        let mut all = true;
        // The open-loop latencies include the machine's own scheduling jitter;
        // when the load generator alone is late by more than the target, the
        // difference of two p99s says little.
        let lag_p99 = self.row("e2").and_then(|r| r.result.lag.as_ref()).map_or(0.0, |l| millis(l.per_mille(990)));
        for (i, (what, value, target, unit, decimals)) in targets.into_iter().enumerate() {
            let met = value <= target;
            all &= met;
            let mut verdict = verdict(value, target, unit);
            if i == 2 && lag_p99 > target {
                let _ = write!(verdict, " (unreliable: the load generator's own p99 lag is {lag_p99:.3} ms)");
            }
            println!(
                "  {what:<50}{:>12}{:>12}   {verdict}",
                format!("{value:.decimals$} {unit}"),
                format!("≤ {target} {unit}"),
            );
            if let Some(note) = self.target_note(i) {
                println!("      {note}");
            }
        }
        all
    }
}

/// How many summaries of `body` bytes the embedded store keeps at its default
/// `store.max_bytes` (32 MiB), weighing each as key (36) + body + 1 KiB overhead.
fn full_store_entries(body: usize) -> u64 {
    (32 * 1024 * 1024) / (36 + body as u64 + 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(verdict(10.0, 12.0, "µs"), "PASS");
        assert_eq!(verdict(15.0, 12.0, "µs"), "over by 3.00 µs (+25%)");
    }

    #[test]
    fn the_bench_config_is_valid() {
        let s = Settings {
            seconds: Duration::from_secs(1),
            warmup: Duration::ZERO,
            open_seconds: Duration::from_secs(1),
            vendor_open_seconds: Duration::from_secs(1),
            misses: 1,
            rate: 1000.0,
            vendor_rate: 1000.0,
            connections: 16,
            open_connections: 32,
            driver_threads: 1,
            rounds: 1,
            closed_rounds: 1,
            waiters: 10,
            strict: false,
        };
        let yaml = gateway_yaml("http://127.0.0.1:9", "http://127.0.0.1:10", &s);
        let config = gateway_config::Config::from_yaml(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.providers.len(), 2);
        assert!(config.providers.contains_key(COMMBOX_PROVIDER));
        assert!(HELD_TEXT.chars().count() >= providers::commbox::MIN_TEXT_CHARS && HELD_TEXT.contains("[sim:hold]"));
    }
}
