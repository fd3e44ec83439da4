//! Redis behind Sentinel: a primary, a replica and three sentinels of the
//! test's own on loopback ports, a gateway that finds the primary through the
//! sentinels, and a failover forced under load. The gateway must follow it
//! without a restart: new jobs are stored on the new primary, a job started
//! before the switch ends there, and what callers saw during the switch is
//! counted (asynchronous summaries need the store: they are refused with 503
//! while no primary takes writes; nothing else fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Setup, TestGateway, commbox_body};
use crate::redis_support::{JobLoad, PrivateRedis, connect, free_port, keys, report_failover, unique_prefix};

const MASTER: &str = "sgtest";

/// A `redis-server --sentinel` of the test's own, monitoring `primary_port`.
struct Sentinel {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(primary_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf: PathBuf = dir.path().join("sentinel.conf");
        // Sentinel rewrites its file: it must be writable, one per sentinel.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let binary = std::env::var("SG_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        let sentinel = Self { port, child, _dir: dir };
        sentinel.until("answers", |s| s.query::<String>(&["PING"]).is_ok());
        sentinel
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut connect(&self.url())?)
    }

    /// The primary's port as this sentinel names it.
    fn primary_port(&self) -> Option<u16> {
        self.query::<Option<(String, u16)>>(&["SENTINEL", "get-master-addr-by-name", MASTER])
            .ok()
            .flatten()
            .map(|a| a.1)
    }

    /// Waits (at most 20 s) for `condition`, polling every 50 ms.
    fn until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !condition(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sentinel {}: timed out waiting until it {what}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this sentinel sees the replica on `port`, in sync with its primary.
fn sees_replica(sentinel: &Sentinel, port: u16) -> bool {
    let Ok(replicas) =
        sentinel.query::<Vec<std::collections::HashMap<String, String>>>(&["SENTINEL", "replicas", MASTER])
    else {
        return false;
    };
    replicas.iter().any(|r| {
        r.get("port").map(String::as_str) == Some(&port.to_string())
            && r.get("flags").map(String::as_str) == Some("slave")
            && r.get("master-link-status").map(String::as_str) == Some("ok")
    })
}

/// `SENTINEL FAILOVER`: the primary hands over (writes paused, then moved).
#[tokio::test]
async fn the_gateway_follows_a_forced_sentinel_failover_under_load() {
    failover_under_load(false).await;
}

/// The primary SIGKILLed: the sentinels agree it is down (after 1 s) and promote the replica.
#[tokio::test]
async fn the_gateway_follows_the_sentinels_when_the_primary_dies_under_load() {
    failover_under_load(true).await;
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom: topology, load, switch, what callers saw")]
async fn failover_under_load(kill: bool) {
    let mut primary = PrivateRedis::start();
    let primary_port: u16 = primary.url().rsplit(':').next().unwrap().parse().unwrap();
    let replica = PrivateRedis::start_with(vec!["--replicaof".into(), "127.0.0.1".into(), primary_port.to_string()]);
    let replica_port: u16 = replica.url().rsplit(':').next().unwrap().parse().unwrap();
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary_port)).collect();
    for s in &sentinels {
        s.until("sees the replica in sync", |s| sees_replica(s, replica_port));
    }

    let prefix = unique_prefix("sentinel");
    let nodes: Vec<String> = sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let gw = Arc::new(
        TestGateway::start_with(Setup {
            extra: format!(
                "store:\n  key_prefix: {prefix}\n  timeout: 300ms\n  job_lease: 2s\n  sentinel:\n    master: {MASTER}\n    nodes: [{}]\n",
                nodes.join(", ")
            ),
            ..Setup::default()
        })
        .await,
    );
    // Ready once the sentinels named the primary.
    let client = gw.client.clone();
    let ready = async {
        loop {
            let r: Value = client.get(format!("{}/readyz", gw.url)).send().await.unwrap().json().await.unwrap();
            if r["status"] == "ready" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await.expect("ready through the sentinels");

    // A job started before the switch, still pending during it.
    let before = gw.post("/v1/summaries").json(&commbox_body("before the failover")).send().await.unwrap();
    assert_eq!(before.status(), 202);
    let before: Value = before.json().await.unwrap();
    let before_id = before["id"].as_str().unwrap().to_owned();

    // Load: four callers starting jobs one after another (each a store write).
    let load = JobLoad::start(&gw, 4);
    // The switch comes under load: once some jobs were stored.
    crate::common::eventually("jobs stored before the switch", || load.stored() >= 5).await;

    let switched_at = Instant::now();
    if kill {
        primary.stop();
    } else {
        let answer: String = sentinels[0].query(&["SENTINEL", "FAILOVER", MASTER]).unwrap();
        assert_eq!(answer, "OK");
    }
    for s in &sentinels {
        s.until("names the replica as primary", |s| s.primary_port() == Some(replica_port));
    }
    // Writes land on the new primary: a job stored after the switch is there.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after_id = loop {
        let r =
            gw.post("/v1/summaries").json(&commbox_body(&format!("after {:?}", Instant::now()))).send().await.unwrap();
        if r.status() == 202 {
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let on_new = keys(&mut connect(&replica.url()).unwrap(), &prefix);
            if on_new.iter().any(|k| k.contains(&id)) {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "no job reached the new primary within 15 s of the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let followed_in = switched_at.elapsed();
    let seen = load.stop().await;
    let what = if kill { "sentinel failover (primary killed)" } else { "sentinel failover (forced)" };
    report_failover(what, followed_in, &seen);

    // Both jobs end, on the new primary. A job whose end was written to the old
    // primary in the moment between the replica's promotion and the old
    // primary's demotion loses that write (Sentinel replicates asynchronously):
    // its lease lapses (2 s here) and a poller takes it again.
    // Each GET holds until the job's end wakes it (a long-poll, not a polling loop).
    for id in [before_id, after_id] {
        let r: Value = gw.get(&format!("/v1/summaries/{id}?wait=15")).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["status"], "completed", "job {id} did not complete after the failover: {r}");
    }
    drop(primary);
}
