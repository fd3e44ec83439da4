//! The Redis the gateway under test stores in (`--redis-url`).
//!
//! - the run's key prefix, `sgbench-<pid>-<random>`, and the deletion of every
//!   key under it at the end (`SCAN MATCH <prefix>:*` + `DEL`);
//! - readings of the server's counters around each measured window: calls per
//!   command (`INFO commandstats`) and the server's CPU time (`INFO cpu`,
//!   `used_cpu_sys + used_cpu_user`);
//! - a `MONITOR` probe that tells the commands the gateway *sends* (its round
//!   trips) from those its Lua scripts run inside Redis. `INFO commandstats`
//!   counts both: a script's `redis.call('GET', …)` adds to `cmdstat_get` like a
//!   client's `GET`.
//!
//! The counters are the server's, not the gateway's: another client of the same
//! Redis during the run counts in them (the report shows an idle reading).

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Connection, Value};

use crate::num::to_f64;

/// Connecting, and any one command of the driver's.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Keys deleted per `DEL`.
const DEL_BATCH: usize = 500;

/// A connection to the Redis server of the run, and what the run put there.
pub struct RedisServer {
    client: Client,
    /// For the set-up, the probe's marks and the clean-up (blocking is fine there).
    conn: Mutex<Connection>,
    /// For the readings at the edges of measured windows: they must not block the load generator's thread.
    readings: MultiplexedConnection,
    /// The URL as printed: without its password.
    pub shown_url: String,
    /// Every key of the gateway under test starts `<prefix>:`.
    pub prefix: String,
    /// `redis_version` of `INFO server`.
    pub version: String,
    /// Clients connected besides the driver's when the run started.
    pub other_clients: u64,
    deleted: AtomicBool,
}

