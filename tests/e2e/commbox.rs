//! CommBox end to end: validation before any call, language mapping, the job
//! lifecycle (202 → pending → completed | failed), waiting, single submission,
//! signed webhooks with retries, SSRF refusal, vendor callbacks in.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{
    Flavour, KEY, Receiver, Setup, TestGateway, WEBHOOK_SECRET, commbox_body, conversation_text, eventually,
    expect_problem, start_receiver, verify,
};

// The built-in adapter and CommBox described as `type: http`
// (config/examples/http-commbox.yaml), with the same assertions. Vendor callbacks
// are the built-in's alone (`vendor_callbacks_make_the_gateway_poll_at_once`).
crate::on_both_flavours!(
    text_too_short_is_refused_without_a_vendor_call,
    languages_are_mapped_to_commbox_names,
    pending_then_polled_to_completed_with_the_three_sections,
    wait_answers_the_final_resource_in_one_call,
    a_failed_job_is_a_failed_resource,
    duplicate_submissions_join_one_job,
    webhooks_are_signed_and_sent_to_every_caller_that_asked,
    a_webhook_to_a_receiver_that_is_down_is_delivered_after_retries,
    callback_urls_to_private_addresses_are_refused_by_default,
    a_callback_url_needs_a_key_with_a_webhook_secret,
    a_thousand_waiting_requests_complete_with_the_job,
    a_job_past_its_deadline_fails_with_provider_timeout,
    the_conversation_text_is_echoed_and_identity_includes_language
);

const WEBHOOKS_FAST: &str = "webhooks:\n  allow_private_networks: true\n  retry_initial: 100ms\n  retry_max: 300ms\n";

async fn gateway_with_webhooks(flavour: Flavour) -> TestGateway {
    TestGateway::start_with(Setup { extra: WEBHOOKS_FAST.into(), cb_flavour: flavour, ..Setup::default() }).await
}

