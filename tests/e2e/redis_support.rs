//! Redis for the replica tests: a corner of the shared test Redis per test (its
//! own key prefix, cleaned on drop), a private `redis-server` a test may kill,
//! restart and freeze, and a private Redis Cluster (3 masters, a replica each).
//!
//! The shared Redis is `SG_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`);
//! `scripts/test.sh` and `.ci/run` start one. A test that cannot reach it fails
//! and says so: a test that skips itself would pass with the feature missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};

use crate::common::{TestGateway, commbox_body};

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
pub fn pttl(con: &mut dyn redis::ConnectionLike, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

/// `TYPE key` (`string`, `hash`, `zset`, ..., `none`).
pub fn key_type(con: &mut dyn redis::ConnectionLike, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(con).unwrap()
}

/// A connection for a test's own look at the data: to one Redis, or to a cluster
/// (each command sent to its key's node).
pub enum TestCon {
    Single(Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for TestCon {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<redis::Value> {
        match self {
            Self::Single(c) => c.req_command(cmd),
            Self::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Single(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}

/// A test's own corner of the shared test Redis (a unique key prefix, whose keys
/// are deleted when this is dropped), or a Redis Cluster of its own.
pub struct TestRedis {
    url: String,
    prefix: String,
    cluster: Option<TestCluster>,
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
        Self { url, prefix: unique_prefix(name), cluster: None }
    }

    /// A Redis Cluster of the test's own ([`TestCluster`]), stopped when this is dropped.
    pub fn cluster(name: &str) -> Self {
        let cluster = TestCluster::start();
        Self { url: cluster.url(), prefix: unique_prefix(name), cluster: Some(cluster) }
    }

    /// `store.redis_url`: `redis://` or, for a cluster, `redis+cluster://`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The plain URL of every running node (the one Redis, or each of the cluster's).
    pub fn nodes(&self) -> Vec<String> {
        self.cluster.as_ref().map_or_else(|| vec![self.url.clone()], TestCluster::node_urls)
    }

    /// Every key of this test's prefix, on whichever node holds it.
    pub fn keys(&self) -> Vec<String> {
        let mut found: Vec<String> =
            self.nodes().iter().flat_map(|node| keys(&mut connect(node).unwrap(), &self.prefix)).collect();
        found.sort();
        found.dedup();
        found
    }

    /// The `store.key_prefix` for this test's gateways.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn connection(&self) -> TestCon {
        match &self.cluster {
            Some(cluster) => TestCon::Cluster(Box::new(cluster.connection())),
            None => TestCon::Single(connect(&self.url).unwrap()),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if self.cluster.is_some() {
            // Its own servers, stopped with it.
            return;
        }
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

    pub fn port(&self) -> u16 {
        self.port
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

/// A Redis Cluster of the test's own on loopback ports: three masters with a
/// replica each (`redis-cli --cluster create`), a node timeout of 1 s so that a
/// killed master's replica takes over within a few seconds. Stopped on drop.
pub struct TestCluster {
    nodes: Vec<PrivateRedis>,
}

/// A node as `CLUSTER NODES` lists it: its port, its flags, the slot ranges it serves.
type ClusterNode = (u16, String, Vec<(u16, u16)>);

/// How long a node may be unreachable before the cluster counts it as failed.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

impl TestCluster {
    /// Starts six nodes, makes them one cluster and waits until every node sees
    /// all 16384 slots served and every replica is in sync.
    pub fn start() -> Self {
        let args = || -> Vec<String> {
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                .into_iter()
                .map(str::to_owned)
                .chain(["--cluster-node-timeout".to_owned(), CLUSTER_NODE_TIMEOUT_MS.to_string()])
                // A replica takes over however long its link was down.
                .chain(["--cluster-replica-validity-factor".to_owned(), "0".to_owned()])
                .collect()
        };
        let nodes: Vec<PrivateRedis> = (0..6).map(|_| PrivateRedis::start_with(args())).collect();
        let cli = std::env::var("SG_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{cli}` (it comes with redis-server: redis-tools): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.until_healthy(6);
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The plain URL of every node still running.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(PrivateRedis::url).collect()
    }

    /// A connection to the cluster (each command to its key's master).
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        let client = redis::cluster::ClusterClientBuilder::new(self.node_urls())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        client.get_connection().unwrap()
    }

    /// `CLUSTER NODES` as one running node sees it: (port, flags, slot ranges) per node.
    fn topology(&self) -> Vec<ClusterNode> {
        let url = self.node_urls().into_iter().next().expect("a running node");
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut connect(&url).unwrap()).unwrap();
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((port, (*fields.get(2)?).to_owned(), slots))
            })
            .collect()
    }

    /// Which node (index) is the master serving `key`'s slot now.
    pub fn master_of(&self, key: &str) -> usize {
        let url = self.node_urls().into_iter().next().expect("a running node");
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut connect(&url).unwrap()).unwrap();
        let port = self
            .topology()
            .into_iter()
            .find(|(_, flags, slots)| {
                flags.contains("master")
                    && !flags.contains("fail")
                    && slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .map_or_else(|| panic!("no master serves slot {slot}"), |(port, _, _)| port);
        self.nodes.iter().position(|n| n.port() == port).unwrap()
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// Waits (at most 30 s) until every running node says the cluster is ok with
    /// all slots served, knows `known` nodes, and every running replica is in sync.
    pub fn until_healthy(&self, known: usize) {
        let started = Instant::now();
        loop {
            let healthy = self.node_urls().iter().all(|url| {
                let Ok(mut con) = connect(url) else { return false };
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap_or_default();
                let replication: String = redis::cmd("INFO").arg("replication").query(&mut con).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{known}"))
                    && (replication.contains("role:master") || replication.contains("master_link_status:up"))
            });
            if healthy {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the test cluster is not healthy after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Callers starting CommBox jobs one after another on `gw` (each a store write),
/// for a failover under load: what each request got, and when.
pub struct JobLoad {
    stop: Arc<AtomicBool>,
    stored: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

/// One request of a [`JobLoad`]: when it was answered, its status, how long it took.
pub type Answer = (Instant, u16, Duration);

impl JobLoad {
    /// `workers` callers, each starting jobs one after another until [`Self::stop`].
    pub fn start(gw: &Arc<TestGateway>, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stored = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|worker| {
                let (gw, stop, stored) = (Arc::clone(gw), Arc::clone(&stop), Arc::clone(&stored));
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let sent = Instant::now();
                        let body = commbox_body(&format!("load {worker} {i}"));
                        let r = gw.post("/v1/summaries").json(&body).send().await.unwrap();
                        seen.push((Instant::now(), r.status().as_u16(), sent.elapsed()));
                        if r.status() == 202 {
                            stored.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seen
                })
            })
            .collect();
        Self { stop, stored, workers }
    }

    /// Jobs stored so far.
    pub fn stored(&self) -> usize {
        self.stored.load(Ordering::Relaxed)
    }

    /// Stops the callers: every answer they had.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Vec::new();
        for worker in self.workers {
            seen.extend(worker.await.unwrap());
        }
        seen
    }
}

/// What callers saw around a failover: 202, or 503 while the store took no
/// writes, nothing else. Prints and returns (requests, refused, slowest).
pub fn report_failover(what: &str, followed_in: Duration, seen: &[Answer]) -> (usize, usize, Duration) {
    let refused: Vec<&Answer> = seen.iter().filter(|(_, s, _)| *s != 202).collect();
    assert!(refused.iter().all(|(_, s, _)| *s == 503), "{what}: unexpected statuses: {refused:?}");
    let slowest = seen.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    // 503s come at once (the store's breaker): their count says how fast callers
    // asked, the time between the first and the last how long the store was out.
    let refused_for = match (refused.iter().map(|r| r.0).min(), refused.iter().map(|r| r.0).max()) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    eprintln!(
        "{what} under load: a job stored after the switch {} ms after it; {} requests, {} refused with 503 over {} ms, \
         the slowest {} ms",
        followed_in.as_millis(),
        seen.len(),
        refused.len(),
        refused_for.as_millis(),
        slowest.as_millis()
    );
    assert!(seen.len() > refused.len(), "{what}: no request succeeded around the failover");
    (seen.len(), refused.len(), slowest)
}
