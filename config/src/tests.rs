use std::collections::HashMap;
use std::time::Duration;

use sha2::Digest;

use super::*;
use crate::providers::commbox::CommBoxConfig;
use crate::providers::elevateai::{ACCOUNT_CONCURRENCY, ElevateAiConfig, ElevateAiVariant};
use crate::providers::yeastar::YeastarConfig;

/// The vendor types these tests load. A build's list is the providers crate's
/// registry, which this crate cannot see; these are the types whose keys are here.
pub(crate) const VENDORS: &[&dyn VendorType] = &[
    &VendorOf::<CommBoxConfig>::NEW,
    &VendorOf::<ElevateAiConfig>::NEW,
    &VendorOf::<YeastarConfig>::NEW,
    &VendorOf::<HttpConfig>::NEW,
];

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

const GOOD: &str = r"
server:
  listen: 127.0.0.1:0
store:
  summary_ttl: 12h
auth:
  keys:
    crm:
      key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
      rate_limit: { per_second: 50, burst: 100 }
      providers: [pbx-hq]
    ops:
      key_env: OPS_KEY
providers:
  pbx-hq:
    type: yeastar
    base_url: https://pbx.example.com:8088
    client_id_env: PBX_CLIENT_ID
    client_secret_env: PBX_CLIENT_SECRET
    timeout: 3s
";

fn messages(err: &ConfigErrors) -> Vec<String> {
    err.iter().map(ToString::to_string).collect()
}

#[test]
fn loads_a_good_config_and_resolves_secrets() {
    let env = env_of(&[("OPS_KEY", "ops-key"), ("PBX_CLIENT_ID", "id"), ("PBX_CLIENT_SECRET", "s3cret")]);
    let config = Config::from_yaml(VENDORS, GOOD, &env).unwrap();
    assert_eq!(config.store.summary_ttl, Duration::from_secs(12 * 3600));
    // key_sha256 is decoded; key_env is hashed.
    let digest = |s: &str| -> [u8; 32] { sha2::Sha256::digest(s.as_bytes()).into() };
    assert_eq!(config.auth.keys["crm"].credentials[0].sha256, digest("password"));
    assert_eq!(config.auth.keys["ops"].credentials[0].sha256, digest("ops-key"));
    let p = &config.providers["pbx-hq"];
    assert_eq!(p.common.timeout, Duration::from_secs(3));
    let Some(y) = p.vendor.settings::<YeastarConfig>() else { panic!("not yeastar") };
    assert_eq!(y.client_secret().expose(), "s3cret");
    // Secrets never print, in Debug or when the config is serialized.
    let dump = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
    assert!(!dump.contains("s3cret"), "{dump}");
}

#[test]
fn reports_every_problem_with_its_yaml_path() {
    let yaml = r"
server:
  listen: nowhere
  max_body_bytes: 10
bogus: 1
auth:
  keys:
    crm:
      key_sha256: nothex
      providers: [pbx-hq, missing]
    bad:
      key: abc
      rate_limit: { per_second: 0, burst: 1 }
    dup:
      key: abc
providers:
  pbx-hq:
    type: yeastar
    bse_url: https://x
    client_id: a
    client_secret: b
  other:
    type: yeastar
    base_url: ftp://x
    client_id_env: NOPE
    client_secret: b
    timeout: 3 parsecs
  Bad Name:
    type: nope
";
    let err = Config::from_yaml(VENDORS, yaml, &env_of(&[])).unwrap_err();
    let got = messages(&err);
    let expect_prefixes = [
        "bogus: unknown field",
        "server.listen: ",
        "providers.pbx-hq.bse_url: unknown field",
        "providers.other.timeout: ",
        "providers.other.base_url: must be an http",
        "providers.other.client_id_env: environment variable NOPE is not set",
        "providers.Bad Name: provider names are",
        "providers.Bad Name.type: unknown provider type `nope`",
        "auth.keys.crm.key_sha256: must be 64 hex",
        "auth.keys.crm.providers[1]: unknown provider `missing`",
        "auth.keys.bad.rate_limit.per_second: must be a positive number",
        "auth.keys.dup: same key as auth.keys.bad",
    ];
    for prefix in expect_prefixes {
        assert!(got.iter().any(|m| m.starts_with(prefix)), "missing `{prefix}` in:\n{}", got.join("\n"));
    }
}

#[test]
fn missing_required_fields_name_their_path() {
    let yaml = r"
auth: { keys: { a: { key: k } } }
providers:
  pbx: { type: yeastar, client_id: a }
";
    let got = messages(&Config::from_yaml(VENDORS, yaml, &env_of(&[])).unwrap_err());
    assert!(got.iter().any(|m| m.starts_with("providers.pbx.base_url: missing field")), "{got:?}");
}

#[test]
fn empty_config_asks_for_keys_and_providers() {
    let got = messages(&Config::from_yaml(VENDORS, "", &env_of(&[])).unwrap_err());
    assert!(got.contains(&"providers: at least one provider is required".to_owned()), "{got:?}");
    assert!(got.contains(&"auth.keys: at least one key is required".to_owned()), "{got:?}");
}

