//! `server:` — where and how the gateway listens.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// The HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL of the gateway as vendors reach it; enables vendor callbacks.
    pub public_url: Option<Url>,
    /// Largest request body accepted; larger bodies get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Upper bound on the time one request may take, long-polls included; past it, 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
