//! The load generator: HTTP/1.1 keep-alive connections (hyper's client
//! connection over a tokio `TcpStream`), driven
//!
//! - closed-loop: each connection sends its next request as soon as it has read
//!   the previous answer — the server is never idle; for throughput and CPU per
//!   request;
//! - open-loop: requests are scheduled at a fixed rate by a dedicated thread and
//!   latency runs from the *scheduled* time, so a slow answer does not lower the
//!   offered rate nor hide the wait of the requests queued behind it (no
//!   coordinated omission).
//!
//! Around the measured window the CPU time and memory of the watched server
//! processes are read from `/proc`, and with `--redis-url` the Redis server's
//! counters (calls per command, CPU time).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::response::Parts;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::num::{to_f64, to_u64};
use crate::procfs::{self, Sample};
use crate::redis_server::{Reading, RedisServer, RedisUsage};

/// Builds request number `n` (`n` picks the call leg where that matters).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;
/// Whether an answer is the one the scenario expects (status, headers, body).
pub type Check = Arc<dyn Fn(&Parts, &[u8]) -> bool + Send + Sync>;

/// Where and what to send.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub make: MakeRequest,
    pub check: Check,
}

/// A request without an answer after this long counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection; reconnects after a failure.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// How one request went.
pub enum Outcome {
    Expected,
    Unexpected(String),
    Failed(String),
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self, String> {
        let mut conn = Self { addr, sender: None };
        conn.connect().await?;
        Ok(conn)
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect to {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends a request and reads the whole answer.
    pub async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<(Parts, Bytes), String> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange_inner(request))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())));
        if result.is_err() {
            // The connection's state is unknown: use a new one next time.
            self.sender = None;
        }
        result
    }

    async fn exchange_inner(&mut self, request: Request<Full<Bytes>>) -> Result<(Parts, Bytes), String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("not connected")?;
        sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
        Ok((parts, body))
    }

    async fn send(&mut self, request: Request<Full<Bytes>>, check: &Check) -> Outcome {
        match self.exchange(request).await {
            Ok((parts, body)) if check(&parts, &body) => Outcome::Expected,
            Ok((parts, body)) => Outcome::Unexpected(format!(
                "HTTP {}: {}",
                parts.status,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(e) => Outcome::Failed(e),
        }
    }
}

async fn open_all(addr: SocketAddr, connections: usize) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        conns.push(Conn::open(addr).await?);
    }
    Ok(conns)
}

/// Sorted latencies, in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn from_unsorted(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        Self(nanos)
    }

    /// Nearest-rank percentile, `per_mille` in 0..=1000 (990 = p99).
    pub fn per_mille(&self, per_mille: usize) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.0.len() * per_mille.min(1000)).div_ceil(1000).max(1);
        Duration::from_nanos(self.0[rank - 1])
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.0.last().copied().unwrap_or(0))
    }

    fn merged(self, other: Self) -> Self {
        let mut all = self.0;
        all.extend(other.0);
        Self::from_unsorted(all)
    }
}

/// What a measured window reads just before and just after it: the CPU time and
/// memory of these processes and, if given, the Redis server's counters.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub pids: &'a [u32],
    pub redis: Option<&'a RedisServer>,
}

impl<'a> Watch<'a> {
    /// These processes only.
    pub fn processes(pids: &'a [u32]) -> Self {
        Self { pids, redis: None }
    }
}

/// CPU time used by a watched process in a window, and its memory at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system time, clock ticks.
    pub ticks: u64,
    pub end: Sample,
}

