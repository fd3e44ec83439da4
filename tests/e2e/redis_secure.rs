//! Redis as managed services run it: TLS (`rediss://`, a private CA, a client
//! certificate for mutual TLS) and ACL users, against real `redis-server`s
//! started here on loopback ports. The certificates are made at test time.
//!
//! What is proven: the store works over TLS and with an ACL user; each way TLS
//! or AUTH can fail is named in `/readyz` and the logs (what to fix, never the
//! URL or a password); a wrong password is said at start-up and does not turn
//! into a storm of AUTH attempts.

use std::io::Write;
use std::path::{Path, PathBuf};

use providers::yeastar::simulator as yeastar;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

use crate::common::{GatewayProcess, KEY, Setup, TestGateway, client, config_yaml, docs_request, eventually};
use crate::redis_support::{PrivateRedis, connect, free_port, keys, unique_prefix};

const PASSWORD: &str = "s3cret-redis-pass";

/// A CA, and a certificate (with its key) it signs for each party, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `names` (host names or IP addresses) and its key, as PEM.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(pem.as_bytes()).unwrap();
    path
}

/// Certificates in a folder of their own: the server's valid for `server_names`.
fn pki(server_names: &[&str]) -> Pki {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    let ca = ca("summary-gateway test CA");
    let (server_cert, server_key) = leaf(&ca, server_names, ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(&ca, &["summary-gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write(dir, "ca.pem", &ca.pem()),
        server_cert: write(dir, "server.pem", &server_cert),
        server_key: write(dir, "server.key", &server_key),
        client_cert: write(dir, "client.pem", &client_cert),
        client_key: write(dir, "client.key", &client_key),
        _dir: folder,
    }
}

/// A TLS Redis (mutual TLS when `clients_need_certs`) with a password; its
/// certificates, and the TLS port. The plain port stays for the test's own look.
fn tls_redis(server_names: &[&str], clients_need_certs: bool) -> (PrivateRedis, Pki, u16) {
    let pki = pki(server_names);
    let tls_port = free_port();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let redis = PrivateRedis::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path(&pki.server_cert),
        "--tls-key-file".into(),
        path(&pki.server_key),
        "--tls-ca-cert-file".into(),
        path(&pki.ca),
        "--tls-auth-clients".into(),
        (if clients_need_certs { "yes" } else { "no" }).into(),
    ]);
    (redis, pki, tls_port)
}

/// A gateway (in process, against the simulators) whose store is `store` (YAML
/// lines under `store:`, indented by 2).
async fn gateway_with_store(store: &str) -> TestGateway {
    TestGateway::start_with(Setup { extra: format!("store:\n{store}"), ..Setup::default() }).await
}

