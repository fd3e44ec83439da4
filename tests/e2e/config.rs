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
    assert!(stdout.contains("\n  summary_ttl: 2h\n"), "{stdout}");
    assert!(stdout.contains("\n    timeout: 7s\n"), "{stdout}");

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
    // The variable, not the file, is what to fix.
    for expected in [
        "SUMMARY_GATEWAY__SERVER__REQUEST_TIMEOUT (server.request_timeout): invalid value: string \"forever\"",
        "SUMMARY_GATEWAY__STORE__COLOUR (store.colour): unknown field",
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(expected)), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("with its environment overrides has 2 problem(s)"), "{stderr}");
}

#[test]
fn an_override_that_would_add_a_provider_is_refused_by_check_config_and_serve() {
    let file = write(GOOD);
    let env = [("CRM_KEY", "k"), ("PBX_CLIENT_ID", "i"), ("PBX_CLIENT_SECRET", "s")];
    for command in ["check-config", "serve"] {
        let out = binary()
            .args([command, "--config"])
            .arg(file.path())
            .envs(env)
            .env("SUMMARY_GATEWAY__PROVIDERS__PBX_HQ__BASE_URL", "https://pbx-2.example.com")
            .env("SUMMARY_GATEWAY__AUTH__KEYS__OPS__KEY_ENV", "OPS_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for expected in [
            "SUMMARY_GATEWAY__PROVIDERS__PBX_HQ__BASE_URL (providers.pbx_hq): sets provider `pbx_hq`, which the file \
             does not have",
            "SUMMARY_GATEWAY__AUTH__KEYS__OPS__KEY_ENV (auth.keys.ops): sets caller `ops`, which the file does not have",
        ] {
            assert!(stderr.lines().any(|l| l.starts_with(expected)), "{command}: missing `{expected}` in:\n{stderr}");
        }
        // ...and says which name would have reached the file's `pbx-hq`.
        assert!(stderr.contains("keep its `-`: SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__BASE_URL"), "{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("SUMMARY_GATEWAY__")).count(), 2, "{stderr}");
    }
}

#[test]
fn a_variable_with_one_underscore_after_the_prefix_gets_a_warning() {
    let file = write(GOOD);
    let out = binary()
        .arg("check-config")
        .envs([("CRM_KEY", "k"), ("PBX_CLIENT_ID", "i"), ("PBX_CLIENT_SECRET", "s")])
        // The CLI's own variable (the file), which is not an override and gets no warning.
        .env("SUMMARY_GATEWAY_CONFIG", file.path())
        .env("SUMMARY_GATEWAY_SERVER__LISTEN", "0.0.0.0:9999")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "summary-gateway: warning: SUMMARY_GATEWAY_SERVER__LISTEN is not read: overrides start with \
         SUMMARY_GATEWAY__ (two underscores), e.g. SUMMARY_GATEWAY__SERVER__LISTEN"
    );
}

/// `check-config --print` for `file`, its stdout.
fn print(file: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out =
        binary().args(["check-config", "--print", "--config"]).arg(file).envs(env.iter().copied()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn check_config_print_loads_back_as_the_same_configuration() {
    // Secrets of both kinds: named by `*_env` (kept as names) and inline (printed as '*****').
    let file = write(&GOOD.replace("      key_env: CRM_KEY\n", "      key: crm-inline-key\n"));
    let env = [("PBX_CLIENT_ID", "the-client-id"), ("PBX_CLIENT_SECRET", "the-client-secret")];
    let overrides = [("SUMMARY_GATEWAY__STORE__SUMMARY_TTL", "2h")];
    let printed = print(file.path(), &[env[0], env[1], overrides[0]]);
    assert!(printed.starts_with("# configuration ok: 1 provider(s), 1 key(s)\n"), "{printed}");
    assert!(printed.contains("\n      key: '*****'\n"), "{printed}");
    assert!(printed.contains("\n    client_secret_env: PBX_CLIENT_SECRET\n"), "{printed}");
    assert!(printed.contains("\n  summary_ttl: 2h\n"), "the override is in the print:\n{printed}");
    for secret in ["crm-inline-key", "the-client-id", "the-client-secret"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }

    // Printed to a file with the inline secret written again, it loads (without the
    // override, now in the file) and prints the same.
    let again = write(&printed.replace("key: '*****'", "key: crm-inline-key"));
    assert_eq!(print(again.path(), &env), printed);
}

#[test]
fn the_demo_template_is_named_and_described_as_one() {
    let template = include_str!("../../config/examples/demo.template.yaml");
    assert!(template.starts_with("# A template, not a configuration to load"), "{template}");
    let examples = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples")).unwrap();
    for entry in examples {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".template.yaml") {
            continue;
        }
        // Every other example passes check-config once its *_env variables are set.
        let text = std::fs::read_to_string(&path).unwrap();
        let vars: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once("_env: ").map(|(_, v)| v.split_whitespace().next().unwrap_or("").to_owned()))
            .map(|v| {
                let value = if v.contains("WEBHOOK") {
                    "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI=".to_owned()
                } else {
                    format!("{}-0123456789abcdef0123456789", v.to_lowercase().replace('_', "-"))
                };
                (v, value)
            })
            .collect();
        let out = binary().args(["check-config", "--config"]).arg(&path).envs(vars).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
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