#[test]
fn one_bad_field_does_not_hide_the_next() {
    let yaml = r"
auth: { keys: { a: { key: k, rate_limit: { per_second: fast } } } }
server: { listen: 127.0.0.1:1, colour: red, request_timeout: never }
providers:
  pbx:
    type: yeastar
    bse_url: https://x
    base_url: https://x
    clientid: a
    client_id_env: UNSET_ID
    client_secret: b
    timeout: soon
";
    let got = messages(&Config::from_yaml(VENDORS, yaml, &env_of(&[])).unwrap_err());
    for expected in [
        "providers.pbx.bse_url: unknown field",
        "providers.pbx.clientid: unknown field",
        "providers.pbx.client_id_env: environment variable UNSET_ID is not set",
        "providers.pbx.timeout: invalid value",
        "server.colour: unknown field",
        "server.request_timeout: invalid value",
        "auth.keys.a.rate_limit.per_second: invalid type",
    ] {
        assert!(got.iter().any(|m| m.starts_with(expected)), "missing `{expected}` in:\n{}", got.join("\n"));
    }
    assert!(!got.iter().any(|m| m.contains("missing field")), "{got:?}");
}

#[test]
fn http_providers_are_checked_with_their_paths() {
    let yaml = r#"
auth:
  keys:
    crm: { key: k }
providers:
  twice:
    type: http
    base_url: https://api.acme.example
    input: text
    id_pattern: "^x$"
    auth: { bearer: t, header: { name: X-Key, value: v } }
    request: { path: /s }
    job: { ref: $.id, poll: { path: "/p/{ref}" }, status: $.status, completed: [], poll_interval: 1ms }
    errors: { by_status: { 409: teapot, 99: not_found }, ok_codes: [0] }
  none:
    type: http
    base_url: https://api.acme.example
    input: reference
    min_text_chars: 10
    auth: {}
  bad-secret:
    type: http
    base_url: https://api.acme.example
    input: reference
    auth: { header: { name: "X Key" }, }
    request: { path: /s }
  oauth:
    type: http
    base_url: https://api.acme.example
    input: reference
    auth: { oauth2: { token_url: https://id.acme.example/token, client_id_env: ACME_ID } }
    request: { path: /s }
"#;
    let err = Config::from_yaml(VENDORS, yaml, &|_| None).unwrap_err();
    let messages = messages(&err);
    for path in [
        "providers.twice.id_pattern",
        "providers.twice.auth",
        "providers.twice.job.completed",
        "providers.twice.job.poll_interval",
        "providers.twice.errors.by_status.409",
        "providers.twice.errors.by_status.99",
        "providers.twice.errors.ok_codes",
        "providers.none.min_text_chars",
        "providers.none.request",
        "providers.none.auth",
        "providers.bad-secret.auth.header.name",
        "providers.bad-secret.auth.header.value_env",
        "providers.oauth.auth.oauth2.client_id_env",
        "providers.oauth.auth.oauth2.client_secret_env",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(&format!("{path}:"))), "{path} missing in {messages:#?}");
    }
    assert!(messages.iter().any(|m| m.contains("found bearer_env, header")), "{messages:#?}");

    // Each form alone loads, its secret resolved from the environment.
    let env = |name: &str| (name.starts_with("ACME_")).then(|| format!("{name}-value"));
    for auth in [
        "{ bearer_env: ACME_TOKEN }",
        "{ header: { name: X-API-Token, value_env: ACME_TOKEN } }",
        "{ query: { name: api_key, value_env: ACME_TOKEN } }",
        "{ oauth2: { token_url: https://id.acme.example/token, client_id_env: ACME_ID, client_secret_env: ACME_SECRET } }",
    ] {
        let yaml = format!(
            "auth: {{ keys: {{ crm: {{ key: k }} }} }}\nproviders:\n  acme:\n    type: http\n    base_url: https://api.acme.example\n    input: text\n    auth: {auth}\n    request: {{ path: /s }}\n"
        );
        let config = Config::from_yaml(VENDORS, &yaml, &env).unwrap_or_else(|e| panic!("{auth}: {e}"));
        let Some(http) = config.providers["acme"].vendor.settings::<HttpConfig>() else { panic!("not http") };
        assert!(http.resolved_auth.is_some(), "{auth}");
        let printed = config.to_yaml().unwrap();
        assert!(!printed.contains("-value"), "a secret printed: {printed}");
    }
}

#[test]
fn commbox_providers_are_checked_with_their_paths() {
    let yaml = r"
auth:
  keys:
    crm: { key: k, webhook_secret: whsec_tooshort }
    ops: { key: k2, webhook_secret: not-a-whsec }
providers:
  cb:
    type: commbox
    token: t
    job_timeout: 13h
    poll_interval: 1ms
    callback_token: short
  cb2:
    type: commbox
    base_url: https://api.commbox.io
";
    let err = Config::from_yaml(VENDORS, yaml, &|_| None).unwrap_err();
    let messages = messages(&err);
    for path in [
        "auth.keys.crm.webhook_secret",
        "auth.keys.ops.webhook_secret",
        "providers.cb.base_url",
        "providers.cb.job_timeout",
        "providers.cb.poll_interval",
        "providers.cb.callback_token",
        "providers.cb2.token_env",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(&format!("{path}:"))), "{path} missing in {messages:#?}");
    }
}

