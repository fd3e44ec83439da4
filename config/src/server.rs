//! `server:` — where and how the gateway listens.

use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::schema::{Humantime, SocketAddress};

/// The HTTP server: where it listens, how large and how long a request may be,
/// and how it stops.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// IP address and port to listen on: `0.0.0.0:8080` for every interface (in a
    /// container), `127.0.0.1:8080` for this host only.
    #[schemars(with = "SocketAddress")]
    pub listen: SocketAddr,
    /// Public base URL of the gateway as vendors reach it, e.g.
    /// `https://summaries.example.com`. It enables vendor callbacks (CommBox's
    /// `callback_token`); without it the gateway only polls.
    pub public_url: Option<Url>,
    /// Largest request body accepted, in bytes; larger bodies get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Upper bound on the time one request may take, long-polls (`?wait=`, at most
    /// 60 s) included; past it, 504.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub request_timeout: Duration,
    /// After SIGTERM/SIGINT, how long the gateway keeps accepting new requests
    /// while `/readyz` answers 503, so that load balancers (a Kubernetes
    /// Service's endpoints, an ingress) stop sending it traffic before it stops
    /// listening. `0s` outside an orchestrator; `deploy/` sets `5s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub shutdown_delay: Duration,
    /// Then, after it stops accepting, how long in-flight requests and
    /// background work may take to finish before exit.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub drain_timeout: Duration,
    /// A connection must send a complete request head (request line and headers)
    /// within this long of being accepted, or of the first byte of its next
    /// request; otherwise it is closed. Bounds the sockets and memory that clients
    /// holding connections open without sending (or sending a byte at a time) can take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request under way and nothing sent for this
    /// long is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub idle_timeout: Duration,
    /// The request body must arrive in full within this long of its head;
    /// otherwise 408 `request_timeout` (the caller was too slow, not the vendor).
    /// Never longer than `request_timeout` (the smaller of the two applies).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub body_read_timeout: Duration,
    /// At most this many client connections open at once; past it a new
    /// connection gets an immediate 503 `overloaded` and is closed, while the
    /// open ones keep being served (counted in `sg_connections_refused_total`).
    /// Omit: derived from the process's open-file limit (raised to its hard
    /// limit at start), leaving room for vendor, store and webhook connections.
    pub max_connections: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(75),
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            max_connections: None,
        }
    }
}

impl ServerConfig {
    /// The body-read deadline that applies: `body_read_timeout`, never longer than `request_timeout`.
    pub fn effective_body_read_timeout(&self) -> Duration {
        self.body_read_timeout.min(self.request_timeout)
    }
}
