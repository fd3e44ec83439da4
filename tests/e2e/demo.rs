//! `summary-gateway demo` as a process: the real binary with its built-in
//! configuration, the `SUMMARY_GATEWAY__*` overrides applied to it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{binary, client, expect_problem};

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
        let mut cmd = binary();
        cmd.args(["demo", "--listen", "127.0.0.1:0"]).env("LOG_FORMAT", "json").env("RUST_LOG", "info");
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

#[test]
fn a_bad_override_stops_the_demo_with_the_key_s_path() {
    let mut child = binary()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("SUMMARY_GATEWAY__SERVER__MAX_BODY_BYTES", "lots")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo kept running with SUMMARY_GATEWAY__SERVER__MAX_BODY_BYTES=lots");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
}
