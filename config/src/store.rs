//! `store:` — where completed summaries are kept.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::schema::Humantime;
use crate::{EnvLookup, Secret, resolve_secret};

/// Where summaries, pending jobs, webhook deliveries and question ledgers are kept.
/// Without `redis_url`: in memory, for one replica only (a restart loses them).
/// With it: one Redis shared by every replica.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://[[user]:password@]host:6379/0`, `rediss://...` for TLS (or
    /// `redis+unix://`, `unix://`): a store shared by every replica. Omit for the
    /// embedded in-memory store. As it may hold a password, it is best given by
    /// `SUMMARY_GATEWAY__STORE__REDIS_URL` (or the password by `password_env`).
    pub redis_url: Option<Secret<String>>,
    /// Redis only: the ACL user to authenticate as (Redis 6+), instead of one in
    /// the URL. Omit: the URL's, else the `default` user.
    pub username: Option<String>,
    /// Redis only: the environment variable holding the password (of `username`,
    /// or of the default user), instead of one in the URL.
    pub password_env: Option<String>,
    /// The password read from `password_env` (never serialized).
    #[serde(skip)]
    #[schemars(skip)]
    pub password: Option<Secret<String>>,
    /// Redis only, with a `rediss://` URL: how the server is verified and the
    /// gateway identifies itself.
    pub tls: StoreTlsConfig,
    /// Redis behind Sentinel, instead of `redis_url`: the gateway asks the
    /// sentinels for the primary and follows a failover without a restart.
    /// `username`/`password_env` are the primary's credentials.
    pub sentinel: Option<SentinelConfig>,
    /// How long completed results are served from the store.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub summary_ttl: Duration,
    /// How long failed results are served from the store; the next request after
    /// that calls the vendor again.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub failure_ttl: Duration,
    /// How long the questions asked about a conversation (and their answers) are
    /// kept. A question asked again within it is answered from the store without
    /// spending the vendor's per-interaction allowance.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub question_ttl: Duration,
    /// Redis only: every key starts `<key_prefix>:` and the pub/sub channel is
    /// `<key_prefix>:events`, so several gateways (or tests) can share one Redis.
    pub key_prefix: String,
    /// Redis only: how long a replica holds a pending job's lease without
    /// renewing it. A replica that dies loses its jobs to another after this.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub job_lease: Duration,
    /// Redis only: the longest any store command may take. Past it the store
    /// counts as down for a moment (cache bypassed, local rate limits, jobs
    /// refused with 503) instead of slowing every request.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub timeout: Duration,
    /// Embedded store only: the summaries kept take at most about this many bytes
    /// of memory (least recently used go first; the default is 32 MiB).
    pub max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            username: None,
            password_env: None,
            password: None,
            tls: StoreTlsConfig::default(),
            sentinel: None,
            summary_ttl: Duration::from_secs(12 * 3600),
            failure_ttl: Duration::from_secs(60),
            question_ttl: Duration::from_secs(7 * 24 * 3600),
            key_prefix: "sg".to_owned(),
            job_lease: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `store.tls`: TLS to Redis (`rediss://`). Without `ca_file` the server's
/// certificate is checked against the system's roots (what managed Redis
/// services such as ElastiCache, Memorystore or Azure Cache need).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreTlsConfig {
    /// A PEM file of the CA certificate(s) the server's certificate must chain to,
    /// instead of the system's roots (a private CA, a Kubernetes Secret).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate and host name. Only for a Redis on a loopback
    /// address (a local tunnel); refused for any other host.
    pub insecure_skip_verify: bool,
}

/// `store.sentinel`: where Redis Sentinel says the primary is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <master> ...`).
    pub master: String,
    /// The sentinels, `host:port` each (26379 is Sentinel's usual port). Asked in
    /// turn; one that answers is enough.
    pub nodes: Vec<String>,
    /// The environment variable holding the sentinels' own password
    /// (`requirepass` of the sentinels), if they have one.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The sentinels' password read from `password_env` (never serialized).
    #[serde(skip)]
    #[schemars(skip)]
    pub password: Option<Secret<String>>,
    /// The database number on the primary.
    #[serde(default)]
    pub db: i64,
}

impl StoreTlsConfig {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some() || self.insecure_skip_verify
    }
}

