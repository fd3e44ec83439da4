//! The client of the store: URL, ACL user and TLS from `store:`, and why a
//! connection failed, in words that name the problem and never the URL (it may
//! hold a password).

use std::path::Path;

use gateway_config::StoreConfig;
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client for `config.redis_url` with `username`/`password_env` and `tls` applied.
pub(super) fn client(config: &StoreConfig) -> Result<Client, String> {
    let url = config.redis_url.as_ref().ok_or("store.redis_url is not set")?;
    // rustls with *ring*, as for the vendors: installed once for the process.
    providers::outbound::install_crypto_provider();
    let info =
        url.expose().as_str().into_connection_info().map_err(|e| format!("store.redis_url: {}", e.category()))?;
    let mut info = with_credentials(info, config);
    let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() else {
        return Client::open(info).map_err(|e| format!("store.redis_url: {}", e.category()));
    };
    let tls = &config.tls;
    if tls.insecure_skip_verify {
        // check-config allows it for loopback hosts only.
        info = info.set_addr(ConnectionAddr::TcpTls { host, port, insecure: true, tls_params: None });
    }
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
    if root_cert.is_none() && client_tls.is_none() {
        // The system's roots.
        return Client::open(info).map_err(|e| format!("store.redis_url: {}", e.category()));
    }
    // The PEM files are parsed here: a bad one is a start-up error that names it.
    Client::build_with_tls(info, TlsCertificates { client_tls, root_cert })
        .map_err(|e| format!("store.tls: {}", e.detail().unwrap_or_else(|| e.category())))
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
