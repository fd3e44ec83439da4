//! Scenario w's machinery: thousands of requests parked in a long-poll at once
//! (`GET /v1/summaries/{id}?wait=60` on a job the CommBox simulator holds), each
//! on its own connection, and the file-descriptor budget they need.
//!
//! Each waiting request is a plain TCP connection carrying a hand-written
//! HTTP/1.1 request (keep-alive, as a long-polling client would send it), so
//! that the driver knows when the last byte of every request has been written;
//! the answer is read by its `Content-Length`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::load::Outcome;
use crate::num::to_f64;
use crate::procfs::{self, Sample};

/// File descriptors kept free for everything else (listeners, pipes, the runtime,
/// the driver's other connections) when capping the number of waiters.
pub const FD_RESERVE: u64 = 100;
/// Connections being opened at once (a listener's accept queue is 1024 deep).
const CONNECTING_AT_ONCE: usize = 128;
/// Connecting and writing one request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for one answer: longer than the longest `wait` (60 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(75);

// ---------------------------------------------------------------- file descriptors

/// This process's soft limit on open files, before and after raising it to the
/// hard limit. The server processes, started after, inherit it.
#[derive(Debug, Clone)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
    pub error: Option<String>,
}

impl FdLimit {
    pub fn describe(&self) -> String {
        let show = |n: u64| if n == u64::MAX { "unlimited".to_owned() } else { crate::driver::thousands(n) };
        match &self.error {
            Some(e) => format!("open files: soft limit {}, not raised ({e})", show(self.now)),
            None if self.now > self.before => format!(
                "open files: soft limit raised from {} to {} (the hard limit); the servers inherit it",
                show(self.before),
                show(self.now)
            ),
            None => format!("open files: soft limit {} (hard {})", show(self.now), show(self.hard)),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit.
pub fn raise_fd_limit() -> FdLimit {
    let (before, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => return FdLimit { before: 0, now: 0, hard: 0, error: Some(format!("getrlimit: {e}")) },
    };
    let error = rlimit::increase_nofile_limit(u64::MAX).err().map(|e| format!("setrlimit: {e}"));
    let now = rlimit::Resource::NOFILE.get().map_or(before, |(soft, _)| soft);
    FdLimit { before, now, hard, error }
}

/// How many of `requested` waiters fit in the smallest of `soft_limits` (one
/// connection, so one descriptor, each in the driver and in the gateway), with
/// [`FD_RESERVE`] kept free; and a note when that is fewer.
pub fn usable_waiters(requested: usize, soft_limits: &[u64]) -> (usize, Option<String>) {
    let smallest = soft_limits.iter().copied().min().unwrap_or(u64::MAX);
    let room = usize::try_from(smallest.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1);
    if requested <= room {
        (requested, None)
    } else {
        let note = format!(
            "capped at {room} waiters (requested {requested}): the open-files soft limit is {smallest} \
             and each waiter needs a descriptor in the driver and in the gateway (raise `ulimit -n`)"
        );
        (room, Some(note))
    }
}

// ---------------------------------------------------------------- the waiters

/// `GET path` with a bearer key, keep-alive.
pub fn get_request(addr: SocketAddr, path: &str, key: &str) -> Bytes {
    Bytes::from(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\r\n"))
}

/// One waiter's end: when its answer was read (none if it got none) and whether
/// it was the expected one (200, `"status":"completed"`).
pub struct Answer {
    pub at: Option<Instant>,
    pub outcome: Outcome,
}

#[derive(Default)]
struct Progress {
    written: AtomicUsize,
    failed: AtomicUsize,
}

/// Requests sent on connections of their own, waiting for their answers.
pub struct Parked {
    tasks: Vec<JoinHandle<Answer>>,
    progress: Arc<Progress>,
}

/// Opens `count` connections to `addr` and sends `request` on each (at most
/// [`CONNECTING_AT_ONCE`] being opened at a time).
pub fn park(addr: SocketAddr, request: &Bytes, count: usize) -> Parked {
    let progress = Arc::new(Progress::default());
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let tasks = (0..count)
        .map(|_| tokio::spawn(wait_one(addr, request.clone(), Arc::clone(&connecting), Arc::clone(&progress))))
        .collect();
    Parked { tasks, progress }
}

impl Parked {
    /// Waits until every request has been written (or failed to be); returns (written, failed).
    pub async fn all_written(&self, within: Duration) -> Result<(usize, usize), String> {
        let deadline = Instant::now() + within;
        loop {
            let written = self.progress.written.load(Ordering::Relaxed);
            let failed = self.progress.failed.load(Ordering::Relaxed);
            if written + failed >= self.tasks.len() {
                return Ok((written, failed));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {written} of {} waiting requests written after {} s ({failed} failed)",
                    self.tasks.len(),
                    within.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for every answer.
    pub async fn answers(self) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            answers.push(task.await.unwrap_or_else(|e| Answer { at: None, outcome: Outcome::Failed(e.to_string()) }));
        }
        answers
    }
}

async fn wait_one(addr: SocketAddr, request: Bytes, connecting: Arc<Semaphore>, progress: Arc<Progress>) -> Answer {
    let sent = {
        let _permit = connecting.acquire().await;
        tokio::time::timeout(WRITE_TIMEOUT, async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
            stream.write_all(&request).await.map_err(|e| format!("write: {e}"))?;
            Ok::<_, String>(stream)
        })
        .await
        .unwrap_or_else(|_| Err(format!("not connected and written within {} s", WRITE_TIMEOUT.as_secs())))
    };
    let mut stream = match sent {
        Ok(stream) => {
            progress.written.fetch_add(1, Ordering::Relaxed);
            stream
        }
        Err(e) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return Answer { at: None, outcome: Outcome::Failed(e) };
        }
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, read_response(&mut stream)).await {
        Ok(Ok((status, body))) => Answer { at: Some(Instant::now()), outcome: judge(status, &body) },
        Ok(Err(e)) => Answer { at: None, outcome: Outcome::Failed(e) },
        Err(_) => {
            Answer { at: None, outcome: Outcome::Failed(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())) }
        }
    }
}

/// 200 with a completed summary is the expected answer.
fn judge(status: u16, body: &[u8]) -> Outcome {
    let completed = serde_json::from_slice::<Value>(body).is_ok_and(|v| v["status"] == "completed");
    if status == 200 && completed {
        Outcome::Expected
    } else {
        Outcome::Unexpected(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])))
    }
}