impl StoreConfig {
    /// Whether replicas share a Redis (by `redis_url` or through Sentinel).
    pub fn is_shared(&self) -> bool {
        self.redis_url.is_some() || self.sentinel.is_some()
    }

    /// Reads `password_env` (and the sentinels').
    pub(crate) fn resolve(&mut self, env: &EnvLookup, errors: &mut Vec<ConfigError>) {
        if let Some(sentinel) = &mut self.sentinel {
            sentinel.password =
                resolve_secret("store.sentinel", "password", None, sentinel.password_env.as_deref(), env, errors);
        }
        self.password = resolve_secret("store", "password", None, self.password_env.as_deref(), env, errors);
    }

    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (field, value) in [
            ("summary_ttl", self.summary_ttl),
            ("failure_ttl", self.failure_ttl),
            ("question_ttl", self.question_ttl),
            ("timeout", self.timeout),
        ] {
            if value.is_zero() {
                errors.push(ConfigError::new(format!("store.{field}"), "must be longer than 0s"));
            }
        }
        if self.job_lease < Duration::from_secs(1) {
            errors.push(ConfigError::new("store.job_lease", "must be at least 1s"));
        }
        if self.key_prefix.is_empty()
            || !self.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
        {
            errors.push(ConfigError::new(
                "store.key_prefix",
                "must be 1 or more of a-z, A-Z, 0-9, `-`, `_`, `:` and `.` (no `{}`: hash tags are the gateway's)",
            ));
        }
        if let Some(sentinel) = &self.sentinel {
            sentinel.validate(self, errors);
        }
        match &self.redis_url {
            Some(url) => self.validate_url(url.expose(), errors),
            None if self.sentinel.is_some() => {}
            None => {
                for (set, key) in [
                    (self.username.is_some(), "username"),
                    (self.password_env.is_some(), "password_env"),
                    (self.tls.is_set(), "tls"),
                ] {
                    if set {
                        errors.push(ConfigError::new(format!("store.{key}"), "needs store.redis_url"));
                    }
                }
            }
        }
    }
}

impl StoreConfig {
    /// The URL's scheme, and the TLS keys against it. Errors never quote the URL
    /// (it may hold a password).
    fn validate_url(&self, url: &str, errors: &mut Vec<ConfigError>) {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            errors.push(ConfigError::new(
                "store.redis_url",
                "must be a redis://host:port/db or rediss://host:port/db (TLS) URL, or redis+unix:// or unix://; \
                 redis+cluster:// and Sentinel URLs are not supported by this build",
            ));
            return;
        }
        let tls = self.tls.clone();
        if scheme != Some("rediss") {
            if tls.is_set() {
                errors.push(ConfigError::new("store.tls", "applies to a rediss:// store.redis_url only"));
            }
            return;
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let missing = if tls.cert_file.is_some() { "key_file" } else { "cert_file" };
            errors.push(ConfigError::new(format!("store.tls.{missing}"), "cert_file and key_file go together"));
        }
        // The files themselves are read where the gateway runs: at start-up and by
        // `check-config` (a manifest names paths that exist only in the pod).
        if tls.insecure_skip_verify {
            let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
            let loopback = host.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if !loopback {
                errors.push(ConfigError::new(
                    "store.tls.insecure_skip_verify",
                    "is allowed only for a Redis on a loopback address; give the server's CA in store.tls.ca_file instead",
                ));
            }
        }
    }
}

impl SentinelConfig {
    fn validate(&self, store: &StoreConfig, errors: &mut Vec<ConfigError>) {
        if store.redis_url.is_some() {
            errors.push(ConfigError::new("store.sentinel", "give either store.redis_url or store.sentinel, not both"));
        }
        if store.tls.is_set() {
            errors.push(ConfigError::new("store.tls", "is not supported with store.sentinel by this build"));
        }
        if self.master.is_empty() {
            errors.push(ConfigError::new("store.sentinel.master", "must not be empty"));
        }
        if self.nodes.is_empty() {
            errors.push(ConfigError::new("store.sentinel.nodes", "at least one sentinel is required"));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let port = node.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                errors.push(ConfigError::new(format!("store.sentinel.nodes.{i}"), "must be host:port"));
            }
        }
    }
}