impl RedisServer {
    /// Connects (at most 5 s), and picks the run's key prefix.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let shown_url = hide_password(url);
        let client = Client::open(url).map_err(|e| format!("--redis-url {shown_url}: {e}"))?;
        let conn = client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| format!("cannot connect to Redis at {shown_url}: {e}"))?;
        conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| format!("Redis: {e}"))?;
        conn.set_write_timeout(Some(TIMEOUT)).map_err(|e| format!("Redis: {e}"))?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT));
        let readings = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to Redis at {shown_url}: {e}"))?;
        let mut server = Self {
            client,
            conn: Mutex::new(conn),
            readings,
            shown_url,
            prefix: unique_prefix(),
            version: String::new(),
            other_clients: 0,
            // Nothing to delete until the connection is known to work.
            deleted: AtomicBool::new(true),
        };
        let info = server.info("server")?;
        let clients = server.info("clients")?;
        info_field(&info, "redis_version").unwrap_or("?").clone_into(&mut server.version);
        server.other_clients = info_field(&clients, "connected_clients")
            .and_then(|n| n.parse::<u64>().ok())
            // Less this driver's two connections.
            .map_or(0, |n| n.saturating_sub(2));
        server.deleted = AtomicBool::new(false);
        Ok(server)
    }

    fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.conn.lock().map_err(|_| "the Redis connection is poisoned".to_owned())?;
        command.query(&mut *conn).map_err(|e| format!("Redis ({}): {e}", self.shown_url))
    }

    fn info(&self, section: &str) -> Result<String, String> {
        self.query(redis::cmd("INFO").arg(section))
    }

    /// The server's counters now: `INFO cpu` and `INFO commandstats` in one round
    /// trip (an `INFO` is not counted in its own answer; [`RedisUsage`] leaves them out).
    pub async fn read(&self) -> Result<Reading, String> {
        let mut conn = self.readings.clone();
        let (cpu, stats): (String, String) = redis::pipe()
            .cmd("INFO")
            .arg("cpu")
            .cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("Redis ({}): {e}", self.shown_url))?;
        Ok(Reading {
            calls: parse_commandstats(&stats),
            cpu: parse_cpu(&cpu).ok_or("Redis: INFO cpu has no used_cpu_sys/used_cpu_user")?,
        })
    }

    /// `ECHO text`: a mark in a `MONITOR` stream.
    pub fn echo(&self, text: &str) -> Result<(), String> {
        self.query::<String>(redis::cmd("ECHO").arg(text)).map(drop)
    }

    /// `MEMORY USAGE key`: the bytes Redis uses for it, value and overhead.
    pub fn memory_usage(&self, key: &str) -> Result<Option<u64>, String> {
        self.query(redis::cmd("MEMORY").arg("USAGE").arg(key))
    }

    /// The summary key of `id` in the gateway's layout (gateway/src/store/redis/mod.rs).
    pub fn summary_key(&self, id: &str) -> String {
        format!("{}:{{{id}}}:summary", self.prefix)
    }

    /// Deletes every key under the run's prefix (once); how many there were.
    pub fn delete_keys(&self) -> Result<u64, String> {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return Ok(0);
        }
        let pattern = format!("{}:*", self.prefix);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) =
                self.query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000))?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice.
        keys.sort_unstable();
        keys.dedup();
        let mut deleted = 0;
        for batch in keys.chunks(DEL_BATCH) {
            deleted += self.query::<u64>(redis::cmd("DEL").arg(batch))?;
        }
        Ok(deleted)
    }

    /// Starts a `MONITOR` on a connection of its own; it records every line
    /// until one holds `stop`.
    pub fn monitor(&self, stop: String) -> Result<Monitor, String> {
        let mut conn = self
            .client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| format!("cannot connect to Redis for MONITOR: {e}"))?;
        conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| format!("Redis: {e}"))?;
        conn.send_packed_command(&redis::cmd("MONITOR").get_packed_command())
            .and_then(|()| conn.recv_response())
            .map_err(|e| format!("Redis refused MONITOR: {e}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&lines);
        let thread = std::thread::spawn(move || {
            loop {
                let line = match conn.recv_response() {
                    Ok(Value::SimpleString(line)) => line,
                    Ok(other) => return Err(format!("MONITOR sent {other:?}")),
                    Err(e) => return Err(format!("MONITOR: {e}")),
                };
                let last = line.contains(&stop);
                if let Ok(mut lines) = recorded.lock() {
                    lines.push(line);
                }
                if last {
                    return Ok(());
                }
            }
        });
        Ok(Monitor { lines, thread })
    }
}

impl Drop for RedisServer {
    /// The run's keys go even when it fails half-way (the gateway has stopped by
    /// then: the server processes are dropped before this).
    fn drop(&mut self) {
        match self.delete_keys() {
            Ok(0) => {}
            Ok(n) => eprintln!("sg-bench: deleted {n} Redis keys under {}:*", self.prefix),
            Err(e) => eprintln!("sg-bench: could not delete the Redis keys under {}:*: {e}", self.prefix),
        }
    }
}

/// `sgbench-<pid>-<8 random hex digits>`.
fn unique_prefix() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // RandomState is seeded randomly per process.
    let random = RandomState::new().hash_one(nanos) & 0xffff_ffff;
    format!("sgbench-{}-{random:08x}", std::process::id())
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// A `field:value` line of an `INFO` answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
}

/// `cmdstat_<name>:calls=12,usec=30,…` lines → name → calls. Subcommands keep
/// their `|` (`client|list`).
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// `used_cpu_sys + used_cpu_user` of `INFO cpu` (seconds, µs precision).
fn parse_cpu(info: &str) -> Option<Duration> {
    let seconds = |field| info_field(info, field)?.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
    Some(Duration::from_secs_f64(seconds("used_cpu_sys")? + seconds("used_cpu_user")?))
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Calls per command since the server started (or its last `CONFIG RESETSTAT`).
    pub calls: BTreeMap<String, u64>,
    /// Its CPU time, all threads.
    pub cpu: Duration,
}

