//! The request span: method, (redacted) URI, request id, and the caller once
//! auth knows it. tower-http's `TraceLayer` logs each response in it.
//!
//! When spans are exported (`telemetry.otlp_endpoint`), it is also an
//! OpenTelemetry server span: `route` (the matched path template), `otel.kind`,
//! `otel.name` = `<METHOD> <route>`, and as parent the caller's W3C
//! `traceparent` (and `tracestate`), if sent; [`OnResponse`] puts the status on
//! it. Otherwise none of that is done.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Request, Response};
use providers::outbound::trace_context_enabled;
use tower_http::trace::{DefaultOnResponse, MakeSpan};
use tracing::field::Empty;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::problem::X_REQUEST_ID;

/// Makes the `request` span. Headers are never recorded (only `traceparent`
/// and `tracestate` are read, for the span's parent).
#[derive(Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let request_id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !trace_context_enabled() {
            // Logs only: as it always was (each further field costs the log layer's
            // formatting on every request).
            return tracing::info_span!(
                "request",
                method = %req.method(),
                uri = %req.uri(),
                request_id,
                caller = Empty,
            );
        }
        // Unmatched paths (404) have no template: no `route`.
        let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let name = match route {
            Some(route) => Cow::Owned(format!("{} {route}", req.method())),
            None => Cow::Borrowed(req.method().as_str()),
        };
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            route = route.map(display),
            uri = %req.uri(),
            request_id,
            caller = Empty,
            otel.kind = "server",
            otel.name = %name,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        );
        if req.headers().contains_key("traceparent") {
            let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&HeaderExtractor(req.headers()))
            });
            // Fails only if the span is disabled or has no OpenTelemetry layer: then it has no parent to set.
            let _ = span.set_parent(parent);
        }
        span
    }
}

/// The `TraceLayer`'s `on_response`: tower-http's log line (info, latency in
/// µs) and, when spans are exported, the status on the request span (5xx
/// marks it failed).
#[derive(Clone, Debug)]
pub struct OnResponse(DefaultOnResponse);

impl Default for OnResponse {
    fn default() -> Self {
        Self(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Micros))
    }
}

impl<B> tower_http::trace::OnResponse<B> for OnResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        if trace_context_enabled() {
            span.record("http.response.status_code", response.status().as_u16());
            if response.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        self.0.on_response(response, latency, span);
    }
}

/// Reads W3C trace-context headers for the propagator.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
