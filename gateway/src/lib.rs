//! summary-gateway: one endpoint and one schema for the conversation-summary
//! APIs of several contact-center and PBX vendors.
//!
//! Layout:
//! - [`app`]: shared state ([`App`]) and the router with its middleware stack,
//!   assembled and commented in one place.
//! - [`middleware`]: the gateway's own layers (redaction, auth, rate limit, problem+json, span).
//! - [`api`]: handlers and the OpenAPI document generated with them.
//! - [`summaries`]: ids, store-then-vendor with single flight, resource assembly, waiting.
//! - [`questions`]: questions about a conversation, answered once and kept (vendor allowance).
//! - [`single_flight`]: one piece of work per key in this process, joined by identical requests.
//! - [`jobs`]: polling asynchronous vendor jobs in the background until they end.
//! - [`waiters`]: long-polls woken by a job's end.
//! - [`webhooks`]: signed deliveries to callers' `callback_url`s from the outbox.
//! - [`store`]: the `Store` trait and the embedded in-memory store.
//! - [`error`]: typed errors → RFC 9457 problem+json.
//! - [`callback`]: SSRF checks of callers' callback URLs.
//! - [`demo`]: the gateway with in-process vendor simulators.
//! - [`telemetry`]: logging setup.
//!
//! Vendors (adapters, simulators) live in the `providers` crate; configuration in `gateway-config`.

pub mod api;
pub mod app;
pub mod callback;
pub mod demo;
pub mod error;
pub mod jobs;
pub mod middleware;
pub mod questions;
pub mod single_flight;
pub mod store;
pub mod summaries;
pub mod telemetry;
pub mod waiters;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use crate::app::{App, InitError, router};

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting,
/// lets in-flight requests finish (at most `server.drain_timeout`) and returns.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(&app);
    let drain = app.config.server.drain_timeout;
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let draining = Arc::clone(&app);
    app.start_background();
    let signal = async move {
        shutdown.await;
        draining.draining.store(true, Ordering::Relaxed);
        // Long-polls answer with the current state now, so draining does not wait a minute for them.
        draining.stop_background();
        tracing::info!(drain_timeout = %humantime::format_duration(drain), "shutting down: draining in-flight requests");
        let _ = signalled.send(true);
    };
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = on_signal.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => {
            tracing::info!("stopped");
            result
        }
        () = deadline => {
            tracing::warn!("drain timeout passed with requests still in flight; exiting");
            Ok(())
        }
    }
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
