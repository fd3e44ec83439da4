//! Tracing: with `telemetry.otlp_endpoint` the real binary exports its spans
//! over OTLP/HTTP to a fake collector, continues the caller's W3C trace and
//! passes it on to the vendor; without it, nothing is sent and no
//! `traceparent` reaches the vendor. (The binary, not the in-process gateway:
//! OpenTelemetry's set-up is process-global.)

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use providers::yeastar::simulator::{SimOptions, YeastarSimulator};
use tokio::net::TcpListener;

use crate::common::{GatewayProcess, KEY, client, config_yaml, docs_request};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "caller=t61rcWkgMzE";

/// What the fake collector got: each POST's content type and body.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A collector that answers every `POST /v1/traces` with an empty
/// `ExportTraceServiceResponse`; returns its base URL.
async fn collector(received: Received) -> String {
    async fn traces(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        received.lock().unwrap().push((content_type, body));
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new())
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/traces", post(traces)).with_state(received);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Starts the binary with `yaml`, sends the docs' request with the caller's
/// trace context, and stops it (SIGTERM: the exporter flushes on exit).
async fn one_traced_request(yaml: &str, env: &[(&str, &str)]) -> String {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn(file.path(), env);
    let response = client()
        .post(format!("{}/v1/summaries", gw.url()))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .header("tracestate", TRACESTATE)
        .json(&docs_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (code, gw) = tokio::task::spawn_blocking(move || (gw.terminate(), gw)).await.unwrap();
    assert_eq!(code, Some(0), "{}", gw.output());
    gw.output()
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_the_trace_reaches_the_vendor() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let received = Received::default();
    let collector = collector(Arc::clone(&received)).await;
    let yaml = format!(
        "{}telemetry:\n  otlp_endpoint: {collector}\n  service_name: sg-e2e-tracing\n",
        config_yaml(&sim.base_url(), "", "")
    );
    let output = one_traced_request(&yaml, &[]).await;
    assert!(!output.contains("cannot export spans"), "{output}");

    // The vendor got the caller's trace, with a parent of the gateway's own.
    let seen = sim.stats().last_traceparent.expect("the vendor got a traceparent");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"), "{seen}");
    assert_ne!(parts[2], CALLER_SPAN_ID, "{seen}");

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "nothing exported");
    let mut spans = Vec::new();
    for (content_type, body) in &received {
        assert_eq!(content_type, "application/x-protobuf");
        // No credential of the caller or the vendor is exported.
        let text = String::from_utf8_lossy(body);
        for secret in [KEY, "demo-client-secret", "Bearer", "access_token"] {
            assert!(!text.contains(secret), "{secret} exported");
        }
        for token in sim.issued_tokens() {
            assert!(!text.contains(&token), "a Yeastar token was exported");
        }
        assert!(text.contains("sg-e2e-tracing"), "service.name in the resource");
        spans.extend(decode(body));
    }
    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == hex(TRACE_ID)).collect();

    // The request span: a server span, child of the caller's, named by route.
    let request = trace.iter().find(|s| s.parent_span_id == hex(CALLER_SPAN_ID)).expect("the request span");
    assert_eq!((request.name.as_str(), request.kind), ("POST /v1/summaries", 2), "{request:?}");
    assert_eq!(request.attributes.get("route").map(String::as_str), Some("/v1/summaries"));
    assert_eq!(request.attributes.get("caller").map(String::as_str), Some("crm"));
    assert_eq!(request.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(request.trace_state, TRACESTATE);

    // The vendor's exchange: a client span in the request's subtree, whose id
    // is the parent the vendor saw; host and port, no URL.
    let vendor = trace.iter().find(|s| s.span_id == hex(parts[2])).expect("the span the vendor saw as parent");
    assert_eq!((vendor.name.as_str(), vendor.kind), ("vendor_http", 3), "{vendor:?}");
    assert_eq!(vendor.attributes.get("server.address").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(vendor.attributes.get("http.request.method").map(String::as_str), Some("GET"));
    assert_eq!(vendor.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    let mut ancestor = *vendor;
    while ancestor.span_id != request.span_id {
        ancestor = trace
            .iter()
            .find(|s| s.span_id == ancestor.parent_span_id)
            .unwrap_or_else(|| panic!("{ancestor:?} is not under the request span"));
    }
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_exported_or_propagated() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    let received = Received::default();
    let collector = collector(Arc::clone(&received)).await;
    // OpenTelemetry's own variables do not turn export on: the config does.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()), ("OTEL_TRACES_EXPORTER", "otlp")];
    one_traced_request(&config_yaml(&sim.base_url(), "", ""), &env).await;
    assert!(sim.stats().summary_calls > 0);
    assert_eq!(sim.stats().last_traceparent, None, "no trace context reaches the vendor");
    assert!(received.lock().unwrap().is_empty(), "nothing is exported");
}

/// An exported span, as much of it as the tests look at.
#[derive(Debug, Default)]
struct Span {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    trace_state: String,
    name: String,
    /// 1 internal, 2 server, 3 client.
    kind: u64,
    /// Attribute values as text (strings, integers, booleans).
    attributes: BTreeMap<String, String>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The spans of an `ExportTraceServiceRequest` (opentelemetry-proto's
/// `trace.proto`): resource_spans = 1 → scope_spans = 2 → spans = 2.
fn decode(body: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in fields(body).into_iter().filter_map(|f| f.bytes(1)) {
        for scope_spans in fields(resource_spans).into_iter().filter_map(|f| f.bytes(2)) {
            for span in fields(scope_spans).into_iter().filter_map(|f| f.bytes(2)) {
                spans.push(decode_span(span));
            }
        }
    }
    spans
}

fn decode_span(bytes: &[u8]) -> Span {
    let mut span = Span::default();
    for field in fields(bytes) {
        match field {
            Field { number: 1, value: Value::Bytes(b) } => span.trace_id = b.to_vec(),
            Field { number: 2, value: Value::Bytes(b) } => span.span_id = b.to_vec(),
            Field { number: 3, value: Value::Bytes(b) } => span.trace_state = String::from_utf8_lossy(b).into_owned(),
            Field { number: 4, value: Value::Bytes(b) } => span.parent_span_id = b.to_vec(),
            Field { number: 5, value: Value::Bytes(b) } => span.name = String::from_utf8_lossy(b).into_owned(),
            Field { number: 6, value: Value::Varint(k) } => span.kind = k,
            Field { number: 9, value: Value::Bytes(kv) } => {
                // KeyValue { key = 1; AnyValue value = 2 { string 1, bool 2, int 3 } }
                let (mut key, mut value) = (String::new(), String::new());
                for f in fields(kv) {
                    match f {
                        Field { number: 1, value: Value::Bytes(k) } => key = String::from_utf8_lossy(k).into_owned(),
                        Field { number: 2, value: Value::Bytes(any) } => {
                            value = match fields(any).first() {
                                Some(Field { number: 1, value: Value::Bytes(s) }) => {
                                    String::from_utf8_lossy(s).into_owned()
                                }
                                Some(Field { number: 2, value: Value::Varint(b) }) => (*b != 0).to_string(),
                                #[allow(clippy::cast_possible_wrap)] // int64 travels as its two's complement
                                Some(Field { number: 3, value: Value::Varint(i) }) => (*i as i64).to_string(),
                                _ => "<other>".to_owned(),
                            };
                        }
                        _ => {}
                    }
                }
                span.attributes.insert(key, value);
            }
            _ => {}
        }
    }
    span
}

struct Field<'a> {
    number: u64,
    value: Value<'a>,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Field<'a> {
    fn bytes(self, number: u64) -> Option<&'a [u8]> {
        match self {
            Field { number: n, value: Value::Bytes(b) } if n == number => Some(b),
            _ => None,
        }
    }
}

/// The fields of one protobuf message (wire format), in order.
fn fields(mut buf: &[u8]) -> Vec<Field<'_>> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut buf)),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                buf = &buf[width..];
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)).unwrap();
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(bytes)
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push(Field { number: key >> 3, value });
    }
    out
}

#[tokio::test]
async fn an_unreachable_collector_is_warned_about_once_and_requests_still_succeed() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    // Nobody listens on the discard port: every export fails. One span per
    // batch: several failed exports.
    let yaml = format!("{}telemetry:\n  otlp_endpoint: http://127.0.0.1:9\n", config_yaml(&sim.base_url(), "", ""));
    let output = one_traced_request(&yaml, &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")]).await;
    assert_eq!(output.matches("cannot export spans to the OTLP collector").count(), 1, "{output}");
    assert!(output.contains("span export failed again"), "several batches failed (debug):\n{output}");
    assert!(sim.stats().last_traceparent.is_some(), "propagation does not depend on the collector");
}