#[test]
fn the_example_configs_load() {
    let env = env_of(&[
        ("CRM_API_KEY", "crm-key"),
        ("CRM_WEBHOOK_SECRET", "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="),
        ("COMMBOX_TOKEN", "t"),
        ("COMMBOX_CALLBACK_TOKEN", "0123456789abcdef0123456789abcdef"),
        ("PBX_CLIENT_ID", "id"),
        ("PBX_CLIENT_SECRET", "secret"),
        ("REPORTING_API_KEY", "r"),
        ("ANALYTICS_UI_KEY", "a"),
        ("ELEVATEAI_TOKEN", "e"),
    ]);
    for (name, yaml) in [
        ("commbox.yaml", include_str!("../examples/commbox.yaml")),
        ("elevateai.yaml", include_str!("../examples/elevateai.yaml")),
        ("yeastar.yaml", include_str!("../examples/yeastar.yaml")),
        ("http-commbox.yaml", include_str!("../examples/http-commbox.yaml")),
        ("http-elevateai.yaml", include_str!("../examples/http-elevateai.yaml")),
    ] {
        let config = Config::from_yaml(VENDORS, yaml, &env).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert!(!config.providers.is_empty(), "{name}");
    }
    let config = Config::from_yaml(VENDORS, include_str!("../examples/commbox.yaml"), &env).unwrap();
    let Some(c) = config.providers["commbox"].vendor.settings::<CommBoxConfig>() else { panic!("not commbox") };
    assert_eq!(c.poll_interval, Duration::from_secs(3));
    assert!(c.resolved_callback_token.is_some());
    assert!(config.auth.keys["crm"].resolved_webhook_secret.is_some());
    // The demo's template: providers/src/registry/tests.rs (it has a provider per simulator of the registry).
}

#[test]
fn elevateai_defaults_to_the_vendors_concurrency_limit() {
    let yaml = "auth: { keys: { t: { key: k } } }\nproviders:\n  a:\n    type: elevateai\n    base_url: https://api.elevateai.com\n    token: t\n  b:\n    type: elevateai\n    base_url: https://api.elevateai.com\n    token: t\n    max_concurrency: 4\n    variant: standard\n    mappings: { topics: { items: \"$.subjects[*]\" } }\n";
    let config = Config::from_yaml(VENDORS, yaml, &|_| None).unwrap();
    assert_eq!(config.providers["a"].common.max_concurrency, ACCOUNT_CONCURRENCY);
    assert_eq!(config.providers["b"].common.max_concurrency, 4);
    assert_eq!(config.providers["b"].common.mappings["topics"]["items"], "$.subjects[*]");
    let Some(b) = config.providers["b"].vendor.settings::<ElevateAiConfig>() else { panic!("not elevateai") };
    assert_eq!(b.variant, ElevateAiVariant::Standard);
    let errors = Config::from_yaml(
        VENDORS,
        "auth: { keys: { t: { key: k } } }\nproviders:\n  a:\n    type: elevateai\n    variant: fancy\n",
        &|_| None,
    )
    .unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for path in ["providers.a.variant", "providers.a.base_url", "providers.a.token_env"] {
        assert!(messages.iter().any(|m| m.starts_with(&format!("{path}:"))), "{path} missing in {messages:#?}");
    }
}

#[test]
fn the_redis_store_is_configured_and_checked() {
    let base = "auth: { keys: { t: { key: k } } }\nproviders: { p: { type: yeastar, base_url: 'https://pbx', client_id: a, client_secret: b } }\n";
    let yaml = format!("{base}store: {{ redis_url: 'redis://:pw@redis:6379/2', key_prefix: gw-a, job_lease: 4s }}\n");
    let config = Config::from_yaml(VENDORS, &yaml, &|_| None).unwrap();
    assert_eq!(config.store.redis_url.as_ref().map(|u| u.expose().as_str()), Some("redis://:pw@redis:6379/2"));
    assert_eq!((config.store.key_prefix.as_str(), config.store.job_lease), ("gw-a", Duration::from_secs(4)));
    assert_eq!(config.store.timeout, Duration::from_millis(500));

    let yaml = format!(
        "{base}store: {{ redis_url: 'sentinel://redis:6380', key_prefix: 'a{{b}}', job_lease: 100ms, timeout: 0s }}\n"
    );
    let messages: Vec<String> =
        Config::from_yaml(VENDORS, &yaml, &|_| None).unwrap_err().iter().map(ToString::to_string).collect();
    for path in ["store.redis_url", "store.key_prefix", "store.job_lease", "store.timeout"] {
        assert!(messages.iter().any(|m| m.starts_with(&format!("{path}:"))), "{path} missing in {messages:#?}");
    }
    assert!(!messages.iter().any(|m| m.contains("redis:6380")), "the URL is not echoed: {messages:#?}");
}

