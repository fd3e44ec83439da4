//! Captured logs of the real binary carry no key, vendor token or client secret.

use std::io::Write;
use std::time::Duration;

use providers::commbox::simulator::{self as commbox, CommBoxSimulator};
use providers::elevateai::simulator::{self as elevateai, ElevateAiSimulator};
use providers::yeastar::simulator::{self as yeastar, SimOptions, YeastarSimulator};
use serde_json::json;

use crate::common::{GatewayProcess, body_of, client, conversation_text, docs_request};

const CALLER_KEY: &str = "caller-key-that-must-never-be-logged";
const CLIENT_ID: &str = "client-id-that-must-never-be-logged";
const CLIENT_SECRET: &str = "client-secret-that-must-never-be-logged";
const COMMBOX_TOKEN: &str = "commbox-token-that-must-never-be-logged";
const CALLBACK_TOKEN: &str = "callback-token-that-must-never-be-logged";
const ELEVATEAI_TOKEN: &str = "elevateai-token-that-must-never-be-logged";

/// The three simulators, each expecting a credential that must never be logged.
async fn simulators() -> (yeastar::RunningSimulator, commbox::RunningSimulator, elevateai::RunningSimulator) {
    let yeastar = YeastarSimulator::start(SimOptions {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let commbox = CommBoxSimulator::start(commbox::SimOptions {
        token: COMMBOX_TOKEN.into(),
        processing: Duration::from_millis(50),
        ..commbox::SimOptions::default()
    })
    .await
    .unwrap();
    let elevateai = ElevateAiSimulator::start(elevateai::SimOptions {
        token: ELEVATEAI_TOKEN.into(),
        ..elevateai::SimOptions::default()
    })
    .await
    .unwrap();
    (yeastar, commbox, elevateai)
}

#[tokio::test]
async fn logs_contain_no_key_token_or_client_secret() {
    let (sim, cb, ai) = simulators().await;
    // public_url points at a port nobody listens on: CommBox's callback fails,
    // and the test sends one itself below.
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1:9\nauth:\n  keys:\n    crm:\n      key_env: CRM_KEY\nproviders:\n  pbx:\n    type: yeastar\n    base_url: {}\n    client_id_env: PBX_ID\n    client_secret_env: PBX_SECRET\n  cb:\n    type: commbox\n    base_url: {}\n    token_env: CB_TOKEN\n    callback_token_env: CB_CALLBACK\n    poll_interval: 50ms\n  ai:\n    type: elevateai\n    base_url: {}\n    token_env: AI_TOKEN\n",
        sim.base_url(),
        cb.base_url(),
        ai.base_url()
    );
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn(
        file.path(),
        &[
            ("CRM_KEY", CALLER_KEY),
            ("PBX_ID", CLIENT_ID),
            ("PBX_SECRET", CLIENT_SECRET),
            ("CB_TOKEN", COMMBOX_TOKEN),
            ("CB_CALLBACK", CALLBACK_TOKEN),
            ("AI_TOKEN", ELEVATEAI_TOKEN),
        ],
    );
    let http = client();
    let url = gw.url();

    // Header and query keys, a wrong key, a vendor error, and a token renewal.
    assert_eq!(
        http.post(format!("{url}/v1/summaries"))
            .bearer_auth(CALLER_KEY)
            .json(&docs_request())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let by_query = http.get(format!("{url}/v1/providers?access_token={CALLER_KEY}")).send().await.unwrap();
    assert_eq!(by_query.status(), 200);
    let wrong = http.get(format!("{url}/v1/providers?access_token={CALLER_KEY}x")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.text().await.unwrap().contains(CALLER_KEY));
    exercise_query_spellings(&http, &url).await;
    assert_eq!(
        http.post(format!("{url}/v1/summaries?access_token={CALLER_KEY}"))
            .json(&body_of("20990101000000-00000"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    sim.sim.advance(Duration::from_secs(31 * 60));
    let renewed = http
        .post(format!("{url}/v1/summaries"))
        .bearer_auth(CALLER_KEY)
        .json(&body_of("20260513231500-7A1F0"))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 409);
    assert_eq!(sim.sim.stats().refreshes, 1);

    // A CommBox job, and a vendor callback carrying the callback token in its path.
    let job = http
        .post(format!("{url}/v1/summaries"))
        .bearer_auth(CALLER_KEY)
        .header("prefer", "wait=10")
        .json(&json!({"provider": "cb", "conversation": {"text": conversation_text("logs")}}))
        .send()
        .await
        .unwrap();
    let job: serde_json::Value = job.json().await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let told = cb.sim.actions()[0].callback_url.clone().unwrap();
    assert!(told.contains(CALLBACK_TOKEN), "{told}");
    let id = job["id"].as_str().unwrap();
    let callback = http.post(format!("{url}/callbacks/cb/{CALLBACK_TOKEN}?id={id}")).body("{}").send().await.unwrap();
    assert_eq!(callback.status(), 204);

    exercise_elevateai(&http, &url).await;
    assert_eq!(ai.sim.stats().asks, 1);

    assert_eq!(gw.terminate(), Some(0));
    let logs = gw.output();
    // The logs are really captured: requests, the caller's name, the renewal.
    assert!(logs.contains("access_token=REDACTED"), "{logs}");
    assert!(logs.contains("\"caller\":\"crm\""), "{logs}");
    assert!(logs.contains("access token refreshed"), "{logs}");
    assert!(logs.contains("/callbacks/cb/REDACTED"), "{logs}");
    for redacted in ["ACCESS_TOKEN=REDACTED", "access%5Ftoken=REDACTED", "a=1;access_token=REDACTED", "token=REDACTED"]
    {
        assert!(logs.contains(redacted), "{redacted} not in {logs}");
    }
    assert!(logs.contains("x-request-id was replaced"), "{logs}");
    assert!(!logs.contains(&"x".repeat(500)), "the caller's id is not logged");
    let mut secrets = [CALLER_KEY, CLIENT_ID, CLIENT_SECRET, COMMBOX_TOKEN, CALLBACK_TOKEN, ELEVATEAI_TOKEN]
        .map(str::to_owned)
        .to_vec();
    secrets.extend(sim.sim.issued_tokens());
    assert!(secrets.len() >= 5, "the simulator issued tokens: {secrets:?}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "`{secret}` appears in the logs:\n{logs}");
    }
}

/// Non-canonical spellings of `access_token`, the key under another name, an overlong request id.
async fn exercise_query_spellings(http: &reqwest::Client, url: &str) {
    // Other spellings of the parameter, and the key under another name, are
    // redacted too; only the name that decodes to `access_token` authenticates.
    for (query, status) in [
        (format!("ACCESS_TOKEN={CALLER_KEY}"), 401),
        (format!("access%5Ftoken={CALLER_KEY}"), 200),
        (format!("a=1;access_token={CALLER_KEY}"), 401),
        (format!("token={CALLER_KEY}"), 401),
    ] {
        let answer = http.get(format!("{url}/v1/providers?{query}")).send().await.unwrap();
        assert_eq!(answer.status(), status, "{query}");
    }
    let odd_id = http.get(format!("{url}/healthz")).header("x-request-id", "x".repeat(500)).send().await.unwrap();
    assert!(odd_id.headers()["x-request-id"].len() < 128);
}

/// ElevateAI (its token in the X-API-Token header): a result, a 409 and a question.
async fn exercise_elevateai(http: &reqwest::Client, url: &str) {
    for (body, status) in [
        (json!({"provider": "ai", "kind": "details", "conversation": {"id": elevateai::BILLING_CALL}}), 200),
        (json!({"provider": "ai", "conversation": {"id": elevateai::PROCESSING_CALL}}), 409),
    ] {
        let r = http.post(format!("{url}/v1/summaries")).bearer_auth(CALLER_KEY).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let asked = http
        .post(format!("{url}/v1/questions?access_token={CALLER_KEY}"))
        .json(&json!({"provider": "ai", "conversation": {"id": elevateai::BILLING_CALL}, "question": "Refunded?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
}
