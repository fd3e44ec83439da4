//! `sg_vendor_calls_total`'s `vendor_code` label stays within the codes the
//! adapter knows: a vendor that sends a new error code every time adds no
//! series. The real binary, so `/metrics` is this test's alone.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{GatewayProcess, KEY, body_of, client, config_yaml};

/// A PBX that logs in fine and answers every `getaisummary` with an errcode it
/// has never sent before (900000, 900001, ...).
async fn inventive_pbx() -> (String, Arc<AtomicU32>, tokio::task::JoinHandle<()>) {
    async fn token() -> axum::Json<Value> {
        axum::Json(json!({
            "errcode": 0, "errmsg": "SUCCESS", "access_token": "tok", "access_token_expire_time": 1800,
            "refresh_token": "ref", "refresh_token_expire_time": 86400,
        }))
    }
    async fn summary(State(next): State<Arc<AtomicU32>>) -> axum::Json<Value> {
        let code = 900_000 + next.fetch_add(1, Ordering::SeqCst);
        axum::Json(json!({ "errcode": code, "errmsg": format!("NEW ERROR {code}") }))
    }
    let next = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route("/openapi/v1.0/get_token", post(token))
        .route("/openapi/v2.0/cdr/getaisummary", get(summary))
        .with_state(Arc::clone(&next));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, next, task)
}

#[tokio::test]
async fn two_hundred_distinct_unknown_errcodes_leave_one_series() {
    let (pbx, sent, task) = inventive_pbx().await;
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(config_yaml(&pbx, "", "").as_bytes()).unwrap();
    let gw = GatewayProcess::spawn(file.path(), &[]);
    let (http, url) = (client(), gw.url());

    for i in 0..200 {
        let body = body_of(&format!("20260101{i:06}-00000"));
        let r = http.post(format!("{url}/v1/summaries")).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 502, "an unknown errcode is provider_error");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["provider_code"], 900_000 + i, "the caller still sees the vendor's own code");
    }
    assert_eq!(sent.load(Ordering::SeqCst), 200, "200 distinct errcodes were sent");

    let page = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let series: Vec<&str> =
        page.lines().filter(|l| l.starts_with("sg_vendor_calls_total{") && l.contains("provider=\"pbx\"")).collect();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert!(series[0].contains("vendor_code=\"other\""), "{}", series[0]);
    assert!(series[0].ends_with(" 200"), "{}", series[0]);
    let codes: std::collections::BTreeSet<&str> = page
        .lines()
        .filter(|l| l.starts_with("sg_vendor_calls_total{"))
        .filter_map(|l| l.split("vendor_code=\"").nth(1)?.split('"').next())
        .collect();
    assert!(codes.iter().all(|c| !c.starts_with("9000")), "{codes:?}");
    task.abort();
}
