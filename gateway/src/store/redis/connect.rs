//! The clients of the store: URL (or a cluster's nodes), ACL user and TLS from
//! `store:`, the connection commands go through, and why a connection failed, in words that name the problem and never the URL (it may
//! hold a password).

use std::path::Path;

use gateway_config::{ClusterSeeds, StoreConfig, StoreTlsConfig};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client for `config.redis_url` with `username`/`password_env` and `tls` applied.
pub(super) fn client(config: &StoreConfig) -> Result<Client, String> {
    let url = config.redis_url.as_ref().ok_or("store.redis_url is not set")?;
    let info =
        url.expose().as_str().into_connection_info().map_err(|e| format!("store.redis_url: {}", e.category()))?;
    finish(with_credentials(info, config), &config.tls)
}

/// The client of `info` with the TLS of `tls` where its address is TLS.
fn finish(mut info: ConnectionInfo, tls: &StoreTlsConfig) -> Result<Client, String> {
    // rustls with *ring*, as for the vendors: installed once for the process.
    providers::outbound::install_crypto_provider();
    let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() else {
        return Client::open(info).map_err(|e| format!("store.redis_url: {}", e.category()));
    };
    if tls.insecure_skip_verify {
        // check-config allows it for loopback hosts only.
        info = info.set_addr(ConnectionAddr::TcpTls { host, port, insecure: true, tls_params: None });
    }
    let Some(certificates) = tls_files(tls)? else {
        // The system's roots.
        return Client::open(info).map_err(|e| format!("store.redis_url: {}", e.category()));
    };
    // The PEM files are parsed here: a bad one is a start-up error that names it.
    Client::build_with_tls(info, certificates)
        .map_err(|e| format!("store.tls: {}", e.detail().unwrap_or_else(|| e.category())))
}

/// The CA and client certificate files of `store.tls`, read; `None` when neither is given.
fn tls_files(tls: &StoreTlsConfig) -> Result<Option<TlsCertificates>, String> {
    let read = |key: &str, file: &Path| {
        std::fs::read(file).map_err(|e| format!("store.tls.{key}: cannot read {}: {e}", file.display()))
    };
    // redis reads a file without a PEM certificate as none at all (every connection
    // would then fail): refuse it here, naming the file.
    let read_certs = |key: &str, file: &Path| {
        let pem = read(key, file)?;
        match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => Ok(pem),
            Ok(_) => Err(format!("store.tls.{key}: no PEM certificate in {}", file.display())),
            Err(e) => Err(format!("store.tls.{key}: {} is not PEM: {e}", file.display())),
        }
    };
    let root_cert = tls.ca_file.as_deref().map(|f| read_certs("ca_file", f)).transpose()?;
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: read("cert_file", cert)?, client_key: read("key_file", key)? })
        }
        _ => None,
    };
    Ok((root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates { client_tls, root_cert }))
}

/// The cluster client of `seeds`, with the store's credentials (over the URL's) and TLS.
pub(super) fn cluster_client(config: &StoreConfig, seeds: &ClusterSeeds) -> Result<ClusterClient, String> {
    providers::outbound::install_crypto_provider();
    let scheme = if seeds.tls { "rediss" } else { "redis" };
    let nodes: Vec<String> = seeds.nodes.iter().map(|node| format!("{scheme}://{node}")).collect();
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        // A command to a slot whose master just died is tried again on the new
        // topology; `store.timeout` bounds the whole.
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(400);
    if let Some(user) = config.username.as_ref().or(seeds.username.as_ref()) {
        builder = builder.username(user);
    }
    if let Some(password) = config.password.as_ref().or(seeds.password.as_ref()) {
        builder = builder.password(password.expose());
    }
    if seeds.tls {
        if config.tls.insecure_skip_verify {
            // check-config allows it for loopback hosts only.
            builder = builder.tls(TlsMode::Insecure);
        } else if let Some(certificates) = tls_files(&config.tls)? {
            builder = builder.certs(certificates);
        }
    }
    builder.build().map_err(|e| format!("store.cluster: {}", e.detail().unwrap_or_else(|| e.category())))
}

/// A client of one node of the cluster (`host:port`), for the event subscription.
pub(super) fn node_client(config: &StoreConfig, seeds: &ClusterSeeds, node: &str) -> Result<Client, String> {
    let scheme = if seeds.tls { "rediss" } else { "redis" };
    let info = format!("{scheme}://{node}")
        .into_connection_info()
        .map_err(|e| format!("store.cluster.nodes: {}", e.category()))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &seeds.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &seeds.password {
        settings = settings.set_password(password.expose());
    }
    finish(with_credentials(info.set_redis_settings(settings), config), &config.tls)
}

/// `info` with `store.username` and the password of `store.password_env`, where given
/// (they win over the URL's).
pub(super) fn with_credentials(info: ConnectionInfo, config: &StoreConfig) -> ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info.set_redis_settings(settings)
}

/// The `reason` label of a failed command.
pub(super) fn reason(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_refusal() {
        "refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "lost"
    } else {
        "other"
    }
}

/// Why a command failed, without the URL.
pub(super) fn describe(e: &redis::RedisError) -> String {
    if let Some(tls) = tls_error(e) {
        return tls;
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return format!(
            "Redis refused the credentials ({}): check store.username and store.password_env or the URL's user and password",
            e.code().unwrap_or("WRONGPASS or NOAUTH")
        );
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".into()
    } else {
        format!("{} ({})", e.category(), e.code().unwrap_or("client"))
    }
}

/// A TLS failure under `e`, said as what to fix.
fn tls_error(e: &redis::RedisError) -> Option<String> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(explain_tls(tls));
        }
        // redis keeps its cause in an `Arc`, whose own `source()` skips the cause
        // itself; an `io::Error` holds rustls' error as its inner error.
        source = if let Some(shared) = err.downcast_ref::<Shared>() {
            Some(&**shared as &(dyn std::error::Error + 'static))
        } else if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner as &(dyn std::error::Error + 'static))
        } else {
            err.source()
        };
    }
    None
}

fn explain_tls(e: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "TLS: the server's certificate is not signed by a trusted CA (give its CA in store.tls.ca_file)".into()
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS: the server's certificate is not valid for the host name in store.redis_url".into(),
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "TLS: the server's certificate has expired".into()
        }
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure,
        ) => "TLS: the server refused the gateway's client certificate (store.tls.cert_file and key_file)".into(),
        other => format!("TLS: {other}"),
    }
}

/// A connection commands go to: one Redis (followed through Sentinel failovers by
/// [`super::primary`]) or a cluster, whose connection sends each command to the
/// master of its key's slot and follows `MOVED`, `ASK` and failovers itself.
/// Cheap to clone: a handle on multiplexed connections.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