/// What the server did between two readings (or over several windows, added).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisUsage {
    /// Calls per command, the driver's own `INFO` left out.
    pub calls: BTreeMap<String, u64>,
    pub cpu: Duration,
}

impl RedisUsage {
    pub fn between(before: &Reading, after: &Reading) -> Self {
        let calls = after
            .calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, &n)| (name.clone(), n.saturating_sub(before.calls.get(name).copied().unwrap_or(0))))
            .filter(|&(_, n)| n > 0)
            .collect();
        Self { calls, cpu: after.cpu.saturating_sub(before.cpu) }
    }

    pub fn add(&mut self, other: &Self) {
        for (name, n) in &other.calls {
            *self.calls.entry(name.clone()).or_default() += n;
        }
        self.cpu += other.cpu;
    }

    /// Commands executed, those run inside scripts included.
    pub fn commands(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Redis CPU µs per request.
    pub fn cpu_per_request(&self, requests: u64) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / to_f64(requests.max(1))
    }
}

/// `evalsha 1.00, get 2.00`: calls per request, most first; the commands under
/// 0.005 per request (another client's, a background task's) only counted.
pub fn breakdown(calls: &BTreeMap<String, u64>, requests: u64) -> String {
    let per_request = |n: u64| to_f64(n) / to_f64(requests.max(1));
    let mut all: Vec<(&str, u64)> = calls.iter().map(|(name, &n)| (name.as_str(), n)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let (big, small): (Vec<_>, Vec<_>) = all.into_iter().partition(|&(_, n)| per_request(n) >= 0.005);
    let mut parts: Vec<String> = big.iter().map(|&(name, n)| format!("{name} {:.2}", per_request(n))).collect();
    if !small.is_empty() {
        let rest: u64 = small.iter().map(|&(_, n)| n).sum();
        let others =
            if small.len() == 1 { "1 other command".to_owned() } else { format!("{} other commands", small.len()) };
        parts.push(format!("+ {rest} calls of {others}"));
    }
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

/// `evalsha 8, get 4`: plain counts, most first.
pub fn counts(calls: &BTreeMap<String, u64>) -> String {
    let mut all: Vec<(&String, &u64)> = calls.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = all.iter().map(|(name, n)| format!("{name} {n}")).collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

// ---------------------------------------------------------------- MONITOR

/// A running `MONITOR` (see [`RedisServer::monitor`]).
pub struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    thread: JoinHandle<Result<(), String>>,
}

impl Monitor {
    /// Waits (at most 10 s) for the stop line, and returns every line recorded.
    pub async fn finish(self) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.thread.is_finished() {
            if Instant::now() > deadline {
                return Err("MONITOR: the stop mark never came".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.thread.join().map_err(|_| "the MONITOR thread panicked".to_owned())??;
        Ok(std::mem::take(&mut *self.lines.lock().map_err(|_| "MONITOR lines poisoned".to_owned())?))
    }
}

/// One line of a `MONITOR` stream:
/// `1795229428.578342 [0 127.0.0.1:60850] "evalsha" "8e97…" "1" "key"`, or
/// `… [0 lua] "GET" "key"` for a command a script ran.
#[derive(Debug, PartialEq, Eq)]
struct MonitorLine<'a> {
    /// `127.0.0.1:60850`, `unix:/path`, or `lua`.
    source: &'a str,
    /// Lower case.
    command: String,
    /// The quoted command and its arguments, as printed.
    text: &'a str,
}

fn parse_monitor_line(line: &str) -> Option<MonitorLine<'_>> {
    let open = line.find(" [")? + 2;
    let close = open + line[open..].find("] \"")?;
    let source = line[open..close].split_once(' ')?.1;
    let text = &line[close + 2..];
    let command = text.strip_prefix('"')?.split('"').next()?.to_ascii_lowercase();
    Some(MonitorLine { source, command, text })
}

/// The gateway's commands between two marks of a `MONITOR` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// Commands the gateway sent (each a round trip, unless pipelined).
    pub sent: BTreeMap<String, u64>,
    /// Commands its scripts ran inside Redis.
    pub inside: BTreeMap<String, u64>,
}

impl RoundTrips {
    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    pub fn inside_total(&self) -> u64 {
        self.inside.values().sum()
    }
}

/// Splits a `MONITOR` stream at `marks` (lines holding them, in order) and
/// counts, between each mark and the next, the commands of the gateway's
/// connections and those their scripts ran.
///
/// A connection is the gateway's if one of its commands names a key under
/// `prefix` anywhere in the stream (the marks excepted: the driver sends them);
/// then all its commands count, keyless ones too. A script's commands follow
/// the command that ran it (a script is atomic), so `lua` lines count for the
/// connection of the line before them.
pub fn round_trips(lines: &[String], prefix: &str, marks: &[&str]) -> Vec<RoundTrips> {
    let parsed: Vec<MonitorLine<'_>> = lines.iter().filter_map(|l| parse_monitor_line(l)).collect();
    let is_mark = |l: &MonitorLine<'_>| marks.iter().any(|m| l.text.contains(m));
    let key_prefix = format!("{prefix}:");
    let mut gateway: Vec<&str> = parsed
        .iter()
        .filter(|l| l.source != "lua" && !is_mark(l) && l.text.contains(&key_prefix))
        .map(|l| l.source)
        .collect();
    gateway.sort_unstable();
    gateway.dedup();

    let mut out = vec![RoundTrips::default(); marks.len().saturating_sub(1)];
    let mut segment: Option<usize> = None;
    let mut last_is_gateway = false;
    for line in &parsed {
        if let Some(i) = marks.iter().position(|m| line.text.contains(m)) {
            segment = (i < out.len()).then_some(i);
            last_is_gateway = false;
            continue;
        }
        let Some(trips) = segment.and_then(|i| out.get_mut(i)) else { continue };
        if line.source == "lua" {
            if last_is_gateway {
                *trips.inside.entry(line.command.clone()).or_default() += 1;
            }
        } else {
            last_is_gateway = gateway.binary_search(&line.source).is_ok();
            if last_is_gateway {
                *trips.sent.entry(line.command.clone()).or_default() += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commandstats() {
        let info = "# Commandstats\r\n\
            cmdstat_get:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=7,usec=140,usec_per_call=20.00,rejected_calls=0,failed_calls=1\r\n\
            cmdstat_client|list:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_broken:usec=9\r\n";
        let calls = parse_commandstats(info);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls["get"], 12);
        assert_eq!(calls["evalsha"], 7);
        assert_eq!(calls["client|list"], 2);
        assert!(parse_commandstats("# Commandstats\r\n").is_empty());
    }

    #[test]
    fn parses_cpu() {
        let info = "# CPU\r\nused_cpu_sys:0.551828\r\nused_cpu_user:0.579436\r\nused_cpu_sys_children:0.000000\r\n\
            used_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:0.547081\r\n";
        assert_eq!(parse_cpu(info), Some(Duration::from_micros(1_131_264)));
        assert_eq!(parse_cpu("# CPU\r\nused_cpu_sys:1.0\r\n"), None);
        assert_eq!(info_field("# Server\r\nredis_version:7.0.15\r\n", "redis_version"), Some("7.0.15"));
    }

    #[test]
    fn usage_is_the_difference_without_info() {
        let before = Reading {
            calls: BTreeMap::from([("get".into(), 10), ("info".into(), 3), ("set".into(), 5)]),
            cpu: Duration::from_millis(100),
        };
        let after = Reading {
            calls: BTreeMap::from([("get".into(), 30), ("info".into(), 5), ("set".into(), 5), ("evalsha".into(), 20)]),
            cpu: Duration::from_millis(150),
        };
        let mut usage = RedisUsage::between(&before, &after);
        assert_eq!(usage.calls, BTreeMap::from([("evalsha".into(), 20), ("get".into(), 20)]));
        assert_eq!(usage.commands(), 40);
        assert!((usage.cpu_per_request(20) - 2500.0).abs() < 1e-6);
        usage.add(&usage.clone());
        assert_eq!((usage.commands(), usage.cpu), (80, Duration::from_millis(100)));
        assert_eq!(breakdown(&usage.calls, 40), "evalsha 1.00, get 1.00");
        let noisy = BTreeMap::from([("get".into(), 1000), ("zrange".into(), 2), ("publish".into(), 1)]);
        assert_eq!(breakdown(&noisy, 1000), "get 1.00, + 3 calls of 2 other commands");
        assert_eq!(breakdown(&BTreeMap::new(), 10), "none");
        assert_eq!(counts(&noisy), "get 1000, zrange 2, publish 1");
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(hide_password("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(hide_password("redis://:s3cret@host:6379"), "redis://:***@host:6379");
        assert_eq!(hide_password("redis://me:s3cret@host/1"), "redis://me:***@host/1");
        assert!(unique_prefix().starts_with(&format!("sgbench-{}-", std::process::id())));
    }

    #[test]
    fn parses_monitor_lines() {
        let line = r#"1795229428.578342 [0 127.0.0.1:60850] "evalsha" "8e97" "1" "p:{rl:bench}:gcra""#;
        let parsed = parse_monitor_line(line).unwrap();
        assert_eq!((parsed.source, parsed.command.as_str()), ("127.0.0.1:60850", "evalsha"));
        let lua = parse_monitor_line(r#"1795229428.578372 [0 lua] "TIME""#).unwrap();
        assert_eq!((lua.source, lua.command.as_str()), ("lua", "time"));
        assert_eq!(parse_monitor_line("OK"), None);
    }

    #[test]
    fn counts_the_gateways_round_trips_between_marks() {
        let lines: Vec<String> = [
            r#"1.0 [0 127.0.0.1:1] "echo" "p:mark:0""#,
            r#"1.1 [0 127.0.0.1:2] "evalsha" "ab" "1" "p:{rl:bench}:gcra" "1" "1000000""#,
            r#"1.2 [0 lua] "TIME""#,
            r#"1.3 [0 lua] "GET" "p:{rl:bench}:gcra""#,
            r#"1.4 [0 lua] "SET" "p:{rl:bench}:gcra" "1" "PX" "1""#,
            r#"1.5 [0 127.0.0.1:2] "GET" "p:{sum_1}:summary""#,
            // Another client of the same Redis, and its script: not the gateway's.
            r#"1.6 [0 127.0.0.1:9] "evalsha" "cd" "1" "other:key""#,
            r#"1.7 [0 lua] "GET" "other:key""#,
            // A keyless command on a connection of the gateway's counts.
            r#"1.8 [0 127.0.0.1:2] "PING""#,
            r#"2.0 [0 127.0.0.1:1] "echo" "p:mark:1""#,
            r#"2.1 [0 127.0.0.1:2] "GET" "p:{sum_1}:summary""#,
            r#"3.0 [0 127.0.0.1:1] "echo" "p:mark:2""#,
            r#"3.1 [0 127.0.0.1:2] "GET" "p:{sum_1}:summary""#,
        ]
        .map(String::from)
        .to_vec();
        let trips = round_trips(&lines, "p", &["p:mark:0", "p:mark:1", "p:mark:2"]);
        assert_eq!(trips.len(), 2);
        assert_eq!(trips[0].sent, BTreeMap::from([("evalsha".into(), 1), ("get".into(), 1), ("ping".into(), 1)]));
        assert_eq!(trips[0].inside, BTreeMap::from([("get".into(), 1), ("set".into(), 1), ("time".into(), 1)]));
        assert_eq!((trips[0].sent_total(), trips[0].inside_total()), (3, 3));
        assert_eq!(trips[1].sent, BTreeMap::from([("get".into(), 1)]));
        assert!(trips[1].inside.is_empty());
    }
}
