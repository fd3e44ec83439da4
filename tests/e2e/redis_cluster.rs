//! Redis Cluster: a 3-master cluster with a replica per master of the test's
//! own (`TestCluster`), a gateway given its nodes, and a master SIGKILLed under
//! load. The gateway must follow the replica's promotion without a restart:
//! jobs are stored again once the cluster serves every slot, a job started
//! before the kill ends, and what callers saw meanwhile is counted (a cluster
//! refuses every command while a slot has no master, so asynchronous summaries
//! get 503 until the promotion; synchronous summaries are answered from the
//! vendor meanwhile; nothing else fails).
//!
//! The five replica scenarios (`replicas::on_a_cluster`) cover the rest on a
//! healthy cluster: reads across replicas, takeover of a killed replica's job
//! with its webhook, cross-replica wake-ups, one vendor call for the fleet and
//! the fleet-wide rate limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Setup, TestGateway, commbox_body, docs_request, eventually};
use crate::redis_support::{CLUSTER_NODE_TIMEOUT_MS, JobLoad, TestCluster, report_failover, unique_prefix};

async fn gateway_on(cluster: &TestCluster, prefix: &str) -> Arc<TestGateway> {
    let gw = TestGateway::start_with(Setup {
        extra: format!(
            "store:\n  redis_url: {}\n  key_prefix: {prefix}\n  timeout: 300ms\n  job_lease: 2s\n",
            cluster.url()
        ),
        ..Setup::default()
    })
    .await;
    let ready = async {
        loop {
            let r: Value = gw.client.get(format!("{}/readyz", gw.url)).send().await.unwrap().json().await.unwrap();
            if r["status"] == "ready" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await.expect("ready on the cluster");
    Arc::new(gw)
}

/// The master of the job table's slot killed: every job write goes to that slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_follows_a_cluster_failover_when_a_master_dies_under_load() {
    let mut cluster = TestCluster::start();
    let prefix = unique_prefix("cluster-failover");
    let gw = gateway_on(&cluster, &prefix).await;
    let jobs_key = format!("{prefix}:{{jobs}}:jobs");

    // A job started before the kill, still pending during it.
    let before = gw.post("/v1/summaries").json(&commbox_body("before the failover")).send().await.unwrap();
    assert_eq!(before.status(), 202);
    let before_id = before.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let load = JobLoad::start(&gw, 4);
    // And a caller of synchronous summaries: served from the store, or (while it
    // is down) from the vendor.
    let stop_sync = Arc::new(AtomicBool::new(false));
    let sync = tokio::spawn({
        let (gw, stop) = (Arc::clone(&gw), Arc::clone(&stop_sync));
        async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = gw.post("/v1/summaries").json(&docs_request()).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }
    });
    eventually("jobs stored before the kill", || load.stored() >= 5).await;

    let victim = cluster.master_of(&jobs_key);
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Stored again: a job accepted after the kill that is in the job table,
    // which only the promoted replica can have taken.
    let deadline = killed_at + Duration::from_secs(20);
    let after_id = loop {
        let r =
            gw.post("/v1/summaries").json(&commbox_body(&format!("after {:?}", Instant::now()))).send().await.unwrap();
        if r.status() == 202 && cluster.master_of(&jobs_key) != victim {
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let stored: bool = redis::cmd("HEXISTS").arg(&jobs_key).arg(&id).query(&mut cluster.connection()).unwrap();
            if stored {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "no job was stored within 20 s of the master's death");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let followed_in = killed_at.elapsed();
    let seen = load.stop().await;
    stop_sync.store(true, Ordering::Relaxed);
    let sync = sync.await.unwrap();
    let sync_failed = sync.iter().filter(|&&s| s != 200).count();
    eprintln!("synchronous summaries during the failover: {} requests, {sync_failed} not 200", sync.len());
    assert_eq!(sync_failed, 0, "synchronous summaries do not need the store: {sync:?}");
    let what = format!("cluster failover (the {{jobs}} master killed, node timeout {CLUSTER_NODE_TIMEOUT_MS} ms)");
    report_failover(&what, followed_in, &seen);

    // Both jobs end. A write the dead master acknowledged but had not yet sent
    // to its replica is lost (replication is asynchronous): such a job's lease
    // lapses (2 s here) and a poller takes it again.
    for id in [before_id, after_id] {
        let r: Value = gw.get(&format!("/v1/summaries/{id}?wait=15")).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["status"], "completed", "job {id} did not complete after the failover: {r}");
    }
    // And the gateway says it is well again.
    let r: Value = gw.client.get(format!("{}/readyz", gw.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "ready", "{r}");
}