async fn readyz(url: &str) -> Value {
    client().get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_tls_redis_with_a_private_ca_and_a_client_certificate_is_the_store() {
    let (redis, pki, port) = tls_redis(&["127.0.0.1"], true);
    let prefix = unique_prefix("tls");
    let gw = gateway_with_store(&format!(
        "  redis_url: rediss://127.0.0.1:{port}\n  key_prefix: {prefix}\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ))
    .await;
    let ready = readyz(&gw.url).await;
    assert_eq!((ready["status"].as_str(), ready["store"].as_str()), (Some("ready"), Some("redis")), "{ready}");

    let first = gw.summarize(&docs_request()).await;
    assert_eq!(first.status(), 200);
    let again = gw.summarize(&docs_request()).await;
    assert_eq!(again.headers()["cache-status"], "summary-gateway; hit");
    // Written over TLS: the summary is in that Redis (read on its plain port).
    let stored = keys(&mut connect(&redis.url()).unwrap(), &prefix);
    assert!(stored.iter().any(|k| k.ends_with(":summary")), "{stored:?}");
}

/// Each TLS failure is named in `/readyz` as what to fix; the URL (with its
/// password) is never in it.
#[tokio::test]
async fn tls_problems_are_named_without_the_url() {
    // Mutual TLS, the certificate valid for 127.0.0.1.
    let (_mtls, good, port) = tls_redis(&["127.0.0.1"], true);
    // Server-only TLS, its certificate for another host name.
    let (_other, other, other_port) = tls_redis(&["redis.internal"], false);
    let url = |port: u16| format!("rediss://:{PASSWORD}@127.0.0.1:{port}");
    let cases = [
        (
            "the system's roots do not know a private CA",
            format!("  redis_url: {}\n", url(port)),
            "not signed by a trusted CA",
        ),
        (
            "a certificate for another host name",
            format!("  redis_url: {}\n  tls:\n    ca_file: {}\n", url(other_port), other.ca.display()),
            "not valid for the host name",
        ),
        (
            "no client certificate where the server requires one",
            format!("  redis_url: {}\n  tls:\n    ca_file: {}\n", url(port), good.ca.display()),
            "refused the gateway's client certificate",
        ),
    ];
    for (case, store, expected) in cases {
        let gw = gateway_with_store(&store).await;
        let ready = readyz(&gw.url).await;
        assert_eq!(ready["status"], "degraded", "{case}: {ready}");
        let detail = ready["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(expected), "{case}: {detail}");
        assert!(!detail.contains(PASSWORD) && !detail.contains("127.0.0.1"), "{case}: the URL leaked: {detail}");
        // A request still gets its summary (the store is bypassed while it fails).
        assert_eq!(gw.summarize(&docs_request()).await.status(), 200, "{case}");
    }
}

/// Failed AUTHs so far, from `ACL LOG` (Redis 7.0 has no counter for them in
/// `INFO`): the `count` of its `auth` entries (repeats are counted in one entry).
fn failed_auths(redis: &PrivateRedis) -> i64 {
    // The plain port as the ACL user (the default user is off).
    let url = redis.url().replacen("redis://", &format!("redis://sg:{PASSWORD}@"), 1);
    let entries: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(&mut connect(&url).unwrap()).unwrap();
    entries
        .iter()
        .filter(|e| matches!(e.get("reason"), Some(redis::Value::BulkString(r)) if r == b"auth"))
        .map(|e| match e.get("count") {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("an ACL LOG entry without its count: {other:?}"),
        })
        .sum()
}

fn acl_config(dir: &Path, redis: &PrivateRedis, prefix: &str, sim: &str) -> PathBuf {
    let yaml = format!(
        "{}store:\n  redis_url: {}\n  key_prefix: {prefix}\n  username: sg\n  password_env: SG_TEST_REDIS_PASSWORD\n",
        config_yaml(sim, "", ""),
        redis.url()
    );
    write(dir, &format!("{prefix}.yaml"), &yaml)
}

/// An ACL user with its password from the environment works; a wrong password
/// is said at start-up and in `/readyz`, never with the password, and the
/// gateway does not hammer Redis with AUTHs meanwhile.
#[tokio::test]
async fn an_acl_user_with_its_password_from_the_environment() {
    let redis = PrivateRedis::start_with(vec![
        "--user".into(),
        "default".into(),
        "off".into(),
        "--user".into(),
        "sg".into(),
        "on".into(),
        format!(">{PASSWORD}"),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ]);
    let sim = yeastar::YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("acl");
    let config = acl_config(dir.path(), &redis, &prefix, &sim.base_url());

    let good = GatewayProcess::spawn(&config, &[("SG_TEST_REDIS_PASSWORD", PASSWORD)]);
    let ready = readyz(&good.url()).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let r = client().post(format!("{}/v1/summaries", good.url())).bearer_auth(KEY).json(&docs_request()).send();
    assert_eq!(r.await.unwrap().status(), 200);
    drop(good);

    let before = failed_auths(&redis);
    let wrong = "not-the-password";
    let bad = GatewayProcess::spawn(&config, &[("SG_TEST_REDIS_PASSWORD", wrong)]);
    // A burst of requests and probes while the password is wrong: each is
    // answered, the store bypassed, and the breaker holds the AUTHs back.
    let c = client();
    for _ in 0..100 {
        let r = c.post(format!("{}/v1/summaries", bad.url())).bearer_auth(KEY).json(&docs_request()).send();
        assert_eq!(r.await.unwrap().status(), 200);
    }
    let ready = readyz(&bad.url()).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let detail = ready["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("refused the credentials"), "{detail}");
    let auths = failed_auths(&redis) - before;
    eprintln!("{auths} failed AUTHs for 100 requests and a probe");
    assert!((1..=20).contains(&auths), "{auths} failed AUTHs for 100 requests");
    eventually("the start-up error in the logs", || {
        bad.output().lines().any(|l| l.contains("does not answer at start-up") && l.contains("refused the credentials"))
    })
    .await;
    let logs = bad.output();
    assert!(!logs.contains(wrong) && !logs.contains(PASSWORD), "a password reached the logs");
}

/// `check-config` reads the TLS files where it runs (the loader cannot: a
/// manifest names paths that exist only in the pod), without connecting.
#[test]
fn check_config_reads_the_tls_files_without_connecting() {
    let pki = pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |tls: &str| {
        let yaml = format!(
            "{}store:\n  redis_url: rediss://127.0.0.1:{}\n  tls:\n{tls}",
            config_yaml("http://127.0.0.1:9", "", ""),
            free_port()
        );
        let config = write(dir.path(), "check.yaml", &yaml);
        crate::common::binary().args(["check-config", "--config"]).arg(&config).output().unwrap()
    };
    let good = run(&format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let missing = run("    ca_file: /no/such/ca.pem\n");
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("store.tls.ca_file: cannot read /no/such/ca.pem"), "{stderr}");
    let not_pem = run(&format!("    ca_file: {}\n", dir.path().join("check.yaml").display()));
    assert_eq!(not_pem.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&not_pem.stderr);
    assert!(stderr.contains("store.tls.ca_file: no PEM certificate in"), "{stderr}");
}