#[test]
fn tls_and_acl_users_of_the_redis_store_are_checked_with_their_paths() {
    let base = "auth: { keys: { t: { key: k } } }\nproviders: { p: { type: yeastar, base_url: 'https://pbx', client_id: a, client_secret: b } }\n";
    let ca = tempfile::NamedTempFile::new().unwrap();
    let ca_path = ca.path().display().to_string();
    let yaml = format!(
        "{base}store: {{ redis_url: 'rediss://cache.example.com:6380', username: gw, password_env: REDIS_PW, tls: {{ ca_file: '{ca_path}' }} }}\n"
    );
    let config = Config::from_yaml(VENDORS, &yaml, &env_of(&[("REDIS_PW", "pw-1")])).unwrap();
    assert_eq!(config.store.username.as_deref(), Some("gw"));
    assert_eq!(config.store.password.as_ref().map(|p| p.expose().as_str()), Some("pw-1"));
    assert_eq!(config.store.tls.ca_file.as_deref(), Some(ca.path()));

    let check = |store: &str, env: &[(&str, &str)]| -> Vec<String> {
        let yaml = format!("{base}store: {store}\n");
        Config::from_yaml(VENDORS, &yaml, &env_of(env)).map_or_else(|e| messages(&e), |_| Vec::new())
    };
    let has = |messages: &[String], path: &str, text: &str| {
        assert!(
            messages.iter().any(|m| m.starts_with(&format!("{path}:")) && m.contains(text)),
            "{path} ({text}) missing in {messages:#?}"
        );
    };
    let m = check("{ redis_url: 'rediss://:pw@cache.example.com', tls: { insecure_skip_verify: true } }", &[]);
    has(&m, "store.tls.insecure_skip_verify", "loopback");
    assert!(!m.iter().any(|m| m.contains("cache.example.com") || m.contains(":pw@")), "the URL is not echoed: {m:#?}");
    assert!(check("{ redis_url: 'rediss://127.0.0.1:6380', tls: { insecure_skip_verify: true } }", &[]).is_empty());
    assert!(check("{ redis_url: 'rediss://[::1]:6380', tls: { insecure_skip_verify: true } }", &[]).is_empty());
    has(
        &check(&format!("{{ redis_url: 'redis://r', tls: {{ ca_file: '{ca_path}' }} }}"), &[]),
        "store.tls",
        "rediss://",
    );
    has(
        &check(&format!("{{ redis_url: 'rediss://r', tls: {{ cert_file: '{ca_path}' }} }}"), &[]),
        "store.tls.key_file",
        "together",
    );
    has(&check("{ redis_url: 'redis://r', password_env: NOPE }", &[]), "store.password_env", "NOPE is not set");
    has(&check("{ username: gw }", &[]), "store.username", "needs store.redis_url");
    let sentinel = "{ sentinel: { master: m, nodes: ['10.0.0.1:26379', '[::1]:26379'] }, username: gw }";
    assert!(check(sentinel, &[]).is_empty(), "{:?}", check(sentinel, &[]));
    let m = check("{ redis_url: 'redis://r', sentinel: { master: '', nodes: [nohost, ':1'] } }", &[]);
    has(&m, "store.sentinel", "not both");
    has(&m, "store.sentinel.master", "empty");
    has(&m, "store.sentinel.nodes.0", "host:port");
    has(&m, "store.sentinel.nodes.1", "host:port");
    has(&check("{ redis_url: 'redis://r', password: x }", &[]), "store.password", "unknown field");

    // A cluster: by URL or by `store.cluster`.
    let url = "{ redis_url: 'redis+cluster://gw:p%40ss@10.0.0.1:6379,redis-2:6380/' }";
    assert!(check(url, &[]).is_empty(), "{:?}", check(url, &[]));
    has(&check("{ redis_url: 'rediss+cluster://r:1' }", &[]), "store.redis_url", "not supported by this build yet");
    has(&check("{ cluster: { nodes: ['r:1'], tls: true } }", &[]), "store.cluster.tls", "not supported");
    let seeds = crate::cluster_url("rediss+cluster://gw:p%40ss@10.0.0.1:6379,redis-2:6380/").unwrap().unwrap();
    assert_eq!(seeds.nodes, ["10.0.0.1:6379", "redis-2:6380"]);
    assert_eq!((seeds.tls, seeds.username.as_deref()), (true, Some("gw")));
    assert_eq!(seeds.password.as_ref().map(|p| p.expose().as_str()), Some("p@ss"));
    has(&check("{ redis_url: 'redis+cluster://secret@r:1,r/0' }", &[]), "store.redis_url", "no database");
    let m = check("{ redis_url: 'redis+cluster://:hunter2@r:1,nohost' }", &[]);
    has(&m, "store.redis_url", "node 2");
    assert!(!format!("{m:?}").contains("hunter2"), "{m:?}");
    has(&check("{ redis_url: 'redis+cluster://r:1', tls: { ca_file: x } }", &[]), "store.tls", "rediss+cluster://");
    let cluster = "{ cluster: { nodes: ['10.0.0.1:6379', 'r:6380'] }, username: gw }";
    assert!(check(cluster, &[]).is_empty(), "{:?}", check(cluster, &[]));
    let m = check("{ redis_url: 'redis://r', cluster: { nodes: [nohost] }, tls: { insecure_skip_verify: true } }", &[]);
    has(&m, "store.cluster", "one of");
    has(&m, "store.cluster.nodes.0", "host:port");
    has(&m, "store.tls", "store.cluster with tls: true");
    has(&check("{ cluster: { nodes: [] } }", &[]), "store.cluster.nodes", "at least one");
    has(
        &check(
            "{ cluster: { nodes: ['127.0.0.1:1', 'redis:2'], tls: true }, tls: { insecure_skip_verify: true } }",
            &[],
        ),
        "store.tls.insecure_skip_verify",
        "loopback",
    );
}