/// Reads one HTTP/1.1 response: (status, body), the body by `Content-Length`
/// (to the end of the stream without one).
async fn read_response(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head) = head_length(&buf) {
            let (status, length) = parse_head(&buf[..head])?;
            if let Some(length) = length
                && buf.len() >= head + length
            {
                return Ok((status, buf[head..head + length].to_vec()));
            }
        }
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            let head = head_length(&buf).ok_or("the connection closed before an answer")?;
            let (status, length) = parse_head(&buf[..head])?;
            return match length {
                None => Ok((status, buf[head..].to_vec())),
                Some(_) => Err("the connection closed in the middle of the body".to_owned()),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the head (status line and headers, with the blank line), once complete.
fn head_length(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The status and the `Content-Length` of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "a response head that is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok());
    Ok((status, length))
}

// ---------------------------------------------------------------- settling

/// How often [`settle`] reads the process.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Readings spanning one second: the process is settled when they barely differ.
const STABLE_READINGS: usize = 5;
/// Settled: at most this much CPU over that second…
const STABLE_CPU: Duration = Duration::from_millis(20);
/// …and RSS within this many KiB.
const STABLE_RSS_KIB: u64 = 256;

/// Where [`settle`] stopped.
pub struct Settled {
    /// The last reading.
    pub sample: Sample,
    /// Time from the call to it.
    pub after: Duration,
    /// False if `at_most` passed first.
    pub stable: bool,
}

/// Reads `pid` every 250 ms until its CPU time and RSS have been stable for a
/// second (at most 20 ms of CPU, RSS within 256 KiB), or `at_most` has passed.
pub async fn settle(pid: u32, ticks_per_second: u64, at_most: Duration) -> Result<Settled, String> {
    let start = Instant::now();
    let read = || procfs::sample(pid).map_err(|e| format!("/proc/{pid}: {e}"));
    let mut readings = vec![read()?];
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        readings.push(read()?);
        let stable = is_stable(&readings, ticks_per_second);
        if stable || start.elapsed() >= at_most {
            let sample = readings.last().copied().unwrap_or_default();
            return Ok(Settled { sample, after: start.elapsed(), stable });
        }
    }
}

