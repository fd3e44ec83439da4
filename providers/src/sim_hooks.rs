//! What every simulator shares: serving its router in the background
//! ([`Running`]), and test hooks under `/_sim/` (not part of any vendor's API):
//! `POST /_sim/clock {"advance_secs"}` moves the simulator's own clock,
//! `POST /_sim/latency {"millis"}` sets the delay before its vendor answers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A simulator serving on a local port; it stops when dropped. Derefs to the
/// simulator, for its hooks (`stats()`, `fail_next()`, ...).
pub struct Running<S: SimControls> {
    pub addr: SocketAddr,
    pub sim: S,
    task: JoinHandle<()>,
}

impl<S: SimControls> Running<S> {
    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(sim: S) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(sim, listener)
    }

    /// Serves the simulator's routes on a bound listener in a background task.
    pub fn serve(sim: S, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (router, name) = (sim.routes(), S::NAME);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, simulator = name, "simulator stopped");
            }
        });
        Ok(Self { addr, sim, task })
    }

    /// `http://127.0.0.1:port` — the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl<S: SimControls> std::ops::Deref for Running<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.sim
    }
}

impl<S: SimControls> Drop for Running<S> {
    fn drop(&mut self) {
        self.task.abort();
        self.sim.stop();
    }
}

/// What a simulator offers the shared hooks.
pub trait SimControls: Clone + Send + Sync + 'static {
    /// The vendor, for log lines.
    const NAME: &'static str;
    /// Its HTTP routes, vendor API and `/_sim/` hooks.
    fn routes(&self) -> Router;
    /// Moves the simulator's clock forward (token and result expiry).
    fn advance(&self, by: Duration);
    /// The vendor's own time before each answer.
    fn set_latency(&self, latency: Duration);
    /// Stops its background work (outgoing callbacks), when it stops serving.
    fn stop(&self) {}
}

#[derive(Deserialize)]
pub struct Advance {
    advance_secs: u64,
}

#[derive(Deserialize)]
pub struct Latency {
    millis: u64,
}

/// `POST /_sim/clock`.
pub async fn advance_clock<S: SimControls>(State(sim): State<S>, Json(a): Json<Advance>) -> StatusCode {
    sim.advance(Duration::from_secs(a.advance_secs));
    StatusCode::NO_CONTENT
}

/// `POST /_sim/latency`.
pub async fn set_latency<S: SimControls>(State(sim): State<S>, Json(l): Json<Latency>) -> StatusCode {
    sim.set_latency(Duration::from_millis(l.millis));
    StatusCode::NO_CONTENT
}