/// What one measured window (or several, absorbed) produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests completed in the window, whatever their outcome.
    pub requests: u64,
    /// Answers that were not the expected one, and requests without an answer.
    pub unexpected: u64,
    pub failed: u64,
    /// The first of those, for the report.
    pub problem: Option<String>,
    pub elapsed: Duration,
    /// Send → answer read (closed loop); scheduled time → answer read (open loop).
    pub latencies: Latencies,
    /// Open loop only: scheduled time → the driver actually sending (its own lag).
    pub lag: Option<Latencies>,
    /// Each watched process, in the order given.
    pub usage: Vec<Usage>,
    /// The p99 latency of each window absorbed (alternating open loops: one per segment).
    pub segment_p99: Vec<Duration>,
    /// The Redis server's work in the window, if it was watched.
    pub redis: Option<RedisUsage>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        to_f64(self.requests) / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another window of the same scenario (same watched processes).
    pub fn absorb(&mut self, other: Self) {
        self.segment_p99.push(other.latencies.per_mille(990));
        self.requests += other.requests;
        self.unexpected += other.unexpected;
        self.failed += other.failed;
        if self.problem.is_none() {
            self.problem = other.problem;
        }
        self.elapsed += other.elapsed;
        self.latencies = std::mem::take(&mut self.latencies).merged(other.latencies);
        self.lag = match (self.lag.take(), other.lag) {
            (Some(a), Some(b)) => Some(a.merged(b)),
            (a, b) => a.or(b),
        };
        if self.usage.is_empty() {
            self.usage = other.usage;
        } else {
            for (mine, theirs) in self.usage.iter_mut().zip(other.usage) {
                mine.ticks += theirs.ticks;
                mine.end = theirs.end;
            }
        }
        match (&mut self.redis, other.redis) {
            (Some(mine), Some(theirs)) => mine.add(&theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    lags: Vec<u64>,
    requests: u64,
    unexpected: u64,
    failed: u64,
    problem: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.requests += 1;
        match outcome {
            Outcome::Expected => self.latencies.push(nanos(latency)),
            Outcome::Unexpected(p) => {
                self.latencies.push(nanos(latency));
                self.unexpected += 1;
                self.problem.get_or_insert(p);
            }
            Outcome::Failed(p) => {
                self.failed += 1;
                self.problem.get_or_insert(p);
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.lags.extend(other.lags);
        self.requests += other.requests;
        self.unexpected += other.unexpected;
        self.failed += other.failed;
        if self.problem.is_none() {
            self.problem = other.problem;
        }
    }

    fn into_result(
        self,
        elapsed: Duration,
        (usage, redis): (Vec<Usage>, Option<RedisUsage>),
        open_loop: bool,
    ) -> LoadResult {
        LoadResult {
            requests: self.requests,
            unexpected: self.unexpected,
            failed: self.failed,
            problem: self.problem,
            elapsed,
            latencies: Latencies::from_unsorted(self.latencies),
            lag: open_loop.then(|| Latencies::from_unsorted(self.lags)),
            usage,
            segment_p99: Vec::new(),
            redis,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One reading of everything a window watches.
struct Readings {
    processes: Vec<Sample>,
    redis: Option<Reading>,
}

async fn sample_all(watch: Watch<'_>) -> Result<Readings, String> {
    let processes = watch.pids.iter().map(|&pid| procfs::sample_tree(pid).map_err(|e| format!("/proc/{pid}: {e}")));
    let processes = processes.collect::<Result<_, _>>()?;
    let redis = match watch.redis {
        Some(redis) => Some(redis.read().await?),
        None => None,
    };
    Ok(Readings { processes, redis })
}

fn usage(before: Readings, after: Readings) -> (Vec<Usage>, Option<RedisUsage>) {
    let processes = before
        .processes
        .into_iter()
        .zip(after.processes)
        .map(|(b, a)| Usage { ticks: a.ticks.saturating_sub(b.ticks), end: a })
        .collect();
    let redis = before.redis.zip(after.redis).map(|(b, a)| RedisUsage::between(&b, &a));
    (processes, redis)
}

async fn join_all(workers: Vec<tokio::task::JoinHandle<Tally>>) -> Result<Tally, String> {
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.map_err(|e| format!("load worker failed: {e}"))?);
    }
    Ok(total)
}

// ---------------------------------------------------------------- closed loop

/// How long a closed loop runs.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Unmeasured warm-up, then a measured window of this length.
    Timed { warmup: Duration, measure: Duration },
    /// Request numbers `range`, once each, all measured (distinct call legs).
    Numbers(Range<u64>),
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// `connections` connections, each sending its next request when its answer is read.
pub async fn closed_loop(
    target: &Target,
    connections: usize,
    plan: Plan,
    watch: Watch<'_>,
) -> Result<LoadResult, String> {
    let conns = open_all(target.addr, connections).await?;
    let (first, end) = match &plan {
        Plan::Timed { .. } => (0, u64::MAX),
        Plan::Numbers(range) => (range.start, range.end),
    };
    let next = Arc::new(AtomicU64::new(first));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let spawn_workers = |conns: Vec<Conn>| -> Vec<_> {
        conns
            .into_iter()
            .map(|conn| tokio::spawn(closed_worker(conn, target.clone(), Arc::clone(&next), end, Arc::clone(&phase))))
            .collect()
    };
    match plan {
        Plan::Timed { warmup, measure } => {
            let workers = spawn_workers(conns);
            tokio::time::sleep(warmup).await;
            let before = sample_all(watch).await?;
            let start = Instant::now();
            phase.store(MEASURE, Ordering::SeqCst);
            tokio::time::sleep(measure).await;
            phase.store(STOP, Ordering::SeqCst);
            let elapsed = start.elapsed();
            let after = sample_all(watch).await?;
            let tally = join_all(workers).await?;
            Ok(tally.into_result(elapsed, usage(before, after), false))
        }
        Plan::Numbers(_) => {
            phase.store(MEASURE, Ordering::SeqCst);
            let before = sample_all(watch).await?;
            let start = Instant::now();
            let tally = join_all(spawn_workers(conns)).await?;
            let elapsed = start.elapsed();
            let after = sample_all(watch).await?;
            Ok(tally.into_result(elapsed, usage(before, after), false))
        }
    }
}

/// Closed loops on each of `targets` in turn, `rounds` times (`measure / rounds`
/// each, after `warmup` in the first round and at most 250 ms in the others),
/// so that all of them see the same conditions of the machine. Returns one
/// result per target, over all its rounds.
pub async fn closed_loop_alternating(
    targets: &[(&Target, Watch<'_>)],
    connections: usize,
    warmup: Duration,
    measure: Duration,
    rounds: u32,
) -> Result<Vec<LoadResult>, String> {
    let rounds = rounds.max(1);
    let mut results = vec![LoadResult::default(); targets.len()];
    for round in 0..rounds {
        let warmup = if round == 0 { warmup } else { warmup.min(Duration::from_millis(250)) };
        for ((target, watch), result) in targets.iter().zip(&mut results) {
            let plan = Plan::Timed { warmup, measure: measure / rounds };
            result.absorb(closed_loop(target, connections, plan, *watch).await?);
        }
    }
    Ok(results)
}

async fn closed_worker(mut conn: Conn, target: Target, next: Arc<AtomicU64>, end: u64, phase: Arc<AtomicU8>) -> Tally {
    let mut tally = Tally::default();
    while phase.load(Ordering::Relaxed) != STOP {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= end {
            break;
        }
        let request = (target.make)(n);
        let sent = Instant::now();
        let outcome = conn.send(request, &target.check).await;
        let latency = sent.elapsed();
        let failed = matches!(outcome, Outcome::Failed(_));
        if phase.load(Ordering::Relaxed) == MEASURE {
            tally.record(outcome, latency);
        }
        if failed {
            // Do not spin on a dead server.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tally
}

// ---------------------------------------------------------------- open loop

/// A fixed offered rate.
#[derive(Debug, Clone)]
pub struct Rate {
    pub per_second: f64,
    /// Scheduled but not measured, first.
    pub warmup: Duration,
    pub measure: Duration,
    /// Request `i` of the schedule is built as number `first_number + i`.
    pub first_number: u64,
}

struct Job {
    number: u64,
    at: Instant,
    measured: bool,
}

/// Requests at `rate.per_second`, spread over `connections` connections (a free
/// one takes the next due request); latency from each request's scheduled time.
pub async fn open_loop(
    target: &Target,
    connections: usize,
    rate: &Rate,
    watch: Watch<'_>,
) -> Result<LoadResult, String> {
    let conns = open_all(target.addr, connections).await?;
    let per_second = rate.per_second.max(1.0);
    let period = Duration::from_secs_f64(1.0 / per_second);
    let (unmeasured, total) = schedule(rate);
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + period.saturating_mul(u32::try_from(unmeasured).unwrap_or(u32::MAX));

    let (jobs, queue) = unbounded_channel::<Job>();
    let first_number = rate.first_number;
    // A thread, not a tokio timer: tokio's timer wheel has a 1 ms resolution,
    // thread::sleep (nanosleep) is within tens of microseconds.
    let scheduler = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if jobs.send(Job { number: first_number + i, at, measured: i >= unmeasured }).is_err() {
                break;
            }
        }
    });
    let queue = Arc::new(Mutex::new(queue));
    let workers: Vec<_> =
        conns.into_iter().map(|conn| tokio::spawn(open_worker(conn, target.clone(), Arc::clone(&queue)))).collect();

    tokio::time::sleep_until(measured_from.into()).await;
    let before = sample_all(watch).await?;
    let measuring = Instant::now();
    let tally = join_all(workers).await?;
    let elapsed = measuring.elapsed();
    let after = sample_all(watch).await?;
    scheduler.join().map_err(|_| "the scheduler thread panicked".to_owned())?;
    Ok(tally.into_result(elapsed, usage(before, after), true))
}

/// Open loops on `first` and `second` in alternating segments (`rounds` each,
/// `rate.measure / rounds` long, each after its own `rate.warmup`), so that both
/// see the same conditions of the machine; segment `k` of both asks for the same
/// request numbers. Returns the two scenarios' results, each over all its segments.
pub async fn open_loop_alternating(
    first: (&Target, Watch<'_>),
    second: (&Target, Watch<'_>),
    connections: usize,
    rate: &Rate,
    rounds: u32,
) -> Result<(LoadResult, LoadResult), String> {
    let rounds = rounds.max(1);
    let segment = Rate { measure: rate.measure / rounds, ..rate.clone() };
    let per_segment = numbers_needed(&segment, 1);
    let (mut a, mut b) = (LoadResult::default(), LoadResult::default());
    for k in 0..u64::from(rounds) {
        let this = Rate { first_number: rate.first_number + k * per_segment, ..segment.clone() };
        a.absorb(open_loop(first.0, connections, &this, first.1).await?);
        b.absorb(open_loop(second.0, connections, &this, second.1).await?);
    }
    Ok((a, b))
}

/// Requests of one open loop: (unmeasured warm-up ones, all).
fn schedule(rate: &Rate) -> (u64, u64) {
    let per_second = rate.per_second.max(1.0);
    let unmeasured = to_u64(per_second * rate.warmup.as_secs_f64());
    (unmeasured, unmeasured + to_u64(per_second * rate.measure.as_secs_f64()).max(1))
}

/// How many requests [`open_loop_alternating`] sends to each of its two targets.
pub fn scheduled(rate: &Rate, rounds: u32) -> u64 {
    let rounds = rounds.max(1);
    schedule(&Rate { measure: rate.measure / rounds, ..rate.clone() }).1 * u64::from(rounds)
}

/// How many request numbers [`open_loop_alternating`] uses from `rate.first_number` on.
pub fn numbers_needed(rate: &Rate, rounds: u32) -> u64 {
    let rounds = rounds.max(1);
    (schedule(&Rate { measure: rate.measure / rounds, ..rate.clone() }).1 + 1) * u64::from(rounds)
}

async fn open_worker(mut conn: Conn, target: Target, queue: Arc<Mutex<UnboundedReceiver<Job>>>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let job = queue.lock().await.recv().await;
        let Some(job) = job else { break };
        let request = (target.make)(job.number);
        let sent = Instant::now();
        let outcome = conn.send(request, &target.check).await;
        if job.measured {
            tally.lags.push(nanos(sent.saturating_duration_since(job.at)));
            tally.record(outcome, job.at.elapsed());
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::from_unsorted((1..=100).rev().map(|n| n * 1000).collect());
        assert_eq!(l.per_mille(500), Duration::from_micros(50));
        assert_eq!(l.per_mille(990), Duration::from_micros(99));
        assert_eq!(l.per_mille(1000), Duration::from_micros(100));
        assert_eq!(l.per_mille(0), Duration::from_micros(1));
        assert_eq!(l.max(), Duration::from_micros(100));
        assert_eq!(Latencies::default().per_mille(990), Duration::ZERO);
    }
}
