//! Liveness and readiness probes (open, no key).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::App;
use crate::error::{ApiError, Problem};

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
    /// Readiness only: the store in use (`memory` or `redis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", store: None })
}

/// The gateway takes traffic: not draining and its store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "not_ready: draining, or the store is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Result<Json<Health>, ApiError> {
    if app.draining.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("the gateway is shutting down".into()));
    }
    let store = app.summaries.store();
    store.ping().await.map_err(|e| ApiError::NotReady(e.to_string()))?;
    Ok(Json(Health { status: "ready", store: Some(store.kind()) }))
}