#[test]
fn circuit_breakers_take_partial_overrides_and_refuse_nonsense_with_their_paths() {
    let yaml = r"
auth: { keys: { a: { key: k } } }
providers:
  tuned:
    type: yeastar
    base_url: https://pbx.example.com
    client_id: a
    client_secret: b
    circuit_breaker: { open_for: 5s, half_open_calls: 2 }
  off:
    type: yeastar
    base_url: https://pbx.example.com
    client_id: a
    client_secret: b
    circuit_breaker: { enabled: false }
";
    let config = Config::from_yaml(VENDORS, yaml, &env_of(&[])).expect("loads");
    let tuned = &config.providers["tuned"].common.circuit_breaker;
    assert_eq!((tuned.open_for, tuned.half_open_calls), (std::time::Duration::from_secs(5), 2));
    assert_eq!(tuned.consecutive_failures, 5, "the keys not written keep their defaults");
    assert!(tuned.enabled);
    assert!(!config.providers["off"].common.circuit_breaker.enabled);

    let yaml = r"
auth: { keys: { a: { key: k } } }
providers:
  pbx:
    type: yeastar
    base_url: https://pbx.example.com
    client_id: a
    client_secret: b
    circuit_breaker:
      consecutive_failures: 0
      failure_ratio: 1.5
      min_calls: 0
      window: 0s
      open_for: 2h
      half_open_calls: 0
      open_when: never
";
    let got = messages(&Config::from_yaml(VENDORS, yaml, &env_of(&[])).unwrap_err());
    assert!(got.iter().any(|m| m.starts_with("providers.pbx.circuit_breaker.open_when: unknown field")), "{got:?}");
    let yaml = yaml.replace("      open_when: never\n", "");
    let got = messages(&Config::from_yaml(VENDORS, &yaml, &env_of(&[])).unwrap_err());
    for prefix in [
        "providers.pbx.circuit_breaker.consecutive_failures: must be at least 1",
        "providers.pbx.circuit_breaker.failure_ratio: must be a number above 0 and at most 1",
        "providers.pbx.circuit_breaker.min_calls: must be at least 1",
        "providers.pbx.circuit_breaker.window: must be longer than 0s",
        "providers.pbx.circuit_breaker.open_for: must be longer than 0s and at most 1h",
        "providers.pbx.circuit_breaker.half_open_calls: must be at least 1",
    ] {
        assert!(got.iter().any(|m| m.starts_with(prefix)), "missing `{prefix}` in:\n{}", got.join("\n"));
    }
}

// ---- environment overrides -------------------------------------------------------------

/// Loads `yaml` from a file with the `vars` set in the process environment (figment's
/// `Jail` sets them for the closure and restores them after).
// `Jail`'s own signature: its error is figment's.
#[allow(clippy::result_large_err)]
fn load_with_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        jail.create_file("gateway.yaml", yaml)?;
        for (name, value) in vars {
            jail.set_env(name, value);
        }
        result = Some(Config::load(VENDORS, std::path::Path::new("gateway.yaml")));
        Ok(())
    });
    result.expect("the jail ran")
}

const OVERRIDABLE: &str = r"
auth:
  keys:
    crm: { key: crm-key, providers: [pbx-hq], rate_limit: { per_second: 5, burst: 10 } }
providers:
  pbx-hq:
    type: yeastar
    base_url: https://pbx.example.com:8088
    client_id: id
    client_secret: secret
";

