//! Every error code reachable so far, each as problem+json with the request id.

use std::time::Duration;

use providers::yeastar::simulator::SimOptions;

use crate::common::{Setup, TestGateway, body_of, docs_request, eventually, expect_problem};

#[tokio::test]
async fn malformed_or_misshapen_requests_are_400_invalid_request() {
    let gw = TestGateway::start().await;
    let cases = [
        ("{\"provider\": ", "malformed JSON"),
        ("[1,2]", "invalid"),
        (
            "{\"provider\":\"pbx\",\"conversation\":{\"id\":\"20260513223234-3EE9E\",\"party\":\"caller\",\"extension_id\":3202},\"colour\":1}",
            "colour",
        ),
        (
            "{\"provider\":\"pbx\",\"conversation\":{\"id\":\"x\",\"party\":\"caller\",\"extension_id\":\"3202\"}}",
            "conversation.extension_id",
        ),
        (
            "{\"provider\":\"pbx\",\"conversation\":{\"id\":\"x\",\"party\":\"boss\",\"extension_id\":3202}}",
            "conversation.party",
        ),
        ("{\"conversation\":{\"id\":\"x\"}}", "provider"),
        (
            "{\"provider\":\"pbx\",\"conversation\":{\"id\":\"has spaces\",\"party\":\"caller\",\"extension_id\":1}}",
            "conversation.id",
        ),
        ("{\"provider\":\"pbx\",\"conversation\":{\"id\":\"x\",\"extension_id\":1}}", "conversation.party"),
        ("{\"provider\":\"pbx\",\"conversation\":{\"text\":\"hello\"}}", "conversation.text"),
        (
            "{\"provider\":\"pbx\",\"language\":\"english please\",\"conversation\":{\"id\":\"x\",\"party\":\"caller\",\"extension_id\":1}}",
            "language",
        ),
    ];
    for (body, mentions) in cases {
        let response =
            gw.post("/v1/summaries").header("content-type", "application/json").body(body).send().await.unwrap();
        let problem = expect_problem(response, 400, "invalid_request").await;
        assert!(problem["detail"].as_str().unwrap().contains(mentions), "{body} → {problem}");
    }
    for bad_id in ["nope", "sum_XYZ", "sum_0123"] {
        expect_problem(gw.get(&format!("/v1/summaries/{bad_id}")).send().await.unwrap(), 400, "invalid_request").await;
    }
    let id = "sum_0123456789abcdef0123456789abcdef";
    expect_problem(gw.get(&format!("/v1/summaries/{id}?wait=61")).send().await.unwrap(), 400, "invalid_request").await;
    assert_eq!(gw.sim.stats().summary_calls, 0);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415_and_oversized_ones_413() {
    let gw = TestGateway::start_with(Setup { server: "  max_body_bytes: 512", ..Setup::default() }).await;
    let text = gw.post("/v1/summaries").header("content-type", "text/plain").body("{}").send().await.unwrap();
    expect_problem(text, 415, "unsupported_media_type").await;
    let none = gw.post("/v1/summaries").body("{}").send().await.unwrap();
    expect_problem(none, 415, "unsupported_media_type").await;

    let mut big = docs_request();
    big["conversation"]["id"] = "x".repeat(2000).into();
    let sized = gw.post("/v1/summaries").json(&big).send().await.unwrap();
    let problem = expect_problem(sized, 413, "payload_too_large").await;
    assert!(problem["detail"].as_str().unwrap().contains("512"));
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])));
    let streamed = gw
        .post("/v1/summaries")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_problem(streamed, 413, "payload_too_large").await;
}

