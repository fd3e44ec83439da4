//! The run: starts the five server processes, runs the scenarios one after
//! the other, prints a row for each, then the comparisons with the baselines
//! and the verdict on each target. With `--redis-url` the gateway stores in
//! that Redis, and the Redis server's commands and CPU are read with the
//! gateway's CPU (see `redis_server.rs`).

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
use providers::elevateai::simulator::SimOptions as ElevateAiSimOptions;
use providers::yeastar::simulator::SimOptions;
use serde_json::Value;

use crate::load::{self, Check, Conn, Latencies, LoadResult, Outcome, Plan, Rate, Target, Usage, Watch};
use crate::nginx::{self, Nginx};
use crate::num::{to_f64, to_u64};
use crate::process::ServerProcess;
use crate::procfs::{self, Sample};
use crate::redis_server::{self, RedisServer, RedisUsage, RoundTrips};
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
    /// Interactions asked through each ElevateAI provider in f1 and f2 (all misses).
    pub elevateai_misses: u64,
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
    /// `--redis-url`: the gateway stores in this Redis (`store.redis_url`), under a key prefix of the run's.
    pub redis_url: Option<String>,
}

/// The targets (README: performance targets).
const HIT_CPU_TARGET_US: f64 = 12.0;
const MISS_CPU_TARGET_US: f64 = 30.0;
const P99_ADDED_TARGET_MS: f64 = 0.5;
const RSS_TARGET_MB: f64 = 50.0;
const WAITER_RSS_TARGET_KIB: f64 = 64.0;
const IDLE_CPU_TARGET_MS: f64 = 50.0;
/// A vendor described in YAML (`type: http`) costs at most this many times the
/// gateway CPU of its built-in adapter per cache miss (f2 / f1).
const DECLARED_RATIO_TARGET: f64 = 1.2;
/// Issue 15, against nginx in the same run: a cache hit (b) costs at most this
/// many times nginx `return 200` of the same bytes (n1) in CPU per request …
const NGINX_HIT_CPU_RATIO: f64 = 1.6;
/// … and serves at least this share of its requests per second;
const NGINX_HIT_RPS_RATIO: f64 = 0.6;
/// a miss (d2) costs at most this many times nginx `proxy_pass` to the same
/// simulator (n2) in CPU per request (each server's own process tree) …
const NGINX_MISS_CPU_RATIO: f64 = 4.0;
/// … and serves at least this share of its requests per second.
const NGINX_MISS_RPS_RATIO: f64 = 0.35;

/// The gateway's only key in the benchmark configuration.
const KEY: &str = "sg-bench-key-0123456789abcdef";
const PROVIDER: &str = "pbx";
/// The docs' example call leg, in the simulator's fixtures: the cache-hit request.
const DOCS_LEG: &str = "20260513223234-3EE9E";
const SIM_USER_AGENT: &str = "OpenAPI sg-bench";
/// The built-in ElevateAI provider (`type: elevateai`, scenario f1).
const ELEVATEAI_PROVIDER: &str = "ai";
/// The same vendor described in YAML (`type: http`, scenario f2), built from the example below.
const ELEVATEAI_HTTP_PROVIDER: &str = "ai-http";
/// ElevateAI's summary, details and topics as a declarative provider: f2's
/// provider is this file's `elevateai-http`, pointed at the simulator.
const ELEVATEAI_HTTP_EXAMPLE: &str = include_str!("../../config/examples/http-elevateai.yaml");
const ELEVATEAI_HTTP_EXAMPLE_NAME: &str = "elevateai-http";
/// Connections that declare f's interactions in the ElevateAI simulator before the scenarios.
const DECLARING_CONNECTIONS: usize = 8;
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
/// With `--redis-url`: cache-hit POSTs and GETs sent one at a time under `MONITOR`.
const PROBE_REQUESTS: u64 = 100;
/// … and vendor round trips (new call legs of their own).
const PROBE_MISSES: u64 = 50;
/// … and the Redis server's commands and CPU with nothing sent to the gateway.
const REDIS_IDLE_WINDOW: Duration = Duration::from_secs(1);

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

/// The five server processes and what the scenarios need from the warm-up.
struct Servers {
    sim: ServerProcess,
    /// The CommBox simulator (scenario w).
    commbox: ServerProcess,
    /// The ElevateAI simulator (scenarios f1 and f2).
    elevateai: ServerProcess,
    /// The interactions declared in it, in order: f's request `n` asks for the `n`-th.
    interactions: Arc<[String]>,
    gateway: ServerProcess,
    baseline: ServerProcess,
    /// nginx (rows n1, n2), or why it is not there.
    nginx: Result<NginxServer, String>,
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
    /// With `--redis-url`: the `MONITOR` probe's misses, after d3 and d4's.
    probe: Range<u64>,
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
        let open_end = open.first_number + load::numbers_needed(&open, s.rounds);
        let probe = open_end..open_end + if s.redis_url.is_some() { PROBE_MISSES } else { 0 };
        Self { warm, closed, open, records: probe.end, probe }
    }
}

/// Which interactions f1 and f2 ask for: `[0, warm)` warms both providers,
/// then both ask for the same `closed` ones (a miss for each: the provider is
/// part of a summary's identity).
struct Interactions {
    warm: Range<u64>,
    closed: Range<u64>,
}

impl Interactions {
    fn plan(s: &Settings) -> Self {
        let warm = u64::try_from(s.connections).unwrap_or(u64::MAX).saturating_mul(20);
        Self { warm: 0..warm, closed: warm..warm + s.elevateai_misses }
    }

    /// How many the ElevateAI simulator needs declared.
    const fn count(&self) -> u64 {
        self.closed.end
    }

