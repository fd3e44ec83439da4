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
    /// `redis+unix://`, `unix://`; a Redis Cluster is
    /// `redis+cluster://host:port,host:port`): a store shared by every replica. Omit for the
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
    /// A Redis Cluster, instead of `redis_url` (or give `redis_url` as
    /// `redis+cluster://host:port,host:port`): the gateway learns the other nodes
    /// from these, sends each key to the master of its slot and follows `MOVED`,
    /// `ASK` and a master's failover. `username`/`password_env` and `tls` apply
    /// to every node.
    pub cluster: Option<ClusterConfig>,
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
            cluster: None,
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

/// `store.cluster`: where some nodes of a Redis Cluster are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Some of the cluster's nodes (masters or replicas), `host:port` each. One
    /// that answers is enough; give several so that start-up does not depend on
    /// one node.
    pub nodes: Vec<String>,
    /// TLS to every node, verified as `store.tls` says. Refused by this build
    /// for now (not yet proven by a test): only `false`.
    #[serde(default)]
    pub tls: bool,
}

/// The nodes of a cluster, from `store.cluster` or a `redis+cluster://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSeeds {
    /// `host:port` each.
    pub nodes: Vec<String>,
    pub tls: bool,
    /// The URL's user and password, if it has them.
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
}

/// `redis+cluster://[user[:password]@]host:port,host:port[/]` (or `rediss+cluster://`
/// for TLS) as its nodes; `None` for any other scheme. Errors never quote the URL.
pub fn cluster_url(url: &str) -> Option<Result<ClusterSeeds, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "redis+cluster" => false,
        "rediss+cluster" => true,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => {
            ((!user.is_empty()).then(|| decode(user)), (!password.is_empty()).then(|| Secret::new(decode(password))))
        }
        None => (None, None),
    };
    let nodes: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    if hosts.contains('/') || hosts.contains('?') {
        return Some(Err("a cluster URL has no database or options: a cluster has database 0 only".to_owned()));
    }
    if let Some(bad) = nodes.iter().position(|n| !is_host_port(n)) {
        return Some(Err(format!("node {} of the cluster URL must be host:port", bad + 1)));
    }
    Some(Ok(ClusterSeeds { nodes, tls, username, password }))
}

/// Why TLS to a Redis Cluster is refused for now.
const TLS_CLUSTER_NOT_YET: &str = "TLS to a Redis Cluster is not supported by this build yet (it is not proven by a test); \
     use a plain redis+cluster:// inside the cluster's network, or one TLS Redis or Sentinel";

/// The host of `host:port`.
fn host_of(node: &str) -> Option<String> {
    node.rsplit_once(':').map(|(host, _)| host.to_owned())
}

/// `host:port`, the host not empty.
fn is_host_port(node: &str) -> bool {
    node.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl StoreTlsConfig {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some() || self.insecure_skip_verify
    }
}

impl StoreConfig {
    /// Whether replicas share a Redis (by `redis_url`, through Sentinel or a cluster).
    pub fn is_shared(&self) -> bool {
        self.redis_url.is_some() || self.sentinel.is_some() || self.cluster.is_some()
    }

    /// The cluster's nodes, when the store is a Redis Cluster (`store.cluster` or a
    /// `redis+cluster://` URL); `None` for one Redis (or an unusable URL, which
    /// validation reports).
    pub fn cluster_seeds(&self) -> Option<ClusterSeeds> {
        if let Some(cluster) = &self.cluster {
            return Some(ClusterSeeds {
                nodes: cluster.nodes.clone(),
                tls: cluster.tls,
                username: None,
                password: None,
            });
        }
        cluster_url(self.redis_url.as_ref()?.expose()).and_then(Result::ok)
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
        if let Some(cluster) = &self.cluster {
            cluster.validate(self, errors);
        }
        match &self.redis_url {
            Some(url) => self.validate_url(url.expose(), errors),
            None if self.sentinel.is_some() || self.cluster.is_some() => {}
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
        let cluster = cluster_url(url);
        if let Some(Err(e)) = &cluster {
            errors.push(ConfigError::new("store.redis_url", e.clone()));
            return;
        }
        if cluster.is_none() && !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            errors.push(ConfigError::new(
                "store.redis_url",
                "must be a redis://host:port/db or rediss://host:port/db (TLS) URL, redis+unix:// or unix://, \
                 or redis+cluster://host:port,host:port (rediss+cluster:// for TLS); for Sentinel use store.sentinel",
            ));
            return;
        }
        if scheme == Some("rediss+cluster") {
            errors.push(ConfigError::new("store.redis_url", TLS_CLUSTER_NOT_YET));
        }
        let tls_on = matches!(scheme, Some("rediss" | "rediss+cluster"));
        let hosts = match cluster {
            Some(Ok(seeds)) => seeds.nodes.iter().map(|n| host_of(n)).collect(),
            _ => vec![url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned))],
        };
        self.validate_tls(tls_on, "a rediss:// or rediss+cluster:// store.redis_url", &hosts, errors);
    }

    /// The `store.tls` keys against whether TLS is on (`tls_on`, as `what` says)
    /// and the `hosts` of the nodes (`None`: unreadable).
    fn validate_tls(&self, tls_on: bool, what: &str, hosts: &[Option<String>], errors: &mut Vec<ConfigError>) {
        let tls = self.tls.clone();
        if !tls_on {
            if tls.is_set() {
                errors.push(ConfigError::new("store.tls", format!("applies to {what} only")));
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
            let loopback = |host: &Option<String>| {
                host.as_deref().is_some_and(|h| {
                    h.eq_ignore_ascii_case("localhost")
                        || h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                })
            };
            if !hosts.iter().all(loopback) {
                errors.push(ConfigError::new(
                    "store.tls.insecure_skip_verify",
                    "is allowed only for a Redis on a loopback address; give the server's CA in store.tls.ca_file instead",
                ));
            }
        }
    }
}

impl ClusterConfig {
    fn validate(&self, store: &StoreConfig, errors: &mut Vec<ConfigError>) {
        if store.redis_url.is_some() || store.sentinel.is_some() {
            errors.push(ConfigError::new(
                "store.cluster",
                "give one of store.redis_url, store.sentinel and store.cluster (a cluster URL is redis+cluster://)",
            ));
        }
        if self.nodes.is_empty() {
            errors.push(ConfigError::new("store.cluster.nodes", "at least one node is required"));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !is_host_port(node) {
                errors.push(ConfigError::new(format!("store.cluster.nodes.{i}"), "must be host:port"));
            }
        }
        if self.tls {
            errors.push(ConfigError::new("store.cluster.tls", TLS_CLUSTER_NOT_YET));
        }
        let hosts: Vec<Option<String>> = self.nodes.iter().map(|n| host_of(n)).collect();
        store.validate_tls(self.tls, "store.cluster with tls: true", &hosts, errors);
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
            if !is_host_port(node) {
                errors.push(ConfigError::new(format!("store.sentinel.nodes.{i}"), "must be host:port"));
            }
        }
    }
}
