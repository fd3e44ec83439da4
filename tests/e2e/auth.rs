//! Authentication, scopes and rate limits.

use crate::common::{KEY, NARROW_KEY, TINY_KEY, TestGateway, docs_request, expect_problem};

#[tokio::test]
async fn a_key_works_in_the_header_or_the_query() {
    let gw = TestGateway::start().await;
    let by_header =
        gw.client.post(format!("{}/v1/summaries", gw.url)).bearer_auth(KEY).json(&docs_request()).send().await.unwrap();
    assert_eq!(by_header.status(), 200);
    let by_query = gw
        .client
        .post(format!("{}/v1/summaries?access_token={KEY}", gw.url))
        .json(&docs_request())
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    // The scheme name is case-insensitive.
    let lower = gw
        .client
        .get(format!("{}/v1/providers", gw.url))
        .header("authorization", format!("bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401_with_www_authenticate() {
    let gw = TestGateway::start().await;
    let cases = [
        gw.client.get(format!("{}/v1/providers", gw.url)),
        gw.client.get(format!("{}/v1/providers", gw.url)).bearer_auth("not-a-key"),
        gw.client.get(format!("{}/v1/providers?access_token=not-a-key", gw.url)),
        gw.client.get(format!("{}/v1/providers", gw.url)).header("authorization", format!("Basic {KEY}")),
        // A key differing only in its last character.
        gw.client.get(format!("{}/v1/providers", gw.url)).bearer_auth(&KEY[..KEY.len() - 1]),
    ];
    for request in cases {
        let response = request.send().await.unwrap();
        let challenge =
            response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        expect_problem(response, 401, "unauthorized").await;
    }
    // Open routes need no key.
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(gw.client.get(format!("{}{open}", gw.url)).send().await.unwrap().status(), 200, "{open}");
    }
}

#[tokio::test]
async fn a_key_restricted_to_other_providers_gets_403() {
    let gw = TestGateway::start().await;
    let response = gw
        .client
        .post(format!("{}/v1/summaries", gw.url))
        .bearer_auth(NARROW_KEY)
        .json(&docs_request())
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("pbx"));
    assert_eq!(gw.sim.stats().summary_calls, 0);

    // Allowed where it is scoped, and /v1/providers lists only that provider.
    let mut other = docs_request();
    other["provider"] = "pbx-other".into();
    let ok =
        gw.client.post(format!("{}/v1/summaries", gw.url)).bearer_auth(NARROW_KEY).json(&other).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let id = ok.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let list: serde_json::Value = gw
        .client
        .get(format!("{}/v1/providers", gw.url))
        .bearer_auth(NARROW_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["name"], "pbx-other");

    // A summary of a provider the key may not use is not readable with it either.
    let pbx = gw.summarize(&docs_request()).await.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response =
        gw.client.get(format!("{}/v1/summaries/{pbx}", gw.url)).bearer_auth(NARROW_KEY).send().await.unwrap();
    expect_problem(response, 403, "forbidden").await;
    let own = gw.client.get(format!("{}/v1/summaries/{id}", gw.url)).bearer_auth(NARROW_KEY).send().await.unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn over_its_rate_limit_a_key_gets_429_with_retry_after_and_ratelimit_headers() {
    let gw = TestGateway::start().await;
    let providers = format!("{}/v1/providers", gw.url);
    for remaining in [1, 0] {
        let ok = gw.client.get(&providers).bearer_auth(TINY_KEY).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["ratelimit-limit"], "2");
        assert_eq!(ok.headers()["ratelimit-remaining"], remaining.to_string().as_str());
    }
    let limited = gw.client.get(&providers).bearer_auth(TINY_KEY).send().await.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((900..=1000).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert_eq!(limited.headers()["ratelimit-reset"].to_str().unwrap(), retry_after.to_string());
    expect_problem(limited, 429, "rate_limited").await;
    // Limits are per key: another key is unaffected.
    assert_eq!(gw.client.get(&providers).bearer_auth(KEY).send().await.unwrap().status(), 200);
}
