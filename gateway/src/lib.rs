//! summary-gateway: one endpoint and one schema for the conversation-summary
//! APIs of several contact-center and PBX vendors.
//!
//! Layout:
//! - [`state`]: the shared state ([`App`]), built from the configuration, and its lifecycle.
//! - [`live`]: the live configuration (callers, providers) a reload swaps, one snapshot per request.
//! - [`reload`]: what triggers a reload: SIGHUP, and the config file changing on disk.
//! - [`app`]: the router with its middleware stack, assembled and commented in one place.
//! - [`middleware`]: the gateway's own layers (redaction, auth, rate limit, problem+json, span).
//! - [`api`]: handlers and the OpenAPI document generated with them.
//! - [`summaries`]: ids, store-then-vendor with single flight, waiting.
//! - [`resource`]: the summary resource built from a vendor's result, serialized once.
//! - [`questions`]: questions about a conversation, answered once and kept (vendor allowance).
//! - [`quota`]: callers' daily and monthly quotas, counted locally and fleet-wide.
//! - [`server`]: client connections: the cap, header-read and idle deadlines, protocol errors.
//! - [`single_flight`]: one piece of work per key, in the process and across the fleet.
//! - [`jobs`]: the jobs service: asynchronous vendor jobs, polled in the background until they end.
//! - [`waiters`]: long-polls woken by a job's end.
//! - [`webhooks`]: signed deliveries to callers' `callback_url`s from the outbox, and their SSRF checks.
//! - [`store`]: the store cut along its roles (summaries, jobs, outbox, ledgers, health; the
//!   fleet's coordination only when shared): the embedded store and Redis.
//! - [`error`]: typed errors → RFC 9457 problem+json.
//! - [`demo`]: the gateway with in-process vendor simulators.
//! - [`metrics`]: Prometheus metric names, the recorder, the request's vendor-wait clock.
//! - [`telemetry`]: logging and (optional) OTLP trace export.
//!
//! Vendors (adapters, simulators) live in the `providers` crate; configuration in `gateway-config`.

pub mod api;
pub mod app;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod questions;
pub mod quota;
pub mod reload;
pub mod resource;
pub mod server;
pub mod single_flight;
pub mod state;
pub mod store;
pub mod summaries;
pub mod telemetry;
pub mod waiters;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;

pub use crate::app::router;
pub use crate::state::{App, InitError};

/// Serves `app` on `listener` until `shutdown` completes, then drains:
///
/// 1. `/readyz` answers 503 and long-polls answer with the current state at
///    once; requests are still accepted and served for `server.shutdown_delay`
///    (load balancers need that long to stop sending; `Connection: close` on
///    every answer moves keep-alive clients elsewhere meanwhile).
/// 2. The listener closes. With a shared store, pollers release their jobs'
///    leases and the webhook worker claims no more deliveries (other replicas
///    take both over).
/// 3. In-flight requests finish, then webhook attempts under way (and, with the
///    embedded store, the jobs it polls and their webhooks), all within
///    `server.drain_timeout` of step 2; whatever is left then is cut.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(&app);
    let (delay, drain) = (app.config.server.shutdown_delay, app.config.server.drain_timeout);
    // The drain's deadline, once the listener closes.
    let (closed, on_close) = tokio::sync::watch::channel(None::<Instant>);
    let draining = Arc::clone(&app);
    app.start_background();
    let signal = async move {
        shutdown.await;
        draining.begin_drain();
        tracing::info!(
            shutdown_delay = %humantime::format_duration(delay),
            drain_timeout = %humantime::format_duration(drain),
            "shutting down: /readyz answers 503; still serving until the delay passes"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("no longer accepting connections; draining in-flight requests");
        draining.hand_over_background();
        let _ = closed.send(Some(Instant::now() + drain));
    };
    let limits = connection_limits(&app.config);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = %humantime::format_duration(limits.header_read_timeout),
        idle_timeout = %humantime::format_duration(limits.idle_timeout),
        "connection limits"
    );
    let server = server::serve(listener, router, limits, signal);
    let mut timer = on_close.clone();
    let deadline = async move {
        match timer.wait_for(Option::is_some).await.map(|d| *d) {
            Ok(Some(at)) => tokio::time::sleep_until(at).await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => {
            result?;
            let deadline = on_close.borrow().unwrap_or_else(|| Instant::now() + drain);
            tracing::info!("in-flight requests answered; finishing background work");
            app.finish_background(deadline).await;
            tracing::info!("stopped");
            Ok(())
        }
        () = deadline => {
            tracing::warn!("drain timeout passed with requests still in flight; exiting");
            app.stop_background();
            Ok(())
        }
    }
}

/// The connection cap and deadlines of `config`: the open-file limit (raised
/// to its hard limit) less what the gateway's own connections may take — every
/// provider's `max_concurrency` and the webhook worker's.
fn connection_limits(config: &gateway_config::Config) -> server::Limits {
    let outbound =
        config.providers.values().map(|p| p.common.max_concurrency).sum::<usize>() + config.webhooks.max_concurrency;
    server::Limits::new(&config.server, server::raise_fd_limit(), outbound)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
