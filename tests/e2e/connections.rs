//! Client connections and request heads (issue "Hardening from the outside"):
//! deadlines for heads, idle keep-alive and bodies, the connection cap under a
//! low open-file limit, heads over the gateway's limits, what hyper refuses
//! itself, and caller request ids that must not be echoed.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{GatewayProcess, KEY, Setup, TestGateway, client, expect_problem};

/// Short deadlines, so the tests take a second, not a minute.
const SERVER: &str =
    "  header_read_timeout: 400ms\n  idle_timeout: 1200ms\n  body_read_timeout: 400ms\n  request_timeout: 20s";

async fn gateway() -> TestGateway {
    TestGateway::start_with(Setup { server: SERVER, ..Setup::default() }).await
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(url.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the gateway closes the connection (at most 10 s); returns what
/// it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the gateway never closed the connection");
    (String::from_utf8_lossy(&received).into_owned(), Instant::now())
}

/// Reads one whole HTTP/1.1 answer with a `content-length` body.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn body_json(answer: &str) -> Value {
    serde_json::from_str(answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)).unwrap_or(Value::Null)
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n").map_or(answer, |(h, _)| h);
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn metrics(gw: &TestGateway) -> String {
    gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap()
}

/// The sum of every series of `name` whose labels contain `label`.
fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn connections_that_send_no_head_or_half_a_head_are_closed_at_the_header_deadline() {
    let gw = gateway().await;
    let before = counter(&metrics(&gw).await, "sg_connections_timed_out_total", "header_timeout");

    let mut silent = connect(&gw.url).await;
    let opened = Instant::now();
    let mut half = connect(&gw.url).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ").await.unwrap();

    let (sent, closed) = read_until_closed(&mut silent).await;
    assert_eq!(sent, "", "nothing to answer");
    let after = closed - opened;
    assert!(after >= Duration::from_millis(400), "closed before the deadline: {after:?}");
    assert!(after < Duration::from_secs(5), "closed late: {after:?}");
    let (_, closed) = read_until_closed(&mut half).await;
    assert!(closed - opened < Duration::from_secs(5));

    let after = counter(&metrics(&gw).await, "sg_connections_timed_out_total", "header_timeout");
    assert!(after >= before + 2.0, "{before} → {after}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_deadline_and_closes_at_the_idle_one() {
    let gw = gateway().await;
    let mut stream = connect(&gw.url).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream).await;
    let answered = Instant::now();
    assert_eq!(status_of(&answer), 200, "{answer}");
    let (_, closed) = read_until_closed(&mut stream).await;
    let idle = closed - answered;
    assert!(idle >= Duration::from_millis(1200), "closed at {idle:?}, before the idle deadline");
    assert!(idle < Duration::from_secs(6), "closed late: {idle:?}");

    // A next request that starts but stalls gets the header deadline from its
    // first byte: with a 30 s idle deadline, only the header deadline closes it soon.
    let gw = TestGateway::start_with(Setup {
        server: "  header_read_timeout: 400ms\n  idle_timeout: 30s",
        ..Setup::default()
    })
    .await;
    let mut stream = connect(&gw.url).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    read_answer(&mut stream).await;
    stream.write_all(b"GET /healthz HTT").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream).await;
    let after = closed - started;
    assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(8), "{after:?}");
}

#[tokio::test]
async fn a_stalled_body_is_408_request_timeout_within_the_body_read_timeout() {
    let gw = gateway().await;
    let mut stream = connect(&gw.url).await;
    let head = format!(
        "POST /v1/summaries HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"provider\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let answer = read_answer(&mut stream).await;
    let after = sent.elapsed();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(5), "{after:?}");
    let body = body_json(&answer);
    assert_eq!(body["code"], "request_timeout", "{body}");
    assert_eq!(header(&answer, "content-type"), Some("application/problem+json"));
    assert_eq!(Some(body["request_id"].as_str().unwrap()), header(&answer, "x-request-id"));
    assert_eq!(header(&answer, "connection"), Some("close"));
}