/// Whether the last [`STABLE_READINGS`] readings (one second) barely differ.
fn is_stable(readings: &[Sample], ticks_per_second: u64) -> bool {
    let Some(window) = readings.len().checked_sub(STABLE_READINGS).map(|from| &readings[from..]) else {
        return false;
    };
    let (first, last) = (window[0], window[window.len() - 1]);
    let rss = window.iter().map(|s| s.rss_kib);
    let (low, high) = (rss.clone().min().unwrap_or(0), rss.max().unwrap_or(0));
    procfs::cpu_between(first, last, ticks_per_second) <= STABLE_CPU && high - low <= STABLE_RSS_KIB
}

/// RSS growth from `before` to `after` per request, in bytes (negative if it shrank).
pub fn bytes_per_request(before: Sample, after: Sample, requests: usize) -> f64 {
    (to_f64(after.rss_kib) - to_f64(before.rss_kib)) * 1024.0 / to_f64(u64::try_from(requests.max(1)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_waiters_at_the_smallest_soft_limit() {
        assert_eq!(usable_waiters(2000, &[20_000, 1_048_576]), (2000, None));
        let (n, note) = usable_waiters(2000, &[1024, 4096]);
        assert_eq!(n, 924);
        assert!(note.is_some_and(|n| n.contains("1024")));
        assert_eq!(usable_waiters(5, &[50]).0, 1);
        assert_eq!(usable_waiters(7, &[]), (7, None));
    }

    #[test]
    fn parses_a_response_head() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 24\r\n\r\n{\"status\":\"completed\"}..";
        let head = head_length(raw).unwrap();
        assert_eq!(parse_head(&raw[..head]).unwrap(), (200, Some(24)));
        assert_eq!(parse_head(b"HTTP/1.1 202 Accepted\r\n\r\n").unwrap(), (202, None));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert_eq!(head_length(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn judges_answers() {
        assert!(matches!(judge(200, br#"{"id":"sum_1","status":"completed"}"#), Outcome::Expected));
        assert!(matches!(judge(200, br#"{"id":"sum_1","status":"pending"}"#), Outcome::Unexpected(_)));
        assert!(matches!(judge(504, br#"{"status":"completed"}"#), Outcome::Unexpected(_)));
    }

    #[test]
    fn stability_needs_a_quiet_second() {
        let at = |ticks, rss_kib| Sample { ticks, rss_kib, hwm_kib: rss_kib };
        let quiet = [at(10, 5000), at(10, 5100), at(11, 5000), at(12, 5200), at(12, 5100)];
        assert!(is_stable(&quiet, 100));
        assert!(!is_stable(&quiet[1..], 100), "less than a second of readings");
        let busy = [at(10, 5000), at(12, 5000), at(14, 5000), at(16, 5000), at(18, 5000)];
        assert!(!is_stable(&busy, 100));
        let growing = [at(10, 5000), at(10, 5200), at(10, 5400), at(10, 5600), at(10, 5800)];
        assert!(!is_stable(&growing, 100));
    }

    #[test]
    fn bytes_per_request_is_the_growth_shared_out() {
        let at = |rss_kib| Sample { ticks: 0, rss_kib, hwm_kib: rss_kib };
        assert!((bytes_per_request(at(1000), at(3000), 2048) - 1000.0).abs() < 1e-9);
        assert!(bytes_per_request(at(3000), at(1000), 2048) < 0.0);
    }
}
