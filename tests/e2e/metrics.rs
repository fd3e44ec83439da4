//! `/metrics`: open, Prometheus text, counts what happened with low-cardinality
//! labels and nothing secret. Runs the real binary: the recorder is per process,
//! so the counts here are exactly this test's.
#![allow(clippy::float_cmp, reason = "counts are small integers, exact in f64")]

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use providers::yeastar::simulator::{SimOptions, YeastarSimulator};

use crate::common::{GatewayProcess, KEY, TINY_KEY, body_of, client, config_yaml, docs_request};

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format (enough of it for these tests).
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        samples.push((name, labels, value.parse().unwrap()));
    }
    samples
}

/// The sum of every sample of `name` whose labels include all of `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_vendor_calls_cache_and_limits_without_secrets() {
    let sim = YeastarSimulator::start(SimOptions::default()).await.unwrap();
    sim.sim.set_latency(Duration::from_millis(60));
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(config_yaml(&sim.base_url(), "", "").as_bytes()).unwrap();
    let gw = GatewayProcess::spawn(file.path(), &[]);
    let (http, url) = (client(), gw.url());

    // A miss (vendor call), then a hit.
    for _ in 0..2 {
        let r = http.post(format!("{url}/v1/summaries")).bearer_auth(KEY).json(&docs_request()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // An unknown call leg: the vendor says not found.
    let r = http
        .post(format!("{url}/v1/summaries"))
        .bearer_auth(KEY)
        .json(&body_of("20260101000000-00000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // An id the store does not know, by query-string key.
    let id = "sum_0123456789abcdef0123456789abcdef";
    let r = http.get(format!("{url}/v1/summaries/{id}?access_token={KEY}")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // No key; a route that does not exist; a caller over its limit (burst 2).
    assert_eq!(http.get(format!("{url}/v1/providers")).send().await.unwrap().status(), 401);
    assert_eq!(http.get(format!("{url}/no/such/{id}")).send().await.unwrap().status(), 404);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(http.get(format!("{url}/v1/providers")).bearer_auth(TINY_KEY).send().await.unwrap().status());
    }
    assert_eq!(statuses, [200, 200, 429]);

    let scrape = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200, "open: no key needed");
    assert!(scrape.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = scrape.text().await.unwrap();
    for secret in [KEY, TINY_KEY, "access_token", id, "20260513223234-3EE9E", "demo-client-secret"] {
        assert!(!text.contains(secret), "/metrics must not contain {secret}:\n{text}");
    }
    let s = parse(&text);
    let requests = "sg_http_requests_total";
    let post = [("route", "/v1/summaries"), ("method", "POST"), ("caller", "crm")];
    assert_eq!(value(&s, requests, &[post[0], post[1], post[2], ("status", "200")]), 2.0, "{text}");
    assert_eq!(value(&s, requests, &[post[0], post[1], post[2], ("status", "404")]), 1.0);
    let get = [("route", "/v1/summaries/{id}"), ("method", "GET"), ("status", "404"), ("caller", "crm")];
    assert_eq!(value(&s, requests, &get), 1.0, "the route template, with the caller of an access_token");
    assert_eq!(value(&s, requests, &[("route", "/v1/providers"), ("status", "401"), ("caller", "none")]), 1.0);
    assert_eq!(value(&s, requests, &[("route", "unmatched"), ("status", "404")]), 1.0);
    assert_eq!(value(&s, requests, &[("route", "/v1/providers"), ("status", "429"), ("caller", "tiny")]), 1.0);
    assert_eq!(value(&s, "sg_rate_limited_total", &[("caller", "tiny")]), 1.0);

    let pbx = ("provider", "pbx");
    assert_eq!(value(&s, "sg_cache_lookups_total", &[pbx, ("result", "miss")]), 2.0, "the first and the unknown leg");
    assert_eq!(value(&s, "sg_cache_lookups_total", &[pbx, ("result", "hit")]), 1.0);
    let start = ("operation", "start");
    assert_eq!(value(&s, "sg_vendor_calls_total", &[pbx, start, ("outcome", "ok"), ("vendor_code", "none")]), 1.0);
    assert_eq!(value(&s, "sg_vendor_calls_total", &[pbx, start, ("outcome", "not_found")]), 1.0);
    assert_eq!(value(&s, "sg_vendor_call_duration_seconds_count", &[pbx, start]), 2.0);
    let vendor_seconds = value(&s, "sg_vendor_call_duration_seconds_sum", &[pbx, start]);
    assert!(vendor_seconds >= 0.12, "two calls of >= 60 ms each: {vendor_seconds}");

    // The gateway's own time excludes the vendor's: over the three POSTs the
    // total is at least the vendor's 120 ms; the overhead is far below it.
    let route = ("route", "/v1/summaries");
    assert_eq!(value(&s, "sg_http_overhead_seconds_count", &[route]), 3.0);
    let total = value(&s, "sg_http_request_duration_seconds_sum", &[route]);
    let overhead = value(&s, "sg_http_overhead_seconds_sum", &[route]);
    assert!(total >= 0.12 && overhead < total - 0.1, "total {total} s, overhead {overhead} s");
    assert!(
        value(&s, "sg_http_overhead_seconds_bucket", &[route, ("le", "0.025")]) >= 3.0,
        "every POST's own time under 25 ms"
    );

    assert_eq!(value(&s, "sg_draining", &[]), 0.0);
    assert_eq!(value(&s, "sg_store_degraded", &[]), 0.0);
    assert_eq!(value(&s, "sg_build_info", &[]), 1.0);
    assert!(text.contains("# HELP sg_http_overhead_seconds"), "described:\n{text}");

    // Low cardinality: every label value is one of a few known shapes.
    for (name, labels, _) in &s {
        for (k, v) in labels {
            let ok = match k.as_str() {
                "route" => v == "unmatched" || (v.starts_with('/') && !v.contains("sum_")),
                "caller" => ["crm", "tiny", "narrow", "none"].contains(&v.as_str()),
                "provider" => ["pbx", "pbx-other"].contains(&v.as_str()),
                "status" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
                _ => v.len() <= 32 && !v.contains(' '),
            };
            assert!(ok, "{name}: label {k}={v}");
        }
    }
}
