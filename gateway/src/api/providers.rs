//! `GET /v1/providers`: what this caller can use.

use std::sync::Arc;

use axum::{Extension, Json};
use providers::{Input, Kind, ProviderStatus};
use serde::Serialize;
use utoipa::ToSchema;

use super::CallerProblems;
use crate::live::Live;
use crate::middleware::auth::Caller;

/// The providers a key may use.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub data: Vec<ProviderEntry>,
}

/// One provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderEntry {
    pub name: String,
    /// The provider's `type` as configured: one of the vendor types of this build, or `http` for a vendor declared in YAML.
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Kinds it produces.
    pub kinds: Vec<Kind>,
    /// What `conversation` it takes.
    pub input: Input,
    /// Whether `POST /v1/questions` works with it.
    pub questions: bool,
    /// `available`; `credentials_rejected` when the vendor refuses the gateway's
    /// own credentials (it wins over the breaker); `circuit_open` while the
    /// provider's circuit breaker is open or half-open after the vendor kept
    /// failing (requests get 503 `provider_unavailable` with `Retry-After`,
    /// without a vendor call, until a trial call succeeds).
    pub status: ProviderStatus,
}

/// Configured providers this key may use.
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "providers",
    responses(
        (status = 200, body = ProviderList),
        CallerProblems,
    ),
    security(("bearer" = []), ("access_token" = []))
)]
pub async fn list_providers(
    Extension(live): Extension<Arc<Live>>,
    Extension(caller): Extension<Arc<Caller>>,
) -> Json<ProviderList> {
    let data = live
        .providers
        .values()
        .filter(|p| caller.may_use(p.name()))
        .map(|p| ProviderEntry {
            name: p.name().to_owned(),
            provider_type: p.type_name().to_owned(),
            kinds: p.kinds().to_vec(),
            input: p.input(),
            questions: p.questions(),
            status: p.status(),
        })
        .collect();
    Json(ProviderList { data })
}