/// GET /v1/summaries/{id}?wait=N.
async fn wait_for(gw: &TestGateway, id: &str, secs: u64) -> (u16, Value) {
    let r = gw.get(&format!("/v1/summaries/{id}?wait={secs}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn text_too_short_is_refused_without_a_vendor_call(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let r = gw.summarize(&json!({"provider": "cb", "conversation": {"text": "Agent: hello. Client: bye."}})).await;
    let problem = expect_problem(r, 422, "text_too_short").await;
    assert!(problem["detail"].as_str().unwrap().contains("150"), "{problem}");
    let r = gw.summarize(&json!({"provider": "cb", "conversation": {"id": "x"}})).await;
    expect_problem(r, 400, "invalid_request").await;
    let stats = gw.commbox.stats();
    assert_eq!((stats.submits, stats.rejected), (0, 0), "no call reached CommBox");
}

async fn languages_are_mapped_to_commbox_names(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    for (tag, expected_resource_language) in [(Some("pt-br"), "pt-BR"), (None, "en"), (Some("de-AT"), "de-AT")] {
        let mut body = commbox_body(&format!("{tag:?}"));
        if let Some(tag) = tag {
            body["language"] = json!(tag);
        }
        let r = gw.summarize(&body).await;
        assert_eq!(r.status(), 202);
        let resource: Value = r.json().await.unwrap();
        assert_eq!(resource["language"], expected_resource_language);
    }
    assert_eq!(gw.commbox.stats().languages, ["portuguese", "english", "german"]);
    let mut body = commbox_body("klingon");
    body["language"] = json!("tlh");
    let problem = expect_problem(gw.summarize(&body).await, 422, "unsupported_language").await;
    assert!(problem["detail"].as_str().unwrap().contains("tlh"), "{problem}");
    body["language"] = json!("not a tag");
    expect_problem(gw.summarize(&body).await, 400, "invalid_request").await;
    assert_eq!(gw.commbox.stats().submits, 3);
}

async fn pending_then_polled_to_completed_with_the_three_sections(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let r = gw.summarize(&commbox_body("lifecycle")).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let pending: Value = r.json().await.unwrap();
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["content"], Value::Null);
    assert_eq!(pending["provider_type"], flavour.type_name("commbox"));
    assert_eq!(location, format!("/v1/summaries/{}", pending["id"].as_str().unwrap()));

    // Poll like a caller would, without wait.
    let start = Instant::now();
    let done = loop {
        let r = gw.get(&location).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        if v["status"] != "pending" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    let sections = done["content"]["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 3, "{done}");
    // A summary of the conversation, not its sentences relabelled: the client's
    // request (not the agent's greeting), what the agent did, how it ended.
    let titles: Vec<&str> = sections.iter().map(|s| s["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Client reason for contact", "Agent actions", "Outcome"]);
    let items = |i: usize| -> Vec<&str> {
        sections[i]["items"].as_array().unwrap().iter().map(|item| item.as_str().unwrap()).collect()
    };
    assert_eq!(items(0), ["The client noticed their March invoice was charged twice."], "{done}");
    assert_eq!(items(1), ["The agent sees the duplicate and has refunded it."], "{done}");
    assert_eq!(items(2), ["Resolved during the conversation.", "The client thanked the agent."], "{done}");
    let text = done["content"]["text"].as_str().unwrap();
    assert!(!text.contains("**") && !text.contains('<'), "{text}");
    assert!(done["provider_ref"]["action_id"].as_str().unwrap().starts_with("AI_API_SUMMARY_"));
    assert!(done["expires_at"].is_string());
    assert_eq!(done["error"], Value::Null);
}

async fn wait_answers_the_final_resource_in_one_call(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let r = gw.post("/v1/summaries").header("prefer", "wait=10").json(&commbox_body("prefer")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");

    // ?wait on GET, for a job started without waiting.
    let r = gw.summarize(&commbox_body("get-wait")).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let (status, done) = wait_for(&gw, &id, 10).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));

    // A wait that runs out answers the current state.
    let held = commbox_body("[sim:hold] short wait");
    let started = Instant::now();
    let r = gw.post("/v1/summaries").header("prefer", "wait=1").json(&held).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(r.headers().contains_key("location"));
}

async fn a_failed_job_is_a_failed_resource(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    for (marker, has_message) in [("[sim:fail]", true), ("[sim:fail-silent]", false)] {
        let r = gw.post("/v1/summaries").header("prefer", "wait=10").json(&commbox_body(marker)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let failed: Value = r.json().await.unwrap();
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["content"], Value::Null);
        assert_eq!(failed["error"]["code"], "provider_failed", "{failed}");
        assert_eq!(failed["error"]["provider_message"].is_string(), has_message, "{failed}");
    }
}

async fn duplicate_submissions_join_one_job(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let body = commbox_body("duplicate");
    let answers = futures::future::join_all((0..20).map(|_| gw.summarize(&body))).await;
    let mut ids = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 202);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let (_, done) = wait_for(&gw, &ids[0], 10).await;
    assert_eq!(done["status"], "completed");
    // And once completed, the same request is a cache hit.
    let r = gw.summarize(&body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-status"], "summary-gateway; hit");
    ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(gw.commbox.stats().submits, 1, "one vendor POST");
}

async fn webhooks_are_signed_and_sent_to_every_caller_that_asked(flavour: Flavour) {
    let gw = gateway_with_webhooks(flavour).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let rx = Receiver::default();
    let _server = start_receiver(listener, rx.clone());

    let mut body = commbox_body("[sim:hold] webhook");
    body["callback_url"] = json!(format!("{hook}?who=a"));
    let r = gw.summarize(&body).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    body["callback_url"] = json!(format!("{hook}?who=b"));
    assert_eq!(gw.summarize(&body).await.status(), 202);
    gw.commbox.release();

    eventually("two webhooks", || rx.got.lock().unwrap().len() == 2).await;
    let got = rx.got.lock().unwrap().clone();
    let mut ids = Vec::new();
    for (headers, body) in &got {
        verify(WEBHOOK_SECRET, headers, body);
        let resource: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(resource["id"], id.as_str());
        assert_eq!(resource["status"], "completed");
        assert_eq!(headers["content-type"], "application/json");
        ids.push(headers["webhook-id"].to_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1], "each caller's delivery is its own message");
    assert_eq!(gw.commbox.stats().submits, 1);
}

async fn a_webhook_to_a_receiver_that_is_down_is_delivered_after_retries(flavour: Flavour) {
    let gw = gateway_with_webhooks(flavour).await;
    // Reserve a port, then close it: the receiver is down at first.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut body = commbox_body("webhook down then up");
    body["callback_url"] = json!(format!("http://{addr}/hook"));
    let r = gw.post("/v1/summaries").header("prefer", "wait=10").json(&body).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed");

    // Connection refused at least once (the delivery is rescheduled: due later than
    // now), then up but answering 503 twice, then 204.
    let store = &gw.app.stores.outbox;
    let since = Instant::now();
    loop {
        let now_ms = u64::try_from(std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap();
        if matches!(store.next_delivery_ms().await, Ok(Some(next)) if next > now_ms) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "the first attempt never failed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rx = Receiver { fail_first: 2, ..Receiver::default() };
    let _server = start_receiver(TcpListener::bind(addr).await.unwrap(), rx.clone());
    eventually("the webhook after retries", || rx.got.lock().unwrap().len() == 1).await;
    assert_eq!(*rx.attempts.lock().unwrap(), 3);
    let (headers, body) = rx.got.lock().unwrap()[0].clone();
    verify(WEBHOOK_SECRET, &headers, &body);
    // Delivered once: the outbox empties (after the 2xx), so nothing is attempted again.
    let since = Instant::now();
    while store.next_delivery_ms().await.unwrap().is_some() {
        assert!(since.elapsed() < Duration::from_secs(10), "the delivery stayed in the outbox");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(*rx.attempts.lock().unwrap(), 3);
}

async fn callback_urls_to_private_addresses_are_refused_by_default(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    for url in
        ["http://127.0.0.1:8080/hook", "http://169.254.169.254/latest", "http://10.0.0.7/x", "ftp://example.com/x"]
    {
        let mut body = commbox_body("private");
        body["callback_url"] = json!(url);
        let problem = expect_problem(gw.summarize(&body).await, 422, "invalid_callback_url").await;
        assert!(problem["detail"].as_str().unwrap().starts_with("callback_url"), "{problem}");
    }
    assert_eq!(gw.commbox.stats().submits, 0);
}

async fn a_callback_url_needs_a_key_with_a_webhook_secret(flavour: Flavour) {
    let gw = gateway_with_webhooks(flavour).await;
    let mut body = commbox_body("no secret");
    body["callback_url"] = json!("http://127.0.0.1:9/hook");
    let r = gw
        .client
        .post(format!("{}/v1/summaries", gw.url))
        .bearer_auth(crate::common::TINY_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(r, 422, "invalid_callback_url").await;
    assert!(problem["detail"].as_str().unwrap().contains("webhook_secret"), "{problem}");
}

async fn a_thousand_waiting_requests_complete_with_the_job(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let r = gw.summarize(&commbox_body("[sim:hold] thousand")).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let client = reqwest::Client::builder().pool_max_idle_per_host(1000).build().unwrap();
    let url = format!("{}/v1/summaries/{id}?wait=30", gw.url);
    let waits: Vec<_> = (0..1000)
        .map(|_| {
            let request = client.get(&url).bearer_auth(KEY).send();
            tokio::spawn(async move {
                let r = request.await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()["status"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let waiters = &gw.app.summaries.waiters;
    eventually("1000 parked waits", || waiters.waiting(&id) == 1000).await;
    let released = Instant::now();
    gw.commbox.release();
    for wait in waits {
        assert_eq!(wait.await.unwrap(), "completed");
    }
    assert!(released.elapsed() < Duration::from_secs(5), "{:?}", released.elapsed());
    assert!(waiters.is_empty(), "no waiter state left behind");
}

async fn a_job_past_its_deadline_fails_with_provider_timeout(flavour: Flavour) {
    let gw =
        TestGateway::start_with(Setup { cb_flavour: flavour, cb: "    job_timeout: 400ms".into(), ..Setup::default() })
            .await;
    let r = gw.post("/v1/summaries").header("prefer", "wait=10").json(&commbox_body("[sim:hold] late")).send().await;
    let failed: Value = r.unwrap().json().await.unwrap();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "provider_timeout", "{failed}");
}

#[tokio::test]
async fn vendor_callbacks_make_the_gateway_poll_at_once() {
    const TOKEN: &str = "cb-callback-token-0123456789abcdef";
    // Polls every 13-33 s: only the vendor's callback can make this quick.
    let cb = format!("    callback_token: {TOKEN}\n    poll_interval: 20s\n    poll_backoff_max: 20s");
    let gw = TestGateway::start_with(Setup { server: "  public_url: ${GATEWAY_URL}", cb, ..Setup::default() }).await;
    let started = Instant::now();
    let r = gw.post("/v1/summaries").header("prefer", "wait=10").json(&commbox_body("callback in")).send().await;
    let done: Value = r.unwrap().json().await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(gw.commbox.stats().callbacks_sent, 1);
    let action = gw.commbox.actions().pop().unwrap();
    let told = action.callback_url.unwrap();
    assert!(told.starts_with(&format!("{}/callbacks/cb/{TOKEN}?id=sum_", gw.url)), "{told}");

    // A wrong token or provider is a 404, whatever the body.
    let id = done["id"].as_str().unwrap();
    for path in
        [format!("/callbacks/cb/wrong-token-0123456789abcdef?id={id}"), format!("/callbacks/nope/{TOKEN}?id={id}")]
    {
        let r = gw.client.post(format!("{}{path}", gw.url)).json(&json!({"status": "Completed"})).send().await.unwrap();
        expect_problem(r, 404, "not_found").await;
    }
    // A callback for a job that already ended is acknowledged and ignored.
    let r = gw.client.post(format!("{}/callbacks/cb/{TOKEN}?id={id}", gw.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 204);
}

async fn the_conversation_text_is_echoed_and_identity_includes_language(flavour: Flavour) {
    let gw = TestGateway::start_with(Setup { cb_flavour: flavour, ..Setup::default() }).await;
    let mut body = commbox_body("identity");
    let en = gw.summarize(&body).await.json::<Value>().await.unwrap();
    body["language"] = json!("es");
    let es = gw.summarize(&body).await.json::<Value>().await.unwrap();
    assert_ne!(en["id"], es["id"]);
    assert_eq!(en["conversation"]["text"], conversation_text("identity"));
}
