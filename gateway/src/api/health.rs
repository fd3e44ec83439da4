//! Liveness and readiness probes, and Prometheus metrics (open, no key).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::App;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness), `ready`, or `degraded`: serving, but the shared store
    /// does not answer (cache bypassed, local rate limits, jobs refused).
    pub status: &'static str,
    /// Readiness only: the store in use (`memory` or `redis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
    /// Why the gateway is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Readiness only: the live configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigState>,
}

/// The live configuration a replica serves with (it changes on reload).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigState {
    /// 1 at start, one more for every reload that changed the configuration.
    pub generation: u64,
    /// 12 hex digits: equal on replicas running the same configuration
    /// (`sg_config_fingerprint` in `/metrics` is the same number).
    pub fingerprint: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", store: None, detail: None, config: None })
}

/// The gateway takes traffic unless it is draining. A shared store that does
/// not answer makes it `degraded`, still 200: every replica shares the one
/// Redis, so a 503 here would take the whole fleet out of the ingress, while
/// synchronous summaries can still be served without it.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, description = "`ready`, or `degraded` while the shared store does not answer", body = Health),
        (status = 503, description = "not_ready: draining", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Result<Json<Health>, ApiError> {
    if app.draining.is_draining() {
        return Err(ApiError::NotReady("the gateway is shutting down".into()));
    }
    let store = &app.stores.health;
    let live = app.live();
    let config = Some(ConfigState { generation: live.generation, fingerprint: live.fingerprint.clone() });
    Ok(Json(match store.ping().await {
        Ok(()) => Health { status: "ready", store: Some(store.kind()), detail: None, config },
        Err(e) => Health { status: "degraded", store: Some(store.kind()), detail: Some(e.to_string()), config },
    }))
}

/// Prometheus metrics of this replica (text exposition format). The names and
/// labels are listed in the `metrics` module and in README's operations section.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"))
)]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let degraded = app.stores.health.degraded().is_some();
    metrics::gauge!(crate::metrics::STORE_DEGRADED).set(if degraded { 1.0 } else { 0.0 });
    #[allow(clippy::cast_precision_loss, reason = "a count of jobs, far below 2^52")]
    metrics::gauge!(crate::metrics::JOBS_POLLING).set(app.jobs.polling() as f64);
    #[allow(clippy::cast_precision_loss, reason = "a count of parked requests, far below 2^52")]
    metrics::gauge!(crate::metrics::LONG_POLLS_WAITING).set(app.summaries.waiters.total() as f64);
    metrics::gauge!(crate::metrics::DRAINING).set(if app.draining.is_draining() { 1.0 } else { 0.0 });
    let body = crate::metrics::handle().render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}