#[tokio::test]
async fn unacceptable_values_are_422() {
    let gw = TestGateway::start().await;
    let mut unknown = docs_request();
    unknown["provider"] = "nobody".into();
    expect_problem(gw.summarize(&unknown).await, 422, "unknown_provider").await;

    for kind in ["details", "coaching", "haiku"] {
        let mut body = docs_request();
        body["kind"] = kind.into();
        expect_problem(gw.summarize(&body).await, 422, "unsupported_kind").await;
    }
    for url in
        ["ftp://example.com/hook", "http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://localhost/x"]
    {
        let mut body = docs_request();
        body["callback_url"] = url.into();
        expect_problem(gw.summarize(&body).await, 422, "invalid_callback_url").await;
    }
    assert_eq!(gw.sim.stats().summary_calls, 0, "no vendor call for refused requests");
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_are_404_and_405() {
    let gw = TestGateway::start().await;
    expect_problem(
        gw.get("/v1/summaries/sum_0123456789abcdef0123456789abcdef").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_problem(gw.get("/v2/anything").send().await.unwrap(), 404, "not_found").await;
    let delete =
        gw.client.delete(format!("{}/v1/providers", gw.url)).bearer_auth(crate::common::KEY).send().await.unwrap();
    assert!(delete.headers().contains_key("allow"));
    expect_problem(delete, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn vendor_states_and_failures_are_mapped() {
    let gw = TestGateway::start().await;
    // errcode 60001 → 404.
    let missing = expect_problem(gw.summarize(&body_of("20990101000000-00000")).await, 404, "not_found").await;
    assert_eq!(missing["provider"], "pbx");
    assert_eq!(missing["provider_code"], 60_001);
    // errcode 2 → 409 with Retry-After.
    let processing = gw.summarize(&body_of("20260513231500-7A1F0")).await;
    assert_eq!(processing.headers()["retry-after"], "30");
    expect_problem(processing, 409, "conversation_not_ready").await;
}

#[tokio::test]
async fn a_rejected_credential_is_502_and_never_retried() {
    let gw = TestGateway::start_with(Setup {
        sim: SimOptions { client_secret: "the-real-secret".into(), ..SimOptions::default() },
        ..Setup::default()
    })
    .await;
    for _ in 0..6 {
        let problem = expect_problem(gw.summarize(&docs_request()).await, 502, "provider_error").await;
        assert_eq!(problem["provider"], "pbx");
        assert_eq!(problem["provider_code"], 20_002);
        assert!(!problem.to_string().contains("demo-client-secret"));
    }
    // One failed login per provider (pbx and pbx-other share the PBX): the IP is never blocked.
    let stats = gw.sim.stats();
    assert_eq!(stats.failed_logins, 1, "{stats:?}");
    let list: serde_json::Value = gw.get("/v1/providers").send().await.unwrap().json().await.unwrap();
    let pbx = list["data"].as_array().unwrap().iter().find(|p| p["name"] == "pbx").unwrap();
    assert_eq!(pbx["status"], "credentials_rejected");
}

#[tokio::test]
async fn a_slow_vendor_is_504_a_busy_one_503_overloaded_and_a_dead_one_503() {
    let gw = TestGateway::start_with(Setup {
        pbx: "    timeout: 1s\n    max_concurrency: 1\n    queue_timeout: 50ms".into(),
        ..Setup::default()
    })
    .await;
    // Log in first so the slow part is the summary call itself.
    assert_eq!(gw.summarize(&docs_request()).await.status(), 200);
    gw.sim.set_latency(Duration::from_secs(3));
    let slow = tokio::spawn({
        let request = gw.post("/v1/summaries").json(&body_of("20260513223234-3EE9E-slow"));
        async move { request.send().await.unwrap() }
    });
    let calls = gw.sim.stats().summary_calls;
    eventually("the slow call to reach the PBX", || gw.sim.stats().summary_calls > calls).await;
    // The single slot is taken by the slow call: the next one is shed.
    let shed = gw.summarize(&body_of("20260513223234-3EE9F")).await;
    assert!(shed.headers().contains_key("retry-after"));
    expect_problem(shed, 503, "overloaded").await;
    let timed_out = expect_problem(slow.await.unwrap(), 504, "provider_timeout").await;
    assert_eq!(timed_out["provider"], "pbx");

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = TestGateway::start_with(Setup {
        vendor_url: Some(format!("http://{closed}")),
        pbx: "    timeout: 2s".into(),
        ..Setup::default()
    })
    .await;
    let down = expect_problem(dead.summarize(&docs_request()).await, 503, "provider_unavailable").await;
    assert_eq!(down["provider"], "pbx");
}

#[tokio::test]
async fn a_request_outliving_the_server_timeout_is_504() {
    let gw = TestGateway::start_with(Setup {
        server: "  request_timeout: 300ms",
        pbx: "    timeout: 10s".into(),
        ..Setup::default()
    })
    .await;
    gw.sim.set_latency(Duration::from_secs(2));
    expect_problem(gw.summarize(&docs_request()).await, 504, "provider_timeout").await;
}
