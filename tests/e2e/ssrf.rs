//! `callback_url` and server-side request forgery: an IPv4 address hidden in an
//! IPv6 transition prefix is judged like the IPv4 address itself, and the
//! special-purpose blocks of the IANA registries are refused, over real HTTP.

use serde_json::json;

use crate::common::{TestGateway, commbox_body, expect_problem};

#[tokio::test]
async fn callback_urls_through_ipv6_transition_prefixes_are_refused() {
    let gw = TestGateway::start().await;
    for url in [
        "http://[64:ff9b::a9fe:a9fe]/", // NAT64 → 169.254.169.254, the metadata address
        "http://[64:ff9b::a9fe:a9fe]:8080/latest/meta-data",
        "http://[64:ff9b:1::a9fe:a9fe]/",   // local-use NAT64
        "http://[2002:a9fe:a9fe::1]/",      // 6to4 → 169.254.169.254
        "http://[::ffff:0:a9fe:a9fe]/",     // SIIT → 169.254.169.254
        "http://[::ffff:169.254.169.254]/", // IPv4-mapped
        "http://[::a9fe:a9fe]/",            // IPv4-compatible
        "http://[2001::a9fe:a9fe]/",        // Teredo
        "http://[2001:db8::1]/",            // documentation
        "https://[fd00:ec2::254]/",         // AWS's IPv6 metadata address (unique local)
    ] {
        let mut body = commbox_body("ssrf");
        body["callback_url"] = json!(url);
        let problem = expect_problem(gw.summarize(&body).await, 422, "invalid_callback_url").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("non-public address"), "{url}: {detail}");
    }
    assert_eq!(gw.commbox.stats().submits, 0, "a refused callback_url makes no vendor call");
}
