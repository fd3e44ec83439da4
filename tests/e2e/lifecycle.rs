//! Probes, request ids and graceful shutdown.

use std::io::Write;
use std::time::Duration;

use providers::yeastar::simulator::{SimOptions, YeastarSimulator};
use serde_json::Value;

use crate::common::{GatewayProcess, KEY, TestGateway, client, docs_request, eventually, expect_problem};

#[tokio::test]
async fn probes_answer_and_request_ids_are_echoed() {
    let gw = TestGateway::start().await;
    let health: Value = gw.client.get(format!("{}/healthz", gw.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = gw.client.get(format!("{}/readyz", gw.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!((ready["status"].as_str(), ready["store"].as_str()), (Some("ready"), Some("memory")));

    let ok = gw.summarize(&docs_request()).await;
    assert!(!ok.headers()["x-request-id"].is_empty());
    let given = gw
        .get("/v1/summaries/sum_0123456789abcdef0123456789abcdef")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");
    let problem = expect_problem(given, 404, "not_found").await;
    assert_eq!(problem["request_id"], "trace-me-123");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_readyz_turns_503() {
    let mut gw = TestGateway::start().await;
    assert_eq!(gw.summarize(&crate::common::body_of("20260513231500-7A1F0")).await.status(), 409); // logged in
    gw.sim.set_latency(Duration::from_millis(600));
    let in_flight = tokio::spawn({
        let request = gw.post("/v1/summaries").json(&docs_request());
        async move { request.send().await.unwrap().status().as_u16() }
    });
    eventually("the request to reach the PBX", || gw.sim.stats().summary_calls == 2).await;
    gw.begin_shutdown();
    let app = std::sync::Arc::clone(&gw.app);
    eventually("draining", || app.draining.is_draining()).await;
    assert_eq!(in_flight.await.unwrap(), 200, "the in-flight request finished");
    gw.join().await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_binary_finish_its_requests_and_exit_0() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let yaml = crate::common::config_yaml(&sim.base_url(), "", "");
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn(file.path(), &[]);
    let http = client();
    let url = gw.url();
    assert_eq!(http.get(format!("{url}/readyz")).send().await.unwrap().status(), 200);
    sim.sim.set_latency(Duration::from_millis(800));
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let request = http
                .post(format!("{url}/v1/summaries"))
                .bearer_auth(KEY)
                .json(&crate::common::body_of(&format!("20260513223234-{i}")));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    eventually("all five requests to reach the PBX", || sim.sim.stats().summary_calls == 5).await;
    let code = tokio::task::spawn_blocking(move || (gw.terminate(), gw)).await.unwrap();
    for request in in_flight {
        // The call legs are unknown to the PBX: 404, but answered, not cut.
        assert_eq!(request.await.unwrap().unwrap(), 404);
    }
    assert_eq!(code.0, Some(0), "{}", code.1.output());
}