    /// Round `round` of `rounds` of the measured ones.
    fn round(&self, round: u32, rounds: u32) -> Range<u64> {
        let (len, rounds) = (self.closed.end - self.closed.start, u64::from(rounds.max(1)));
        let at = |r: u64| self.closed.start + len * r / rounds;
        at(u64::from(round))..at(u64::from(round) + 1)
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
    let interactions = Interactions::plan(s);
    // Declared before the servers, so that on an early return it is dropped
    // after them (its Drop deletes the run's keys once the gateway has stopped).
    let redis = match &s.redis_url {
        Some(url) => Some(RedisServer::connect(url).await?),
        None => None,
    };
    // Before the servers start: they inherit it.
    let fds = waiting::raise_fd_limit();
    print_header(s, ticks, legs.records, &fds, redis.as_ref());
    let servers = start_servers(s, dir.path(), (legs.records, interactions.count()), redis.as_ref()).await?;
    let store = match &redis {
        Some(redis) => Some(probe_redis(redis, &servers, &legs).await?),
        None => None,
    };

    let mut bench = Bench {
        s,
        ticks,
        rows: Vec::new(),
        waiting: None,
        redis: redis.as_ref(),
        store,
        elevateai_seen: None,
        nginx_missing: match &servers.nginx {
            Ok(n) if !n.proxy => Some("nginx was built without the proxy module".to_owned()),
            Ok(_) => None,
            Err(e) => Some(e.clone()),
        },
    };
    print_columns();
    let after_hits = run_hits(&mut bench, &servers).await?;
    run_vendor(&mut bench, &servers, &legs).await?;
    let memory = Memory {
        after_hits,
        end: servers.gateway.sample()?,
        stored: 1 + legs.warm + s.misses + load::scheduled(&legs.open, s.rounds) + (legs.probe.end - legs.probe.start),
        summary_bytes: servers.cached.len(),
    };
    if let (Some(redis), Some(store)) = (&redis, &mut bench.store) {
        store.summary_in_redis = redis.memory_usage(&redis.summary_key(&servers.id));
    }
    // After the memory reading above: its summaries would count in the RSS growth per stored summary of d.
    run_elevateai(&mut bench, &servers, &interactions).await?;
    // Last: its thousands of connections must not count in the peak RSS judged
    // above, nor in the RSS growth per stored summary.
    run_waiting(&mut bench, &servers).await?;
    let driver_after = procfs::sample_self().map_err(|e| format!("/proc/self: {e}"))?;
    drop(servers);
    if let (Some(redis), Some(store)) = (&redis, &mut bench.store) {
        store.deleted = Some(redis.delete_keys());
    }

    bench.print_comparisons(&memory);
    bench.print_redis(&memory);
    bench.print_waiting();
    let targets_met = bench.print_targets(&memory);
    let clean = bench.rows.iter().all(|r| r.result.unexpected == 0 && r.result.failed == 0)
        && bench.elevateai_seen.as_ref().is_some_and(|seen| seen.as_expected);
    if !clean {
        println!(
            "\nWARNING: some requests failed or got unexpected answers (marked `!` above), or the ElevateAI simulator did not see f's requests as expected: the numbers are suspect."
        );
    }
    println!(
        "\nRun took {:.0} s; the driver (load generator) used {:.1} s of CPU.",
        started.elapsed().as_secs_f64(),
        procfs::cpu_between(driver_before, driver_after, ticks).as_secs_f64()
    );
    Ok(targets_met && clean)
}

/// Starts the simulators and the gateway, declares f's interactions, warms the
/// cache hit, then starts the baseline with the cached bytes and gets a
/// simulator token. `(records, interactions)`: the Yeastar call legs to seed and
/// the ElevateAI interactions to declare.
async fn start_servers(
    s: &Settings,
    dir: &Path,
    (records, interactions): (u64, u64),
    redis: Option<&RedisServer>,
) -> Result<Servers, String> {
    progress(&format!(
        "starting the simulator ({records} extra call legs), the CommBox simulator, the ElevateAI simulator, the gateway and the baseline"
    ));
    let sim = ServerProcess::spawn(
        "simulator",
        &args(&["serve-sim", "--listen", "127.0.0.1:0", "--records", &records.to_string()]),
        &[],
    )?;
    let commbox = ServerProcess::spawn("commbox-sim", &args(&["serve-commbox-sim", "--listen", "127.0.0.1:0"]), &[])?;
    let elevateai =
        ServerProcess::spawn("elevateai-sim", &args(&["serve-elevateai-sim", "--listen", "127.0.0.1:0"]), &[])?;
    progress(&format!("declaring {interactions} chat interactions in the ElevateAI simulator"));
    let interactions = declare_interactions(elevateai.addr, interactions).await?;
    let config = dir.join("gateway.yaml");
    let store = redis.zip(s.redis_url.as_deref()).map(|(r, url)| (url, r.prefix.as_str()));
    let urls = Upstreams { yeastar: &sim.url(), commbox: &commbox.url(), elevateai: &elevateai.url() };
    std::fs::write(&config, gateway_yaml(&urls, s, store)?)
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
    let (hit_parts, cached) = conn.exchange((hit.make)(0)).await?;
    if !(hit.check)(&hit_parts, &cached) {
        return Err(format!("the second request was not a cache hit: {} {:?}", hit_parts.status, hit_parts.headers));
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
    let nginx = start_nginx(&cached, &hit_parts.headers, sim.addr);
    match &nginx {
        Ok(n) => progress(&format!(
            "{} (pid {}, master + {} workers) on {}: return 200 with the cached summary and the hit's headers; proxy_pass to the simulator{}",
            n.version,
            n.process.pid(),
            n.workers,
            n.process.addr,
            if n.proxy { "" } else { ": NOT available (built without the proxy module), no row n2" },
        )),
        Err(e) => progress(&format!("NO nginx rows (n1, n2): {e}")),
    }
    progress(&format!(
        "gateway {} (pid {}), simulator {} (pid {}), CommBox simulator {} (pid {}), ElevateAI simulator {} (pid {}), baseline {} (pid {}); cached summary {} bytes",
        gateway.addr,
        gateway.pid(),
        sim.addr,
        sim.pid(),
        commbox.addr,
        commbox.pid(),
        elevateai.addr,
        elevateai.pid(),
        baseline.addr,
        baseline.pid(),
        cached.len()
    ));
    Ok(Servers { sim, commbox, elevateai, interactions, gateway, baseline, nginx, cached, id, token })
}

/// nginx as the driver's child, and what it was built with.
struct NginxServer {
    process: Nginx,
    version: String,
    /// Built without the proxy module: no n2.
    proxy: bool,
    workers: usize,
}

/// Finds (or installs) nginx and starts it: `return 200` with the cache hit's
/// bytes and headers, `proxy_pass` to the Yeastar simulator at `upstream`.
fn start_nginx(cached: &[u8], headers: &http::HeaderMap, upstream: SocketAddr) -> Result<NginxServer, String> {
    let binary = nginx::find_or_install()?;
    let build = nginx::Build::of(&binary)?;
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| nginx::copied_header(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    // The gateway's runtime has one worker thread per core: nginx gets one worker process per core.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let plan = nginx::Plan {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        body: cached,
        headers: &headers,
        upstream,
        workers,
    };
    let process = Nginx::start(&binary, &build, plan)?;
    Ok(NginxServer { process, proxy: build.has_proxy(), version: build.version, workers })
}

/// What the run learned about the Redis store besides the rows (with `--redis-url`).
struct StoreProbe {
    /// Under `MONITOR`, one request at a time: the gateway's commands per cache-hit
    /// POST, GET, and vendor round trip — or why they could not be counted.
    round_trips: Result<[RoundTrips; 3], String>,
    /// The Redis server's work over [`REDIS_IDLE_WINDOW`] with no request sent:
    /// the gateway's background work and any other client's.
    idle: RedisUsage,
    idle_window: Duration,
    /// `MEMORY USAGE` of the docs' example's summary key, after d.
    summary_in_redis: Result<Option<u64>, String>,
    /// Keys deleted at the end.
    deleted: Option<Result<u64, String>>,
}

/// Before the scenarios: the Redis server's idle work, then `MONITOR` while
/// [`PROBE_REQUESTS`] cache-hit POSTs and GETs and [`PROBE_MISSES`] misses go
/// to the gateway one at a time, between `ECHO` marks.
async fn probe_redis(redis: &RedisServer, servers: &Servers, legs: &Legs) -> Result<StoreProbe, String> {
    progress("Redis: idle reading, then MONITOR during cache hits and misses sent one at a time");
    let before = redis.read().await?;
    let started = Instant::now();
    tokio::time::sleep(REDIS_IDLE_WINDOW).await;
    let idle_window = started.elapsed();
    let idle = RedisUsage::between(&before, &redis.read().await?);

    let gateway = servers.gateway.addr;
    let marks: Vec<String> = (0..4).map(|i| format!("{}:sgbench-mark-{i}", redis.prefix)).collect();
    let targets = [
        (gateway_hit_target(gateway), 0..PROBE_REQUESTS),
        (gateway_get_target(gateway, &servers.id), 0..PROBE_REQUESTS),
        (gateway_miss_target(gateway), legs.probe.clone()),
    ];
    let round_trips = async {
        let monitor = redis.monitor(marks[3].clone())?;
        let mut conn = Conn::open(gateway).await?;
        for (i, (target, numbers)) in targets.iter().enumerate() {
            redis.echo(&marks[i])?;
            for n in numbers.clone() {
                let (parts, body) = conn.exchange((target.make)(n)).await?;
                if !(target.check)(&parts, &body) {
                    return Err(format!("an unexpected answer under MONITOR: {} {}", parts.status, lossy(&body)));
                }
            }
        }
        redis.echo(&marks[3])?;
        let lines = monitor.finish().await?;
        let marks: Vec<&str> = marks.iter().map(String::as_str).collect();
        let [post, get, miss]: [RoundTrips; 3] = redis_server::round_trips(&lines, &redis.prefix, &marks)
            .try_into()
            .map_err(|_| "MONITOR: a mark is missing".to_owned())?;
        Ok::<_, String>([post, get, miss])
    }
    .await;
    if let Err(e) = &round_trips {
        progress(&format!("Redis round trips not counted: {e}"));
    }
    Ok(StoreProbe { round_trips, idle, idle_window, summary_in_redis: Ok(None), deleted: None })
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
    let (base_pid, gw_pid) = ([baseline.pid()], [gateway.pid()]);
    let base = Watch::processes(&base_pid);
    // The gateway's rows read the Redis server's counters too (with --redis-url).
    let gw = Watch { pids: &gw_pid, redis: bench.redis };
    let nginx = servers.nginx.as_ref().ok();
    let nginx_pid = nginx.map(|n| [n.process.pid()]);
    let nginx_target = nginx.map(|n| baseline_target(n.process.addr, servers.cached.len()));
    let mut targets = vec![(&base_target, base)];
    if let (Some(target), Some(pid)) = (&nginx_target, &nginx_pid) {
        targets.push((target, Watch::processes(pid)));
    }
    targets.extend([(&hit, gw), (&get_target, gw)]);
    let mut results =
        load::closed_loop_alternating(&targets, s.connections, s.warmup, s.seconds, s.closed_rounds).await?.into_iter();
    let mut next = || results.next().ok_or("a closed-loop result is missing");
    bench.add("a", "baseline: static answer, POST", &closed, next()?, &["base"]);
    if nginx.is_some() {
        bench.add("n1", "nginx: return 200, the same bytes, POST", &closed, next()?, &["nginx"]);
    }
    bench.add("b", "gateway: POST /v1/summaries, cache hit", &closed, next()?, &["gw"]);
    bench.add("c", "gateway: GET /v1/summaries/{id}", &closed, next()?, &["gw"]);

    // e: a fixed rate, the baseline and the cache hit in alternating segments.
    let rate = Rate { per_second: s.rate, warmup: segment_warmup(s), measure: s.open_seconds, first_number: 0 };
    let (base_open, hit_open) =
        load::open_loop_alternating((&base_target, base), (&hit, gw), s.open_connections, &rate, s.rounds).await?;
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
    let (sim_pid, both_pids) = ([sim.pid()], [gateway.pid(), sim.pid()]);
    let sim_only = Watch::processes(&sim_pid);
    let both = Watch { pids: &both_pids, redis: bench.redis };

    load::closed_loop(&sim_target, s.connections, Plan::Numbers(0..legs.warm), sim_only).await?;
    let r = load::closed_loop(&sim_target, s.connections, Plan::Numbers(legs.closed.clone()), sim_only).await?;
    bench.add("d1", "simulator direct: getaisummary, new leg", &closed, r, &["sim"]);
    if let Some(nginx) = servers.nginx.as_ref().ok().filter(|n| n.proxy) {
        // d1's requests through nginx: the same legs, the same answers.
        let proxy_target = simulator_target(nginx.process.addr, &servers.token);
        let pids = [nginx.process.pid(), sim.pid()];
        let watch = Watch::processes(&pids);
        load::closed_loop(&proxy_target, s.connections, Plan::Numbers(0..legs.warm), watch).await?;
        let r = load::closed_loop(&proxy_target, s.connections, Plan::Numbers(legs.closed.clone()), watch).await?;
        bench.add("n2", "nginx: proxy_pass → simulator, d1's legs", &closed, r, &["nginx", "sim"]);
    }
    load::closed_loop(&miss_target, s.connections, Plan::Numbers(0..legs.warm), both).await?;
    let r = load::closed_loop(&miss_target, s.connections, Plan::Numbers(legs.closed.clone()), both).await?;
    bench.add("d2", "gateway: POST, miss → simulator", &closed, r, &["gw", "sim"]);

    let (sim_open, miss_open) = load::open_loop_alternating(
        (&sim_target, sim_only),
        (&miss_target, both),
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

/// f: ElevateAI summaries, every request a cache miss, through the built-in
/// adapter (f1) and through the same vendor described in YAML (f2). Both ask
/// for the same interactions, in alternating rounds (f1 first in even rounds,
/// f2 first in odd ones), so that both see the same conditions of the machine
/// and neither always follows the other.
async fn run_elevateai(bench: &mut Bench<'_>, servers: &Servers, interactions: &Interactions) -> Result<(), String> {
    let s = bench.s;
    let (gateway, sim) = (&servers.gateway, &servers.elevateai);
    let built_in = elevateai_miss_target(gateway.addr, ELEVATEAI_PROVIDER, Arc::clone(&servers.interactions));
    let declared = elevateai_miss_target(gateway.addr, ELEVATEAI_HTTP_PROVIDER, Arc::clone(&servers.interactions));
    let both_pids = [gateway.pid(), sim.pid()];
    let both = Watch { pids: &both_pids, redis: bench.redis };
    for target in [&built_in, &declared] {
        load::closed_loop(target, s.connections, Plan::Numbers(interactions.warm.clone()), both).await?;
    }
    let (mut f1, mut f2) = (LoadResult::default(), LoadResult::default());
    for round in 0..s.closed_rounds {
        let numbers = interactions.round(round, s.closed_rounds);
        let mut order = [(&built_in, &mut f1), (&declared, &mut f2)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (target, result) in order {
            result.absorb(load::closed_loop(target, s.connections, Plan::Numbers(numbers.clone()), both).await?);
        }
    }
    let closed = format!("closed c={}", s.connections);
    bench.add("f1", "gateway: POST, miss → ElevateAI built-in", &closed, f1, &["gw", "sim"]);
    bench.add("f2", "the same miss, declarative (type: http)", &closed, f2, &["gw", "sim"]);
    bench.elevateai_seen = Some(elevateai_seen(sim.addr, 2 * interactions.count()).await?);
    Ok(())
}

/// What the ElevateAI simulator saw of f: every request of f1 and f2 must have
/// reached it (a miss is a vendor call, none answered by the gateway alone),
/// both providers asking in the same language.
struct ElevateAiSeen {
    expected: u64,
    summaries: u64,
    /// `Accept-Language` values and how many requests sent each.
    languages: Vec<(String, u64)>,
    as_expected: bool,
}

impl ElevateAiSeen {
    fn describe(&self) -> String {
        let languages: Vec<String> =
            self.languages.iter().map(|(l, n)| format!("{} × {:?}", thousands(*n), l)).collect();
        format!(
            "the ElevateAI simulator answered {} summary requests for f's {} (warm-up included), Accept-Language {}{}",
            thousands(self.summaries),
            thousands(self.expected),
            languages.join(", "),
            if self.as_expected { "" } else { " — NOT as expected" }
        )
    }
}

/// `GET /_sim/stats` of the ElevateAI simulator after f: `expected` summary requests, all in one language.
async fn elevateai_seen(addr: SocketAddr, expected: u64) -> Result<ElevateAiSeen, String> {
    let request = Request::get("/_sim/stats")
        .header(HOST, host(addr))
        .body(Full::new(Bytes::new()))
        .expect("a valid stats request");
    let (_, answer) = Conn::open(addr).await?.exchange(request).await?;
    let stats = serde_json::from_slice::<providers::elevateai::simulator::SimStats>(&answer)
        .map_err(|e| format!("the ElevateAI simulator's stats: {e}: {}", lossy(&answer)))?;
    let summaries = stats.requests.get("summary").copied().unwrap_or(0);
    let mut languages = std::collections::BTreeMap::<String, u64>::new();
    for language in stats.languages {
        *languages.entry(language).or_default() += 1;
    }
    let languages: Vec<(String, u64)> = languages.into_iter().collect();
    let as_expected = summaries == expected && languages.len() == 1 && stats.rejected_busy == 0;
    Ok(ElevateAiSeen { expected, summaries, languages, as_expected })
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
    /// The Redis server's work in that window (with --redis-url).
    idle_redis: Option<RedisUsage>,
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
    let redis_from = read_redis(bench.redis).await?;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_to = gateway.sample()?;
    let idle_window = idle_started.elapsed();
    let redis_to = read_redis(bench.redis).await?;
    let idle_redis = redis_from.zip(redis_to).map(|(from, to)| RedisUsage::between(&from, &to));

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
        idle_redis,
        first,
        last,
        wake_cpu: procfs::cpu_between(idle_to, woken, bench.ticks),
        completed,
    });
    Ok(())
}

async fn read_redis(redis: Option<&RedisServer>) -> Result<Option<redis_server::Reading>, String> {
    match redis {
        Some(redis) => Ok(Some(redis.read().await?)),
        None => Ok(None),
    }
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

/// Declares `count` chat interactions in the ElevateAI simulator with the
/// vendor's `POST /v1/interactions` (a chat has results at once) over
/// [`DECLARING_CONNECTIONS`] connections; returns their identifiers.
async fn declare_interactions(addr: SocketAddr, count: u64) -> Result<Arc<[String]>, String> {
    let token = HeaderValue::from_str(&ElevateAiSimOptions::default().token)
        .map_err(|e| format!("the ElevateAI simulator's token is no header value: {e}"))?;
    let body = Bytes::from_static(br#"{"type":"chat","languageTag":"en-US","vertical":"default"}"#);
    let connections = u64::try_from(DECLARING_CONNECTIONS).unwrap_or(1);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let share = count / connections + u64::from(c < count % connections);
        let (token, body) = (token.clone(), body.clone());
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut ids = Vec::new();
            for _ in 0..share {
                let request = Request::post(providers::elevateai::simulator::INTERACTIONS_PATH)
                    .header(HOST, host(addr))
                    .header(providers::elevateai::simulator::TOKEN_HEADER, token.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(Full::new(body.clone()))
                    .expect("a valid declaration request");
                let (parts, answer) = conn.exchange(request).await?;
                let id = serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .filter(|_| parts.status == StatusCode::CREATED)
                    .and_then(|v| v["interactionIdentifier"].as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        format!("the ElevateAI simulator refused a declaration: {} {}", parts.status, lossy(&answer))
                    })?;
                ids.push(id);
            }
            Ok::<_, String>(ids)
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.map_err(|e| format!("a declaring task failed: {e}"))??);
    }
    Ok(all.into())
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

/// The base URLs of the vendor simulators the gateway's providers point at.
struct Upstreams<'a> {
    yeastar: &'a str,
    commbox: &'a str,
    elevateai: &'a str,
}

/// The gateway's configuration; `store` = (Redis URL, key prefix) with `--redis-url`.
fn gateway_yaml(urls: &Upstreams<'_>, s: &Settings, store: Option<(&str, &str)>) -> Result<String, String> {
    let sim = SimOptions::default();
    let commbox = providers::commbox::simulator::SimOptions::default();
    let elevateai = ElevateAiSimOptions::default();
    let concurrency = s.connections.max(s.open_connections).max(256);
    let store = store.map_or_else(String::new, |(url, prefix)| {
        // A JSON string is a YAML double-quoted scalar: any URL stays one value.
        let url = serde_json::to_string(url).unwrap_or_default();
        format!("store:\n  redis_url: {url}\n  key_prefix: {prefix}\n  timeout: 500ms\n  job_lease: 10s\n")
    });
    let declared = declared_elevateai(urls.elevateai, &elevateai.token, concurrency)?;
    // The built-in provider gets the same timeouts as the description.
    let same: String = ["timeout", "queue_timeout"]
        .iter()
        .filter_map(|key| declared.get(*key).map(|value| format!("\n    {key}: {value}")))
        .collect();
    Ok(format!(
        r"# Written by sg-bench: one key with a limit the load never reaches, one Yeastar
# provider pointing at the simulator process, one CommBox provider pointing at
# the CommBox simulator process (scenario w), and ElevateAI twice, pointing at
# the ElevateAI simulator process (scenario f): built in, and as the declarative
# provider of config/examples/http-elevateai.yaml (one line of JSON, which is YAML).
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
    base_url: {yeastar}
    client_id: {id}
    client_secret: {secret}
    timeout: 10s
    max_concurrency: {concurrency}
  {COMMBOX_PROVIDER}:
    type: commbox
    base_url: {commbox_url}
    token: {token}
    poll_interval: {COMMBOX_POLL}
  {ELEVATEAI_PROVIDER}:
    type: elevateai
    base_url: {elevateai_url}
    token: {elevateai_token}{same}
    max_concurrency: {concurrency}
  {ELEVATEAI_HTTP_PROVIDER}: {declared}
{store}",
        yeastar = urls.yeastar,
        id = sim.client_id,
        secret = sim.client_secret,
        commbox_url = urls.commbox,
        token = commbox.token,
        elevateai_url = urls.elevateai,
        elevateai_token = elevateai.token,
    ))
}

/// The provider `elevateai-http` of config/examples/http-elevateai.yaml, as JSON,
/// with what a deployment changes: `base_url` (the simulator), the header's
/// value inline (the simulator's token) instead of `value_env`, and
/// `max_concurrency` (the built-in provider's; the example's 10 is the real
/// account's limit, which the simulator does not have here). Every other key —
/// routes, headers, mappings, id pattern, errors, timeouts — is the example's.
fn declared_elevateai(url: &str, token: &str, concurrency: usize) -> Result<Value, String> {
    let file: serde_yaml::Value = serde_yaml::from_str(ELEVATEAI_HTTP_EXAMPLE)
        .map_err(|e| format!("config/examples/http-elevateai.yaml: {e}"))?;
    let mut provider = serde_json::to_value(&file["providers"][ELEVATEAI_HTTP_EXAMPLE_NAME])
        .map_err(|e| format!("config/examples/http-elevateai.yaml: {e}"))?;
    let header = provider
        .pointer_mut("/auth/header")
        .and_then(Value::as_object_mut)
        .ok_or("config/examples/http-elevateai.yaml: no providers.elevateai-http.auth.header")?;
    header.remove("value_env");
    header.insert("value".into(), Value::from(token));
    provider["base_url"] = Value::from(url);
    provider["max_concurrency"] = Value::from(concurrency);
    Ok(provider)
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

/// f1 and f2: a summary of the `n`-th declared interaction through `provider`,
/// never asked before through it.
fn elevateai_miss_target(addr: SocketAddr, provider: &'static str, interactions: Arc<[String]>) -> Target {
    let (host, auth) = (host(addr), bearer());
    Target {
        addr,
        make: Arc::new(move |n| {
            let id = usize::try_from(n).ok().and_then(|i| interactions.get(i)).map_or("", String::as_str);
            let body = format!(r#"{{"provider":"{provider}","kind":"summary","conversation":{{"id":"{id}"}}}}"#);
            json_post(&host, &auth, "/v1/summaries", Bytes::from(body))
        }),
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

impl Row {
    /// The Redis server's commands executed (script internals included) and CPU µs, per request.
    fn redis(&self) -> Option<(f64, f64)> {
        let redis = self.result.redis.as_ref()?;
        let requests = self.result.requests.max(1);
        Some((to_f64(redis.commands()) / to_f64(requests), redis.cpu_per_request(requests)))
    }
}

struct Bench<'a> {
    s: &'a Settings,
    ticks: u64,
    rows: Vec<Row>,
    /// What the ElevateAI simulator saw of f (its `/_sim/stats`).
    elevateai_seen: Option<ElevateAiSeen>,
    waiting: Option<Waiting>,
    /// With `--redis-url`: the gateway's store, read around its rows.
    redis: Option<&'a RedisServer>,
    store: Option<StoreProbe>,
    /// Why there are no nginx rows (nginx missing and not installable, or it failed to start).
    nginx_missing: Option<String>,
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

fn print_header(s: &Settings, ticks: u64, records: u64, fds: &FdLimit, redis: Option<&RedisServer>) {
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
        "ElevateAI miss (f1 built-in, f2 declarative): {} interactions through each provider, the same for both, in {} alternating round(s), after {} warm-up ones; declared in the simulator first",
        s.elevateai_misses,
        s.closed_rounds,
        Interactions::plan(s).warm.end,
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
    match redis {
        Some(r) => println!(
            "store: redis — Redis {} at {}, keys under {}:* (deleted at the end); {} other client(s) connected{}",
            r.version,
            r.shown_url,
            r.prefix,
            r.other_clients,
            if r.other_clients > 0 { ": their commands count in the Redis numbers" } else { "" }
        ),
        None => println!("store: memory (the gateway's embedded store; --redis-url for a Redis one)"),
    }
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
        if let Some(redis) = &result.redis {
            let requests = result.requests.max(1);
            println!(
                "    redis: {:.2} commands/request ({}); Redis CPU {:.1} µs/request",
                to_f64(redis.commands()) / to_f64(requests),
                redis_server::breakdown(&redis.calls, requests),
                redis.cpu_per_request(requests),
            );
        }
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
        let _ = writeln!(out, "\nAgainst the baselines of this run — store: {}", self.store_description());
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
        if self.redis.is_some() {
            self.write_redis_totals(&mut out);
        }
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
        let (built_in, declared) = (self.cpu("f1", "gw"), self.cpu("f2", "gw"));
        let _ = writeln!(
            out,
            "  ElevateAI miss (f2 / f1):  declarative {declared:.1} µs / built-in {built_in:.1} µs of gateway CPU per request = {:.2}× ({:+.1} µs); simulator {:.1} / {:.1} µs",
            declared / built_in,
            declared - built_in,
            self.cpu("f2", "sim"),
            self.cpu("f1", "sim"),
        );
        let _ = writeln!(
            out,
            "                             throughput {} req/s declarative vs {} req/s built-in; {}",
            thousands(self.row("f2").map_or(0, |r| to_u64(r.result.per_second()))),
            thousands(self.row("f1").map_or(0, |r| to_u64(r.result.per_second()))),
            self.elevateai_seen.as_ref().map_or_else(|| "—".to_owned(), ElevateAiSeen::describe),
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
        self.write_memory(&mut out, memory);
        print!("{out}");
    }

    /// The gateway's RSS under the cache-hit load, and what storing summaries added.
    fn write_memory(&self, out: &mut String, memory: &Memory) {
        let growth = memory.end.rss_kib.saturating_sub(memory.after_hits.rss_kib);
        let per_entry = to_f64(growth) * 1024.0 / to_f64(memory.stored.saturating_sub(1).max(1));
        let _ = writeln!(
            out,
            "  gateway memory:            peak RSS {:.1} MB under the cache-hit load (a-c, e; one summary stored)",
            megabytes(memory.after_hits.hwm_kib),
        );
        if self.redis.is_some() {
            let _ = writeln!(
                out,
                "                             {:.1} MB after the vendor round trips stored {} summaries — in Redis, not in the gateway (its RSS grew {:.1} MB; see \"Redis store\" below)",
                megabytes(memory.end.rss_kib),
                thousands(memory.stored),
                megabytes(growth),
            );
            return;
        }
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
    }

    /// `memory (…)` or `redis (…)`.
    fn store_description(&self) -> String {
        match self.redis {
            Some(redis) => {
                format!("redis (Redis {} at {}, keys under {}:*)", redis.version, redis.shown_url, redis.prefix)
            }
            None => "memory (the gateway's embedded store)".to_owned(),
        }
    }

    /// Redis CPU µs/request of row `key` (NaN without Redis readings).
    fn redis_cpu(&self, key: &str) -> f64 {
        self.row(key).and_then(Row::redis).map_or(f64::NAN, |(_, cpu)| cpu)
    }

    /// The gateway's rows with the Redis server's CPU added: what a request costs in all.
    fn write_redis_totals(&self, out: &mut String) {
        let trips = self.store.as_ref().and_then(|p| p.round_trips.as_ref().ok());
        let sent = |i: usize, n: u64| {
            trips.map_or_else(|| "?".to_owned(), |t| format!("{:.2}", to_f64(t[i].sent_total()) / to_f64(n)))
        };
        let static_answer = |base: f64, all: f64| format!("{:.1}× the static answer", all / base);
        let _ = writeln!(out, "  with the Redis server's CPU, µs/request (gateway + Redis = in all):");
        let lines = [
            ("b", "cache hit, POST (b):".to_owned(), Some(sent(0, PROBE_REQUESTS))),
            ("c", "cache hit, GET  (c):".to_owned(), Some(sent(1, PROBE_REQUESTS))),
            ("e2", format!("cache hit at {}/s (e2):", self.s.rate), None),
            ("d2", "vendor round trip (d2):".to_owned(), Some(sent(2, PROBE_MISSES))),
        ];
        for (key, what, trips) in &lines {
            let (gw, redis) = (self.cpu(key, "gw"), self.redis_cpu(key));
            let executed = self.row(key).and_then(Row::redis).map_or(f64::NAN, |(commands, _)| commands);
            let note = match *key {
                "b" | "c" => static_answer(self.cpu("a", "base"), gw + redis),
                "e2" => static_answer(self.cpu("e1", "base"), gw + redis),
                _ => format!("+ the simulator's own {:.1}", self.cpu(key, "sim")),
            };
            let trips = trips.as_ref().map_or_else(String::new, |t| format!("{t} Redis round trips, "));
            let _ = writeln!(
                out,
                "    {what:<26}{gw:.1} + {redis:.1} = {:.1} ({note}); {trips}{executed:.2} commands executed",
                gw + redis
            );
        }
    }

    /// With `--redis-url`: the round trips, the idle reading, the size of a stored summary.
    fn print_redis(&self, memory: &Memory) {
        let (Some(redis), Some(probe)) = (self.redis, &self.store) else { return };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nRedis store: Redis {} at {}, keys under {}:*",
            redis.version, redis.shown_url, redis.prefix
        );
        if redis.other_clients > 0 {
            let _ = writeln!(
                out,
                "  NOTE: {} other client(s) were connected at the start: their commands and CPU count in the Redis numbers",
                redis.other_clients
            );
        }
        let _ = writeln!(
            out,
            "  round trips per request, under MONITOR, one request at a time: the commands the gateway sent [and those its scripts ran inside Redis]"
        );
        match &probe.round_trips {
            Ok(trips) => {
                for (what, t, n) in [
                    ("cache hit, POST:", &trips[0], PROBE_REQUESTS),
                    ("cache hit, GET:", &trips[1], PROBE_REQUESTS),
                    ("vendor round trip:", &trips[2], PROBE_MISSES),
                ] {
                    let _ = writeln!(
                        out,
                        "    {what:<24}{:.2} ({}) [{:.2}: {}]   over {n} requests",
                        to_f64(t.sent_total()) / to_f64(n),
                        redis_server::breakdown(&t.sent, n),
                        to_f64(t.inside_total()) / to_f64(n),
                        redis_server::breakdown(&t.inside, n),
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    not counted: {e}");
            }
        }
        let _ = writeln!(
            out,
            "  commands executed per request under load (INFO commandstats, a script's own commands included) / Redis CPU per request:"
        );
        let rows: Vec<String> = ["b", "c", "e2", "d2", "d4"]
            .iter()
            .filter_map(|key| {
                let (commands, cpu) = self.row(key)?.redis()?;
                Some(format!("{key} {commands:.2} / {cpu:.1} µs"))
            })
            .collect();
        let _ = writeln!(out, "    {}", rows.join("; "));
        let idle_seconds = probe.idle_window.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "  idle, nothing sent ({:.1} s before the scenarios): {:.1} commands/s ({}), Redis CPU {:.2} ms/s — the gateway's background work and any other client's, in the numbers above too",
            idle_seconds,
            to_f64(probe.idle.commands()) / idle_seconds,
            redis_server::counts(&probe.idle.calls),
            millis(probe.idle.cpu) / idle_seconds,
        );
        match &probe.summary_in_redis {
            Ok(Some(bytes)) => {
                let _ = writeln!(
                    out,
                    "  a stored summary takes {} bytes in Redis (MEMORY USAGE of the docs' example, a {}-byte answer): the {} of this run ≈ {:.1} MB there",
                    thousands(*bytes),
                    thousands(u64::try_from(memory.summary_bytes).unwrap_or(u64::MAX)),
                    thousands(memory.stored),
                    to_f64(*bytes) * to_f64(memory.stored) / 1e6,
                );
            }
            Ok(None) => {
                let _ = writeln!(out, "  MEMORY USAGE: the docs' example's summary key was not found");
            }
            Err(e) => {
                let _ = writeln!(out, "  MEMORY USAGE: {e}");
            }
        }
        match &probe.deleted {
            Some(Ok(n)) => {
                let _ = writeln!(out, "  deleted the run's {} keys ({}:*)", thousands(*n), redis.prefix);
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "  could not delete the run's keys ({}:*): {e}", redis.prefix);
            }
            None => {}
        }
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
        if let Some(redis) = &w.idle_redis {
            let _ = writeln!(
                out,
                "  Redis while waiting:       {} commands in the same window ({}), Redis CPU {:.1} ms",
                thousands(redis.commands()),
                redis_server::counts(&redis.calls),
                millis(redis.cpu),
            );
        }
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
                "(static-answer baseline a: {:.1} µs/request, so the gateway adds {:+.1} µs; GET c: {:.1} µs){}",
                self.cpu("a", "base"),
                self.cpu("b", "gw") - self.cpu("a", "base"),
                self.cpu("c", "gw"),
                self.redis_note("b"),
            )),
            1 => Some(format!(
                "(a cache hit b costs {:.1} µs: the vendor round trip adds {:+.1} µs; the simulator's own {:.1} µs are not in it){}",
                self.cpu("b", "gw"),
                self.cpu("d2", "gw") - self.cpu("b", "gw"),
                self.cpu("d2", "sim"),
                self.redis_note("d2"),
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
            6 => Some(format!(
                "(ElevateAI summaries, each a cache miss: built-in f1 {:.1} µs, declarative f2 {:.1} µs of gateway CPU per request, {:+.1} µs; the simulator's own {:.1} / {:.1} µs are not in it){}",
                self.cpu("f1", "gw"),
                self.cpu("f2", "gw"),
                self.cpu("f2", "gw") - self.cpu("f1", "gw"),
                self.cpu("f1", "sim"),
                self.cpu("f2", "sim"),
                if self.redis.is_some() {
                    "\n      (store: redis; the built-in provider also takes the account's fleet-wide concurrency slot in Redis per call, the declarative one does not)"
                } else {
                    ""
                },
            )),
            _ => None,
        }
    }

    /// `; Redis CPU …` after a target's note, with `--redis-url`: the gateway's number is judged, the total shown.
    fn redis_note(&self, key: &str) -> String {
        if self.redis.is_none() {
            return String::new();
        }
        let (gw, redis) = (self.cpu(key, "gw"), self.redis_cpu(key));
        format!(
            "\n      (store: redis; the Redis server's CPU is not in the value: {redis:.1} µs/request more, {:.1} µs in all)",
            gw + redis
        )
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
            (
                "declarative vs built-in: CPU per miss (f2 / f1)",
                self.cpu("f2", "gw") / self.cpu("f1", "gw"),
                DECLARED_RATIO_TARGET,
                "×",
                2,
            ),
        ];
        println!("\nTargets — store: {}", if self.redis.is_some() { "redis" } else { "memory" });
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
        all & self.print_nginx_targets()
    }

    /// Requests per second of row `key` (NaN if it did not run).
    fn rps(&self, key: &str) -> f64 {
        self.row(key).map_or(f64::NAN, |r| r.result.per_second())
    }

    /// Issue 15's targets: ratios to nginx in this run. True if each measured one is met
    /// (a row that could not run — no nginx — is reported, not judged).
    fn print_nginx_targets(&self) -> bool {
        let (n1, n2) = (self.row("n1").is_some(), self.row("n2").is_some());
        println!("  against nginx in this run (issue 15), ratios:");
        let mut all = true;
        let lines = [
            (
                "cache hit CPU/request, b / nginx return 200 (n1)",
                n1,
                self.cpu("b", "gw") / self.cpu("n1", "nginx"),
                NGINX_HIT_CPU_RATIO,
                true,
                format!("{:.1} / {:.1} µs", self.cpu("b", "gw"), self.cpu("n1", "nginx")),
            ),
            (
                "cache hit req/s, b / nginx return 200 (n1)",
                n1,
                self.rps("b") / self.rps("n1"),
                NGINX_HIT_RPS_RATIO,
                false,
                format!("{} / {} req/s", thousands(to_u64(self.rps("b"))), thousands(to_u64(self.rps("n1")))),
            ),
            (
                "miss CPU/request, d2 gw / nginx proxy_pass (n2)",
                n2,
                self.cpu("d2", "gw") / self.cpu("n2", "nginx"),
                NGINX_MISS_CPU_RATIO,
                true,
                format!(
                    "{:.1} / {:.1} µs, the simulator's own not in either",
                    self.cpu("d2", "gw"),
                    self.cpu("n2", "nginx")
                ),
            ),
            (
                "miss req/s, d2 / nginx proxy_pass (n2)",
                n2,
                self.rps("d2") / self.rps("n2"),
                NGINX_MISS_RPS_RATIO,
                false,
                format!("{} / {} req/s", thousands(to_u64(self.rps("d2"))), thousands(to_u64(self.rps("n2")))),
            ),
        ];
        for (what, ran, value, target, at_most, detail) in lines {
            let bound = format!("{} {target}×", if at_most { "≤" } else { "≥" });
            if !ran {
                let why = match &self.nginx_missing {
                    Some(e) => format!("not measured: {e}"),
                    None => "not measured".to_owned(),
                };
                println!("  {what:<50}{:>12}{bound:>12}   {why}", "—");
                continue;
            }
            let met = if at_most { value <= target } else { value >= target };
            all &= met;
            println!(
                "  {what:<50}{:>12}{bound:>12}   {}",
                format!("{value:.2}×"),
                if met { "met".to_owned() } else { format!("NOT met ({detail})") },
            );
            if met {
                println!("      ({detail})");
            }
        }
        if self.s.closed_rounds > 0 && self.redis.is_some() {
            println!("      (store: redis; the Redis server's CPU is not in the gateway's values)");
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
    fn interaction_rounds_cover_the_measured_ones_once() {
        let plan = Interactions { warm: 0..320, closed: 320..12_320 };
        let rounds: Vec<Range<u64>> = (0..4).map(|r| plan.round(r, 4)).collect();
        assert_eq!(rounds.first().map(|r| r.start), Some(320));
        assert_eq!(rounds.last().map(|r| r.end), Some(12_320));
        assert!(rounds.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(plan.round(0, 1), 320..12_320);
        assert_eq!(plan.count(), 12_320);
        let odd = Interactions { warm: 0..0, closed: 0..7 };
        assert_eq!((0..3).map(|r| odd.round(r, 3).end - odd.round(r, 3).start).sum::<u64>(), 7);
    }

    #[test]
    fn the_bench_config_is_valid() {
        let s = Settings {
            seconds: Duration::from_secs(1),
            warmup: Duration::ZERO,
            open_seconds: Duration::from_secs(1),
            vendor_open_seconds: Duration::from_secs(1),
            misses: 1,
            elevateai_misses: 1,
            rate: 1000.0,
            vendor_rate: 1000.0,
            connections: 16,
            open_connections: 32,
            driver_threads: 1,
            rounds: 1,
            closed_rounds: 1,
            waiters: 10,
            strict: false,
            redis_url: None,
        };
        let urls = Upstreams {
            yeastar: "http://127.0.0.1:9",
            commbox: "http://127.0.0.1:10",
            elevateai: "http://127.0.0.1:11",
        };
        let yaml = gateway_yaml(&urls, &s, None).unwrap_or_else(|e| panic!("{e}"));
        let config = gateway_config::Config::from_yaml(&providers::registry::config_types(), &yaml, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(config.providers.len(), 4);
        assert!(config.providers.contains_key(COMMBOX_PROVIDER));
        assert!(config.store.redis_url.is_none());
        let (built_in, declared) = (&config.providers[ELEVATEAI_PROVIDER], &config.providers[ELEVATEAI_HTTP_PROVIDER]);
        assert_eq!((built_in.vendor.type_name(), declared.vendor.type_name()), ("elevateai", "http"));
        // The same limits on both: only the adapter differs.
        assert_eq!(
            (built_in.common.timeout, built_in.common.queue_timeout, built_in.common.max_concurrency),
            (declared.common.timeout, declared.common.queue_timeout, declared.common.max_concurrency)
        );
        assert_eq!((declared.common.timeout, declared.common.max_concurrency), (Duration::from_secs(10), 256));
        assert!(crate::servers::ELEVATEAI_SIM_CONCURRENCY > declared.common.max_concurrency);
        assert!(yaml.contains(r#""value":"demo-elevateai-token""#) && !yaml.contains("value_env"));
        // The adapters build from it (templates, JSONPaths, the id pattern).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async { summary_gateway::App::new(config) }).unwrap_or_else(|e| panic!("{e}"));

        let url = "redis://:p#ss@127.0.0.1:6379/0";
        let yaml = gateway_yaml(&urls, &s, Some((url, "sgbench-1-0a"))).unwrap_or_else(|e| panic!("{e}"));
        let config = gateway_config::Config::from_yaml(&providers::registry::config_types(), &yaml, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.store.redis_url.as_ref().map(|u| u.expose().as_str()), Some(url));
        assert_eq!(config.store.key_prefix, "sgbench-1-0a");
        assert_eq!(
            (config.store.timeout, config.store.job_lease),
            (Duration::from_millis(500), Duration::from_secs(10))
        );
        assert!(HELD_TEXT.chars().count() >= providers::commbox::MIN_TEXT_CHARS && HELD_TEXT.contains("[sim:hold]"));
    }
}
