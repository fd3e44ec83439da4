//! The request span: method, (redacted) URI, request id, and the caller once
//! auth knows it. tower-http's `TraceLayer` logs each response in it.

use axum::http::Request;
use tower_http::trace::MakeSpan;
use tracing::Span;

use super::problem::X_REQUEST_ID;

/// Makes the `request` span. Headers are never recorded.
#[derive(Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let request_id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
        tracing::info_span!(
            "request",
            method = %req.method(),
            uri = %req.uri(),
            request_id,
            caller = tracing::field::Empty,
        )
    }
}
