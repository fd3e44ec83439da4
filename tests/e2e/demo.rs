//! `summary-gateway demo` as a process: the real binary with its built-in
//! configuration, the `SUMMARY_GATEWAY__*` overrides applied to it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{binary, client, expect_problem, run_to_end};
use crate::redis_support::TestRedis;

/// The demo's API key (gateway/src/demo.rs).
pub const DEMO_KEY: &str = "demo-key";

/// A running `summary-gateway demo --listen 127.0.0.1:0`, killed when dropped.
pub struct DemoProcess {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl DemoProcess {
    /// Starts the demo with these environment variables and waits for it to listen.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::spawn_with(&[], env)
    }

    /// Starts the demo with these options after `--listen 127.0.0.1:0` and these
    /// environment variables, and waits for it to listen.
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = binary();
        cmd.args(["demo", "--listen", "127.0.0.1:0"]).args(args).env("LOG_FORMAT", "json").env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            let addr_tx = addr_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "listening"
                        && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = addr_tx.send(addr);
                    }
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        drop(addr_tx);
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("the demo did not start:\n{}", output.lock().unwrap());
        });
        Self { child, addr, output }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docs_request() -> Value {
    json!({"provider": "pbx-demo", "conversation": {"id": "20260513223234-3EE9E", "party": "caller", "extension_id": 3202}})
}

#[tokio::test]
async fn the_demo_honours_environment_overrides() {
    let client = client();
    // Without overrides the demo's request fits its default body limit.
    let plain = DemoProcess::spawn(&[]);
    let r = client.post(format!("{}/v1/summaries", plain.url())).bearer_auth(DEMO_KEY).json(&docs_request()).send();
    assert_eq!(r.await.unwrap().status(), 200, "{}", plain.output());
    drop(plain);

    let demo = DemoProcess::spawn(&[
        ("SUMMARY_GATEWAY__SERVER__MAX_BODY_BYTES", "10"),
        ("SUMMARY_GATEWAY__AUTH__KEYS__DEMO__RATE_LIMIT__BURST", "1"),
    ]);
    let r = client.post(format!("{}/v1/summaries", demo.url())).bearer_auth(DEMO_KEY).json(&docs_request());
    let problem = expect_problem(r.send().await.unwrap(), 413, "payload_too_large").await;
    assert!(problem["detail"].as_str().unwrap().contains("10"), "{problem}");
    // A nested key too: a burst of one, so the second request in a row is limited.
    let r = client.get(format!("{}/v1/providers", demo.url())).bearer_auth(DEMO_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{}/v1/providers", demo.url())).bearer_auth(DEMO_KEY).send().await.unwrap();
    expect_problem(r, 429, "rate_limited").await;
}

/// Runs the demo with `args` and `env` until it exits (at most 20 s): its exit
/// code and standard error.
fn demo_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = binary();
    cmd.args(["demo", "--listen", "127.0.0.1:0"]).args(args).envs(env.iter().copied());
    let output = run_to_end(&mut cmd, Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the demo kept running with {args:?} {env:?}"));
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_bad_override_stops_the_demo_with_the_key_s_path() {
    let (code, stderr) = demo_exit(&[], &[("SUMMARY_GATEWAY__SERVER__MAX_BODY_BYTES", "lots")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
}

#[tokio::test]
async fn two_demos_on_one_redis_url_share_their_summaries() {
    let redis = TestRedis::new("demo");
    let env = [("SUMMARY_GATEWAY__STORE__KEY_PREFIX", redis.prefix())];
    let one = DemoProcess::spawn_with(&["--redis-url", redis.url()], &env);
    let other = DemoProcess::spawn_with(&["--redis-url", redis.url()], &env);
    assert!(one.output().contains("the Redis store of --redis-url"), "{}", one.output());

    let client = client();
    let made = client.post(format!("{}/v1/summaries", one.url())).bearer_auth(DEMO_KEY).json(&docs_request());
    let made = made.send().await.unwrap();
    assert_eq!(made.status(), 200, "{}", one.output());
    let made: Value = made.json().await.unwrap();
    // The other replica reads it from the shared store without calling its own simulator.
    let id = made["id"].as_str().unwrap();
    let read = client.get(format!("{}/v1/summaries/{id}", other.url())).bearer_auth(DEMO_KEY).send().await.unwrap();
    assert_eq!(read.status(), 200, "{}", other.output());
    let again = client.post(format!("{}/v1/summaries", other.url())).bearer_auth(DEMO_KEY).json(&docs_request());
    let again = again.send().await.unwrap();
    assert_eq!(again.headers()["cache-status"], "summary-gateway; hit");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["sections"], made["sections"]);
    assert!(!redis.keys().is_empty(), "nothing in Redis");

    // --redis-url wins over the environment and is checked as the file's value is.
    let env = [env[0], ("SUMMARY_GATEWAY__STORE__REDIS_URL", redis.url())];
    let (code, stderr) = demo_exit(&["--redis-url", "memcached://127.0.0.1:11211"], &env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("store.redis_url"), "{stderr}");
    assert!(!stderr.contains("11211"), "the URL may hold a password: {stderr}");
}
