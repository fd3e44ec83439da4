//! Captured logs of the real binary carry no key, vendor token or client secret.

use std::io::Write;
use std::time::Duration;

use providers::yeastar::simulator::{SimOptions, YeastarSimulator};

use crate::common::{GatewayProcess, body_of, client, docs_request};

const CALLER_KEY: &str = "caller-key-that-must-never-be-logged";
const CLIENT_ID: &str = "client-id-that-must-never-be-logged";
const CLIENT_SECRET: &str = "client-secret-that-must-never-be-logged";

#[tokio::test]
async fn logs_contain_no_key_token_or_client_secret() {
    let sim = YeastarSimulator::start(SimOptions {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nauth:\n  keys:\n    crm:\n      key_env: CRM_KEY\nproviders:\n  pbx:\n    type: yeastar\n    base_url: {}\n    client_id_env: PBX_ID\n    client_secret_env: PBX_SECRET\n",
        sim.base_url()
    );
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let mut gw = GatewayProcess::spawn(
        file.path(),
        &[("CRM_KEY", CALLER_KEY), ("PBX_ID", CLIENT_ID), ("PBX_SECRET", CLIENT_SECRET)],
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

    assert_eq!(gw.terminate(), Some(0));
    let logs = gw.output();
    // The logs are really captured: requests, the caller's name, the renewal.
    assert!(logs.contains("access_token=REDACTED"), "{logs}");
    assert!(logs.contains("\"caller\":\"crm\""), "{logs}");
    assert!(logs.contains("access token refreshed"), "{logs}");
    let mut secrets = vec![CALLER_KEY.to_owned(), CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned()];
    secrets.extend(sim.sim.issued_tokens());
    assert!(secrets.len() >= 5, "the simulator issued tokens: {secrets:?}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "`{secret}` appears in the logs:\n{logs}");
    }
}