#[tokio::test]
async fn heads_over_the_gateways_limits_are_problems_and_what_hyper_refuses_is_counted() {
    let gw = gateway().await;
    let long_uri = gw.get(&format!("/v1/providers?pad={}", "a".repeat(9 * 1024))).send().await.unwrap();
    expect_problem(long_uri, 414, "uri_too_long").await;
    let big_headers = gw.get("/v1/providers").header("x-pad", "b".repeat(40 * 1024)).send().await.unwrap();
    expect_problem(big_headers, 431, "headers_too_large").await;

    let before = metrics(&gw).await;
    let mut garbage = connect(&gw.url).await;
    garbage.write_all(b"NOT AN HTTP REQUEST\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut garbage).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    let mut huge = connect(&gw.url).await;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n", "c".repeat(1024 * 1024));
    let _ = huge.write_all(head.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut huge).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert!(!answer.contains("problem+json"), "hyper's own answer, past the gateway's limits: {answer}");
    // Counted when the connection task ends, which may be just after the client saw the close.
    let start = Instant::now();
    for reason in ["malformed", "head_too_large"] {
        let label = format!("reason=\"{reason}\"");
        let b = counter(&before, "sg_http_protocol_errors_total", &label);
        loop {
            let a = counter(&metrics(&gw).await, "sg_http_protocol_errors_total", &label);
            if a >= b + 1.0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{reason}: {b} → {a}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn request_ids_that_are_long_or_not_visible_ascii_are_replaced_not_echoed() {
    let gw = gateway().await;
    let kept = gw.get("/v1/providers").header("x-request-id", "caller-id-1").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "caller-id-1");

    let long = "r".repeat(16 * 1024);
    let obs_text = reqwest::header::HeaderValue::from_bytes(b"id-\xe9\xff-x").unwrap();
    for given in [reqwest::header::HeaderValue::from_str(&long).unwrap(), obs_text] {
        let response = gw
            .get("/v1/summaries/sum_00000000000000000000000000000000")
            .header("x-request-id", given.clone())
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id.as_bytes(), given.as_bytes());
        assert!(id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()), "{id}");
        let body = expect_problem(response, 404, "not_found").await;
        assert_eq!(body["request_id"], id.as_str());
    }
    // 64 KiB: replaced before the header limits are checked, so the request is served.
    let huge = gw.get("/v1/providers").header("x-request-id", "r".repeat(64 * 1024)).send().await.unwrap();
    assert_eq!(huge.status(), 200);
    assert!(huge.headers()["x-request-id"].len() <= 128);
}

/// Past the cap, a new connection gets 503 at once while the open ones are
/// served — under `ulimit -n 256`, where 300 idle sockets used to make
/// `/healthz` time out with nothing logged.
#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503_and_open_ones_keep_being_served() {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 30s\nauth:\n  keys:\n    crm:\n      key: {KEY}\nproviders:\n  pbx:\n    type: yeastar\n    base_url: http://127.0.0.1:9\n    client_id: id\n    client_secret: secret\n    max_concurrency: 8\n"
    );
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn_with_nofile(file.path(), &[], 256);
    let url = gw.url();
    let logged = || {
        gw.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "connection limits")
    };
    let start = Instant::now();
    let logged = loop {
        if let Some(line) = logged() {
            break line;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the limits are logged at start:\n{}", gw.output());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cap = usize::try_from(logged["max_connections"].as_u64().unwrap()).unwrap();
    assert!(cap > 16 && cap < 256, "derived from the fd limit: {cap}");

    // One keep-alive connection that has been served, then idle ones up to the cap and past it.
    let mut served = connect(&url).await;
    served.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&read_answer(&mut served).await), 200);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect(&url).await);
    }
    // Those past the cap are answered 503 at once and closed; the others stay open.
    let started = Instant::now();
    let outcomes = futures::future::join_all(idle.iter_mut().map(|stream| async move {
        let mut buf = Vec::new();
        match tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }))
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let refused: Vec<&String> = outcomes.iter().flatten().collect();
    assert_eq!(refused.len(), 300 - (cap - 1), "all but the cap's worth are refused (one slot is `served`)");
    assert!(refused.iter().all(|a| status_of(a) == 503), "every refusal is answered: {refused:?}");
    let answer = refused[0];
    let body = body_json(answer);
    assert_eq!(body["code"], "overloaded", "{body}");
    assert_eq!(header(answer, "retry-after"), Some("1"));
    assert_eq!(Some(body["request_id"].as_str().unwrap()), header(answer, "x-request-id"));

    served.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut served).await;
    assert_eq!(status_of(&answer), 200, "the connection it had is still served");
    assert!(counter(&answer, "sg_connections_refused_total", "") >= 1.0, "{answer}");
    assert!(counter(&answer, "sg_connections_open", "") >= f64::from(u32::try_from(cap).unwrap()) - 1.0);

    // Once the idle ones go, new connections are served again.
    drop(idle);
    let http = client();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.terminate(), Some(0));
    assert!(gw.output().contains("connection cap reached"), "{}", gw.output());
}
