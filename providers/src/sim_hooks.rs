//! What every simulator shares: how the registry knows it ([`Simulator`]: its
//! `simulate` flags, how to serve it, its lines of the demo's banner), serving
//! its router in the background ([`Running`]), and test hooks under `/_sim/`
//! (not part of any vendor's API):
//! `POST /_sim/clock {"advance_secs"}` moves the simulator's own clock,
//! `POST /_sim/latency {"millis"}` sets the delay before its vendor answers.

use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A vendor's simulator as its registry entry gives it to `summary-gateway demo`
/// and `summary-gateway simulate <type>`.
pub struct Simulator {
    /// The vendor's name in prose (`CommBox`), for the demo's banner.
    pub vendor: &'static str,
    /// `simulate <type>`'s one line of help (no final period, as clap writes them).
    pub about: &'static str,
    /// `simulate <type> --listen`'s default.
    pub listen: &'static str,
    /// Its other `simulate` flags.
    pub flags: &'static [SimFlag],
    /// Serves on `listener`: with `simulate`'s flag values, or with `None` as the
    /// demo runs it (its defaults, which the demo configuration matches).
    pub serve: fn(TcpListener, Option<&SimFlags>) -> Result<RunningSim, String>,
    /// Its part of the demo's banner: curl commands for the demo's provider of its
    /// `type`, given the gateway's address and the demo's key.
    pub demo_banner: fn(addr: SocketAddr, key: &str) -> String,
}

/// One flag of `simulate <type>`: `--<long> <VALUE_NAME>`.
pub struct SimFlag {
    pub long: &'static str,
    pub value_name: &'static str,
    pub default: &'static str,
    pub help: Option<&'static str>,
    /// Whether a value is one this flag takes (checked when the command line is
    /// read, so a bad one is a usage error).
    pub check: fn(&str) -> Result<(), String>,
}

/// [`SimFlag::check`] for a value that parses as `T`.
pub fn parses_as<T: FromStr<Err: std::fmt::Display>>(value: &str) -> Result<(), String> {
    value.parse::<T>().map(drop).map_err(|e| e.to_string())
}

/// [`SimFlag::check`] for a humantime duration (`2s`).
pub fn is_duration(value: &str) -> Result<(), String> {
    humantime::parse_duration(value).map(drop).map_err(|e| e.to_string())
}

/// The values of a simulator's flags, by long name.
#[derive(Debug, Default)]
pub struct SimFlags(BTreeMap<String, String>);

impl SimFlags {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(values.into_iter().collect())
    }

    /// A flag's value as written.
    pub fn get(&self, long: &str) -> Result<String, String> {
        self.0.get(long).cloned().ok_or_else(|| format!("--{long} is not given"))
    }

    /// A flag's value as a `T`.
    pub fn parse<T: FromStr<Err: std::fmt::Display>>(&self, long: &str) -> Result<T, String> {
        self.get(long)?.parse().map_err(|e| format!("--{long}: {e}"))
    }

    /// A flag's value as a humantime duration.
    pub fn duration(&self, long: &str) -> Result<Duration, String> {
        humantime::parse_duration(&self.get(long)?).map_err(|e| format!("--{long}: {e}"))
    }
}

/// A simulator serving, whatever its vendor; it stops when dropped.
pub struct RunningSim {
    pub addr: SocketAddr,
    _running: Box<dyn Any + Send>,
}

impl RunningSim {
    /// `http://127.0.0.1:port` — the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl<S: SimControls> From<Running<S>> for RunningSim {
    fn from(running: Running<S>) -> Self {
        Self { addr: running.addr, _running: Box::new(running) }
    }
}

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
