//! Redis for the replica tests: a corner of the shared test Redis per test (its
//! own key prefix, cleaned on drop), and a private `redis-server` a test may kill,
//! restart and freeze.
//!
//! The shared Redis is `SG_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`);
//! `scripts/test.sh` and `.ci/run` start one. A test that cannot reach it fails
//! and says so: a test that skips itself would pass with the feature missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};

/// The shared test Redis.
pub fn shared_url() -> String {
    std::env::var("SG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection whose every command gives up after 2 s.
pub fn connect(url: &str) -> RedisResult<Connection> {
    let timeout = Duration::from_secs(2);
    let con = redis::Client::open(url)?.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

fn ping(url: &str) -> RedisResult<()> {
    let mut con = connect(url)?;
    redis::cmd("PING").query::<String>(&mut con).map(drop)
}

/// A prefix no other test (or run) uses: `sgtest-<name>-<pid>-<random>`.
pub fn unique_prefix(name: &str) -> String {
    format!("sgtest-{name}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Every key starting `<prefix>:` (SCAN: never blocks the shared server like KEYS).
pub fn keys(con: &mut Connection, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}:*");
    let mut cursor = 0_u64;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).query(con).unwrap();
        found.extend(batch);
        if next == 0 {
            found.sort();
            found.dedup();
            return found;
        }
        cursor = next;
    }
}

/// `PTTL key`: milliseconds left, -1 without expiry, -2 when there is no such key.
pub fn pttl(con: &mut Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

/// `TYPE key` (`string`, `hash`, `zset`, ..., `none`).
pub fn key_type(con: &mut Connection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(con).unwrap()
}

/// A test's own corner of the shared test Redis: a unique key prefix, whose keys
/// are deleted when this is dropped.
pub struct TestRedis {
    url: String,
    prefix: String,
}

impl TestRedis {
    /// Fails the test when the shared Redis is not reachable.
    pub fn new(name: &str) -> Self {
        let url = shared_url();
        if let Err(e) = ping(&url) {
            panic!(
                "the replica tests need a Redis at {url} (SG_TEST_REDIS_URL; scripts/test.sh and .ci/run start one, \
                 or run `redis-server --save '' --appendonly no`): {e}"
            );
        }
        Self { url, prefix: unique_prefix(name) }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `store.key_prefix` for this test's gateways.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn connection(&self) -> Connection {
        connect(&self.url).unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // Best effort: a failing clean-up must not hide the test's own failure.
        let Ok(mut con) = connect(&self.url) else { return };
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0_u64;
        loop {
            let Ok((next, batch)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query::<(u64, Vec<String>)>(&mut con)
            else {
                return;
            };
            if !batch.is_empty() {
                let _ = redis::cmd("DEL").arg(&batch).query::<i64>(&mut con);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// A `redis-server` of the test's own on a free port, persisting every write
/// (`--appendonly yes --appendfsync always`, no RDB snapshots) into a temporary
/// directory, so that it can be SIGKILLed and started again on the same port with
/// its data. Killed on drop.
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS, ACL users).
    extra: Vec<String>,
}

/// A free port on 127.0.0.1 (bound to port 0, then freed for the server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PrivateRedis {
    /// Starts it and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Starts it with more arguments (`--tls-port`, `--user`, ...); its plain port
    /// ([`Self::url`]) stays open for the test's own look at the data.
    pub fn start_with(extra: Vec<String>) -> Self {
        let mut redis = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, extra };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the server (again) on its port, with the data it had; waits (at
    /// most 10 s) until it answers PING.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let binary = std::env::var("SG_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{binary}` (install redis-server or set SG_TEST_REDIS_SERVER): {e}")
            });
        self.child = Some(child);
        let started = Instant::now();
        // PING fails while it starts and while it loads its append-only file;
        // a refusal to answer (NOAUTH: the default user is off) means it is up.
        while let Err(e) = ping(&self.url()).or_else(|e| if e.is_io_error() { Err(e) } else { Ok(()) }) {
            if started.elapsed() > Duration::from_secs(10)
                || self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("the private redis-server on port {} did not come up: {e}\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: gone at once, like a crashed or evicted Redis. Connections to it
    /// are refused until [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the "slow Redis". Connections are still accepted (by the kernel)
    /// but no command is answered until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", child.id());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        self.stop();
    }
}