#[test]
fn overrides_apply_and_their_problems_name_the_variable() {
    let config = load_with_env(
        OVERRIDABLE,
        &[
            ("SUMMARY_GATEWAY__STORE__SUMMARY_TTL", "2h"),
            ("SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__TIMEOUT", "7s"),
            ("SUMMARY_GATEWAY__AUTH__KEYS__CRM__RATE_LIMIT__BURST", "7"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.store.summary_ttl, Duration::from_secs(7200));
    assert_eq!(config.providers["pbx-hq"].common.timeout, Duration::from_secs(7));
    assert_eq!(config.auth.keys["crm"].rate_limit.burst, 7);

    let got = messages(
        &load_with_env(
            OVERRIDABLE,
            &[
                ("SUMMARY_GATEWAY__STORE__SUMMARY_TTL", "xyz"),
                ("SUMMARY_GATEWAY__STORE__COLOUR", "blue"),
                ("SUMMARY_GATEWAY__SERVR__LISTEN", "127.0.0.1:1"),
                ("SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__BASE_URL", "ftp://pbx"),
                ("SUMMARY_GATEWAY__AUTH__KEYS__CRM__PROVIDERS", "[pbx-hq, nowhere]"),
                ("SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__RATE_LIMIT__BURST", "3"),
            ],
        )
        .unwrap_err(),
    );
    for expected in [
        "SUMMARY_GATEWAY__STORE__SUMMARY_TTL (store.summary_ttl): invalid value: string \"xyz\", expected a duration",
        "SUMMARY_GATEWAY__STORE__COLOUR (store.colour): unknown field",
        "SUMMARY_GATEWAY__SERVR__LISTEN (servr): unknown field",
        "SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__BASE_URL (providers.pbx-hq.base_url): must be an http",
        "SUMMARY_GATEWAY__AUTH__KEYS__CRM__PROVIDERS (auth.keys.crm.providers[1]): unknown provider `nowhere`",
        // A map only an override gives is missing a key: the override is named.
        "SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__RATE_LIMIT__BURST (providers.pbx-hq.rate_limit.per_second): missing field",
    ] {
        assert!(got.iter().any(|m| m.starts_with(expected)), "missing `{expected}` in:\n{}", got.join("\n"));
    }
    assert_eq!(got.len(), 6, "{got:#?}");

    // A problem in the file stays the file's, even in a map an override also sets.
    let file_problem = OVERRIDABLE.replace("client_id: id", "client_id: id\n    timeout: soon");
    let got = messages(
        &load_with_env(&file_problem, &[("SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__USER_AGENT", "x")]).unwrap_err(),
    );
    assert_eq!(got, ["providers.pbx-hq.timeout: invalid value: string \"soon\", expected a duration"]);
}

#[test]
fn an_override_cannot_add_a_provider_or_a_caller() {
    let err = load_with_env(
        OVERRIDABLE,
        &[
            ("SUMMARY_GATEWAY__PROVIDERS__PBX_HQ__BASE_URL", "https://other"),
            ("SUMMARY_GATEWAY__PROVIDERS__PBX_LOCAL__BASE_URL", "https://local"),
            ("SUMMARY_GATEWAY__PROVIDERS__PBX_LOCAL__TYPE", "yeastar"),
            ("SUMMARY_GATEWAY__AUTH__KEYS__OPS__KEY", "ops-key"),
        ],
    )
    .unwrap_err();
    let got = messages(&err);
    assert_eq!(got.len(), 3, "one problem per entry, none about its missing fields: {got:#?}");
    assert_eq!(
        got[0],
        "SUMMARY_GATEWAY__PROVIDERS__PBX_HQ__BASE_URL (providers.pbx_hq): sets provider `pbx_hq`, which the file \
         does not have: an override can change a provider of the file, not add one; for `pbx-hq`, keep its `-`: \
         SUMMARY_GATEWAY__PROVIDERS__PBX-HQ__BASE_URL (a shell's `export` refuses such a name; `env`, `docker run -e` \
         and a Kubernetes `env:` entry take it)"
    );
    assert!(
        got[1].starts_with(
            "SUMMARY_GATEWAY__PROVIDERS__PBX_LOCAL__BASE_URL, SUMMARY_GATEWAY__PROVIDERS__PBX_LOCAL__TYPE \
             (providers.pbx_local): sets provider `pbx_local`, which the file does not have"
        ) && got[1].ends_with("(the file has: pbx-hq)"),
        "{}",
        got[1]
    );
    assert!(
        got[2].starts_with("SUMMARY_GATEWAY__AUTH__KEYS__OPS__KEY (auth.keys.ops): sets caller `ops`"),
        "{}",
        got[2]
    );

    // A caller written with capitals cannot be reached: say so.
    let capitals = OVERRIDABLE.replace("    crm:", "    CRM:");
    let got = messages(&load_with_env(&capitals, &[("SUMMARY_GATEWAY__AUTH__KEYS__CRM__KEY", "k")]).unwrap_err());
    assert!(got.iter().any(|m| m.contains("`CRM` in the file has capitals")), "{got:#?}");
}

#[test]
fn variables_that_look_like_overrides_but_are_not_read_are_named() {
    let warnings = overrides::warnings([
        "SUMMARY_GATEWAY_SERVER__LISTEN",
        "summary_gateway_store__summary_ttl",
        "SUMMARY_GATEWAY_CONFIG",
        "SUMMARY_GATEWAY__SERVER__LISTEN",
        "SUMMARY_GATEWAY__STORE____SUMMARY_TTL",
        "SUMMARY_GATEWAY__STORE__",
        "SUMMARY_GATEWAYS",
        "PATH",
        "SUMMARY_GATEWAY_ÄÖ",
    ]);
    assert_eq!(
        warnings,
        [
            "SUMMARY_GATEWAY_SERVER__LISTEN is not read: overrides start with SUMMARY_GATEWAY__ (two underscores), \
             e.g. SUMMARY_GATEWAY__SERVER__LISTEN",
            "summary_gateway_store__summary_ttl is not read: overrides start with SUMMARY_GATEWAY__ (two \
             underscores), e.g. SUMMARY_GATEWAY__store__summary_ttl",
            "SUMMARY_GATEWAY__STORE____SUMMARY_TTL is not read: it names an empty key (`__` separates the levels of \
             a key's YAML path: SUMMARY_GATEWAY__STORE__SUMMARY_TTL)",
            "SUMMARY_GATEWAY__STORE__ is not read: it names an empty key (`__` separates the levels of a key's YAML \
             path: SUMMARY_GATEWAY__STORE__SUMMARY_TTL)",
            "SUMMARY_GATEWAY_ÄÖ is not read: overrides start with SUMMARY_GATEWAY__ (two underscores), e.g. \
             SUMMARY_GATEWAY__ÄÖ",
        ]
    );
}

// ---- check-config --print ----------------------------------------------------------------

/// Prints `config`, loads the print back with `env` (and `inline`, the secrets given
/// inline, written again over their `'*****'`), and checks it is the same configuration.
fn assert_round_trip(name: &str, config: &Config, env: &EnvLookup, inline: &[(&str, &str)]) {
    let printed = config.to_yaml().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut reloadable = printed.clone();
    for (field, value) in inline {
        let masked = format!("{field}: '*****'");
        assert!(printed.contains(&masked), "{name}: no `{masked}` in:\n{printed}");
        assert!(!printed.contains(value), "{name}: the secret of {field} printed:\n{printed}");
        reloadable = reloadable.replace(&masked, &format!("{field}: {value}"));
    }
    assert!(!reloadable.contains("*****"), "{name}: a secret left to write again:\n{reloadable}");
    let reloaded = Config::from_yaml(VENDORS, &reloadable, env)
        .unwrap_or_else(|e| panic!("{name}: the print does not load:\n{e}\n{printed}"));
    assert!(reloaded == *config, "{name}: loads back as another configuration:\n{printed}");
    assert_eq!(reloaded.to_yaml().unwrap(), printed, "{name}: prints differently the second time");
}

#[test]
fn the_printed_configuration_loads_back_as_the_same() {
    let env = env_of(&[
        ("CRM_API_KEY", "crm-key"),
        ("CRM_WEBHOOK_SECRET", "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="),
        ("COMMBOX_TOKEN", "commbox-token"),
        ("COMMBOX_CALLBACK_TOKEN", "0123456789abcdef0123456789abcdef"),
        ("PBX_CLIENT_ID", "pbx-id"),
        ("PBX_CLIENT_SECRET", "pbx-secret"),
        ("REPORTING_API_KEY", "reporting-key"),
        ("ANALYTICS_UI_KEY", "analytics-key"),
        ("ELEVATEAI_TOKEN", "elevateai-token"),
    ]);
    for (name, yaml) in [
        ("commbox.yaml", include_str!("../examples/commbox.yaml")),
        ("elevateai.yaml", include_str!("../examples/elevateai.yaml")),
        ("yeastar.yaml", include_str!("../examples/yeastar.yaml")),
        ("http-commbox.yaml", include_str!("../examples/http-commbox.yaml")),
        ("http-elevateai.yaml", include_str!("../examples/http-elevateai.yaml")),
    ] {
        let config = Config::from_yaml(VENDORS, yaml, &env).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert_round_trip(name, &config, &env, &[]);
        let printed = config.to_yaml().unwrap();
        for secret in ["crm-key", "commbox-token", "0123456789abcdef0123456789abcdef", "pbx-id", "pbx-secret"] {
            assert!(!printed.contains(secret), "{name}: {secret} printed:\n{printed}");
        }
    }

    // Every inline secret, non-default values everywhere the types allow.
    let inline = r"
server: { listen: 0.0.0.0:9000, public_url: https://gw.example.com, max_connections: 10 }
store: { redis_url: 'redis://:pw@redis:6379/1', summary_ttl: 90m, question_ttl: 1h 30m }
telemetry: { otlp_endpoint: http://otel:4318, sample_ratio: 0.25 }
auth:
  keys:
    crm:
      key: crm-inline-key
      webhook_secret: whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI=
      rate_limit: { per_second: 0.5, burst: 3 }
      providers: [cb, pbx]
providers:
  cb:
    type: commbox
    base_url: https://api.commbox.io/base/
    token: vendor-inline-token
    callback_token: abcdefghijklmnopqrstuvwxyz
    rate_limit: { per_second: 2.5, burst: 2 }
    mappings: { summary: { text: '$.answer' } }
  pbx:
    type: yeastar
    base_url: https://pbx.example.com:8088
    client_id: pbx-inline-id
    client_secret: pbx-inline-secret
    circuit_breaker: { enabled: false, open_for: 5s }
  ai:
    type: elevateai
    base_url: https://api.elevateai.com
    token: vendor-inline-token
    variant: standard
";
    let config = Config::from_yaml(VENDORS, inline, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert_round_trip(
        "inline secrets",
        &config,
        &|_| None,
        &[
            ("redis_url", "'redis://:pw@redis:6379/1'"),
            ("key", "crm-inline-key"),
            ("webhook_secret", "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="),
            ("callback_token", "abcdefghijklmnopqrstuvwxyz"),
            ("token", "vendor-inline-token"),
            ("client_id", "pbx-inline-id"),
            ("client_secret", "pbx-inline-secret"),
        ],
    );
}

#[test]
fn a_caller_may_have_several_keys_each_with_an_end() {
    let yaml = r#"
auth:
  keys:
    crm:
      keys:
        - { key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8, not_after: "2027-01-31T00:00:00Z" }
        - { key_env: CRM_KEY_2, not_after: "2027-06-01T02:00:00+02:00" }
        - { key: third }
      quota: { requests: 100, per: month, providers: { pbx-hq: { requests: 10, per: day } } }
providers:
  pbx-hq: { type: yeastar, base_url: "https://pbx", client_id: a, client_secret: b }
"#;
    let config = Config::from_yaml(VENDORS, yaml, &env_of(&[("CRM_KEY_2", "second")])).unwrap();
    let crm = &config.auth.keys["crm"];
    let digest = |s: &str| -> [u8; 32] { sha2::Sha256::digest(s.as_bytes()).into() };
    let got: Vec<_> = crm.credentials.iter().map(|c| (c.sha256, c.not_after.map(jiff::Timestamp::as_second))).collect();
    assert_eq!(
        got,
        [
            (digest("password"), Some(1_801_353_600)), // 2027-01-31T00:00:00Z
            (digest("second"), Some(1_811_808_000)),   // 2027-06-01T00:00:00Z
            (digest("third"), None)
        ]
    );
    let quota = crm.quota.as_ref().unwrap();
    assert_eq!((quota.requests, quota.per, quota.count_cache_hits), (100, QuotaPeriod::Month, true));
    assert_eq!(quota.providers["pbx-hq"], ProviderQuota { requests: 10, per: QuotaPeriod::Day });
}

#[test]
fn bad_key_lists_and_quotas_are_reported_with_their_paths() {
    let yaml = r#"
auth:
  keys:
    crm:
      key: one
      keys: [{ key: two }]
    ops:
      keys:
        - { key: three, not_after: "next tuesday" }
        - { key: four, key_env: FOUR }
        - { key: five }
        - { key: five }
        - { not_after: "2027-01-01T00:00:00Z" }
      providers: [pbx-hq]
      quota: { requests: 0, per: day, providers: { nope: { requests: 1, per: day } } }
    empty:
      keys: []
    reused:
      keys: [{ key: five }]
    period:
      key: six
      quota: { requests: 1, per: week }
providers:
  pbx-hq: { type: yeastar, base_url: "https://pbx", client_id: a, client_secret: b }
"#;
    let err = Config::from_yaml(VENDORS, yaml, &env_of(&[])).unwrap_err();
    let got = messages(&err);
    for prefix in [
        "auth.keys.crm: give only one of key_sha256, key_env, key or keys",
        "auth.keys.ops.keys[0].not_after: must be an RFC 3339 instant",
        "auth.keys.ops.keys[1]: give only one of key_sha256, key_env or key",
        "auth.keys.ops.keys[3]: the same key is listed twice",
        "auth.keys.ops.keys[4]: one of key_sha256, key_env or key is required",
        "auth.keys.ops.quota.requests: must be at least 1",
        "auth.keys.ops.quota.providers.nope: unknown provider `nope`",
        "auth.keys.empty.keys: must hold at least one key",
        "auth.keys.reused: same key as auth.keys.ops",
        "auth.keys.period.quota.per: ",
    ] {
        assert!(got.iter().any(|m| m.starts_with(prefix)), "missing `{prefix}` in:\n{}", got.join("\n"));
    }
}

#[test]
fn the_fingerprint_changes_with_any_value_inline_secrets_included_and_never_shows_them() {
    let env = env_of(&[("OPS_KEY", "ops-key"), ("PBX_CLIENT_ID", "id"), ("PBX_CLIENT_SECRET", "s3cret")]);
    let with_secret = |secret: &str| GOOD.replace("      key_env: OPS_KEY\n", &format!("      key: {secret}\n"));
    let a = Config::from_yaml(VENDORS, &with_secret("inline-secret-key-0001"), &env).unwrap();
    let again = Config::from_yaml(VENDORS, &with_secret("inline-secret-key-0001"), &env).unwrap();
    let b = Config::from_yaml(VENDORS, &with_secret("inline-secret-key-0002"), &env).unwrap();
    let c =
        Config::from_yaml(VENDORS, &with_secret("inline-secret-key-0001").replace("timeout: 3s", "timeout: 4s"), &env)
            .unwrap();
    assert_eq!(a.fingerprint().len(), 12);
    assert_eq!(a.fingerprint(), again.fingerprint(), "the same configuration, the same fingerprint");
    assert_ne!(a.fingerprint(), b.fingerprint(), "an inline secret counts");
    assert_ne!(a.fingerprint(), c.fingerprint(), "a timeout counts");
    // Outside the fingerprint, secrets still print masked.
    assert!(!a.to_yaml().unwrap().contains("inline-secret-key-0001"));
    assert!(a.to_yaml().unwrap().contains("*****"));
}
