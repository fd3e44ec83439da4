//! While draining, every answer carries `Connection: close`: a keep-alive
//! client (an ingress, a pooled HTTP client) then opens its next connection
//! afresh, and the load balancer sends it to a replica that is still ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Whether the gateway is draining: set once on SIGTERM/SIGINT, read by the
/// drain layer and `/readyz`. Cloning shares it.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// From now on, the gateway is draining.
    pub fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Adds `Connection: close` to answers once the gateway is draining.
pub async fn close_when_draining(State(draining): State<Draining>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if draining.is_draining() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
