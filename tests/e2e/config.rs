//! `check-config` and `serve` with good and bad configurations (the real binary).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::binary;

fn write(yaml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(yaml.as_bytes()).unwrap();
    f
}

const BAD: &str = r"
server:
  listen: 127.0.0.1:0
  max_body_bytes: lots
auth:
  keys:
    crm:
      key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
      providers: [pbx-hq, nowhere]
providers:
  pbx-hq:
    type: yeastar
    bse_url: https://pbx.example.com:8088
    client_id_env: PBX_CLIENT_ID
    client_secret_env: PBX_CLIENT_SECRET_THAT_IS_NOT_SET
  analytics:
    type: telepathy
";

const EXPECTED: &[&str] = &[
    "server.max_body_bytes: invalid type",
    "providers.pbx-hq.bse_url: unknown field",
    "providers.pbx-hq.client_secret_env: environment variable PBX_CLIENT_SECRET_THAT_IS_NOT_SET is not set",
    "providers.analytics.type: unknown provider type `telepathy`",
    "auth.keys.crm.providers[1]: unknown provider `nowhere`",
];

#[test]
fn check_config_lists_every_problem_with_its_path_and_exits_2() {
    let file = write(BAD);
    let out = binary().args(["check-config", "--config"]).arg(file.path()).env("PBX_CLIENT_ID", "id").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in EXPECTED {
        assert!(stderr.lines().any(|l| l.starts_with(expected)), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn serve_with_a_bad_config_exits_at_once_with_the_same_problems() {
    let file = write(BAD);
    let started = Instant::now();
    let out = binary().args(["serve", "--config"]).arg(file.path()).env("PBX_CLIENT_ID", "id").output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in EXPECTED {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

const GOOD: &str = r"
server:
  listen: 127.0.0.1:0
auth:
  keys:
    crm:
      key_env: CRM_KEY
providers:
  pbx-hq:
    type: yeastar
    base_url: https://pbx.example.com:8088
    client_id_env: PBX_CLIENT_ID
    client_secret_env: PBX_CLIENT_SECRET
";

#[test]
fn a_good_config_passes_and_secrets_never_print() {
    let file = write(GOOD);
    let out = binary()
        .args(["check-config", "--print", "--config"])
        .arg(file.path())
        .envs([
            ("CRM_KEY", "crm-plain-key"),
            ("PBX_CLIENT_ID", "the-client-id"),
            ("PBX_CLIENT_SECRET", "the-client-secret"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("configuration ok"));
    assert!(stdout.contains("pbx-hq"));
    for secret in ["crm-plain-key", "the-client-id", "the-client-secret"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
}

#[test]
fn environment_overrides_are_applied_and_checked_with_their_path() {
    let file = write(GOOD);
    let env = [("CRM_KEY", "k"), ("PBX_CLIENT_ID", "i"), ("PBX_CLIENT_SECRET", "s")];
    let ok = binary()
        .args(["check-config", "--print", "--config"])
        .arg(file.path())
        .envs(env)
        .env("SUMMARY_GATEWAY__STORE__SUMMARY_TTL", "2h")
        .env("SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__TIMEOUT", "7s")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("\"summary_ttl\": \"2h\""), "{stdout}");
    assert!(stdout.contains("\"timeout\": \"7s\""), "{stdout}");

    let bad = binary()
        .args(["check-config", "--config"])
        .arg(file.path())
        .envs(env)
        .env("SUMMARY_GATEWAY__SERVER__REQUEST_TIMEOUT", "forever")
        .env("SUMMARY_GATEWAY__STORE__COLOUR", "blue")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("server.request_timeout: "), "{stderr}");
    assert!(stderr.contains("store.colour: unknown field"), "{stderr}");
}

#[test]
fn what_only_an_adapter_can_check_is_a_config_error_too() {
    let file = write(
        r"
server:
  listen: 127.0.0.1:0
auth:
  keys:
    crm: { key: k }
providers:
  cb:
    type: commbox
    base_url: https://api.commbox.io
    token: t
    default_language: tlh
",
    );
    for command in ["check-config", "serve"] {
        let out = binary().args([command, "--config"]).arg(file.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().any(|l| l.starts_with("providers.cb.default_language: `tlh` is not a language CommBox")),
            "{command}:\n{stderr}"
        );
    }
}

#[test]
fn a_bad_jsonpath_fails_check_config_with_its_path() {
    let file = write(
        r#"
server:
  listen: 127.0.0.1:0
auth:
  keys:
    crm: { key: k }
providers:
  analytics:
    type: elevateai
    base_url: https://api.elevateai.com
    token: t
    mappings:
      topics: { items: "$.topics[*" }
      details: { reasons: "$.reasons[*]", colour: "$.x" }
  cb:
    type: commbox
    base_url: https://api.commbox.io
    token: t
    default_language: tlh
    mappings:
      summary: { text: "answer" }
"#,
    );
    let out = binary().args(["check-config", "--config"]).arg(file.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "providers.analytics.mappings.topics.items: `$.topics[*` is not a valid JSONPath expression",
        "providers.analytics.mappings.details.colour: unknown field",
        "providers.cb.default_language: `tlh` is not a language CommBox",
        "providers.cb.mappings.summary.text: `answer` is not a valid JSONPath expression",
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(expected)), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.lines().all(|l| !l.contains(" --> ")), "one line per problem:\n{stderr}");
}
