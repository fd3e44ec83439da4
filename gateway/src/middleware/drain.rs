//! While draining, every answer carries `Connection: close`: a keep-alive
//! client (an ingress, a pooled HTTP client) then opens its next connection
//! afresh, and the load balancer sends it to a replica that is still ready.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;

/// Adds `Connection: close` to answers once the gateway is draining.
pub async fn close_when_draining(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if app.draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
