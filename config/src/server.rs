//! `server:` — where and how the gateway listens.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
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
    /// At most nine tenths of `request_timeout` applies, so the 408 comes before the request's 504.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Humantime")]
    pub body_read_timeout: Duration,
    /// At most this many client connections open at once; past it a new
    /// connection gets an immediate 503 `overloaded` and is closed, while the
    /// open ones keep being served (counted in `sg_connections_refused_total`).
    /// Omit: derived from the process's open-file limit (raised to its hard
    /// limit at start), leaving room for vendor, store and webhook connections.
    pub max_connections: Option<usize>,
    /// Most bytes of vendor answers held in memory at once, over all providers
    /// together. Each answer is read whole before it is mapped (at most 8 MiB,
    /// or half this budget if that is smaller; a larger one gets 502
    /// `provider_error`, a `Content-Length` over it before a byte is read) and
    /// holds its bytes of the budget until it has been mapped; an answer that
    /// does not fit in what is left gets 503 `overloaded` with `Retry-After`.
    /// Size it well under the memory limit: the gateway idles near 20 MiB, and
    /// on top of the budget come up to about half a MiB of read buffer per
    /// vendor connection (`max_concurrency` of every provider) and the parsed
    /// answers. The default, 32 MiB, suits `deploy/`'s 256 Mi limit.
    pub vendor_buffer_bytes: NonZeroUsize,
}

impl ServerConfig {
    /// 32 MiB: see [`Self::vendor_buffer_bytes`].
    pub const DEFAULT_VENDOR_BUFFER_BYTES: NonZeroUsize = match NonZeroUsize::new(32 * 1024 * 1024) {
        Some(bytes) => bytes,
        None => NonZeroUsize::MIN,
    };
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
            vendor_buffer_bytes: Self::DEFAULT_VENDOR_BUFFER_BYTES,
        }
    }
}

impl ServerConfig {
    /// The body-read deadline that applies: `body_read_timeout`, but at most
    /// nine tenths of `request_timeout`, so that a stalled body is the caller's
    /// 408 and never loses the race to the request's 504.
    pub fn effective_body_read_timeout(&self) -> Duration {
        self.body_read_timeout.min(self.request_timeout.mul_f64(0.9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_read_deadline_comes_before_the_request_deadline() {
        let mut server = ServerConfig::default();
        assert_eq!(server.effective_body_read_timeout(), Duration::from_secs(10));
        server.request_timeout = Duration::from_secs(6);
        assert_eq!(server.effective_body_read_timeout(), Duration::from_millis(5400));
    }
}
