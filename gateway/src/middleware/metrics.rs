//! The metrics layer: one count and two timings per request, by route
//! template, method, status and caller (see [`crate::metrics`] for the names).
//!
//! It sits inside the trace span and outside everything that can answer
//! (problem+json, panics, timeouts, body limit, auth, rate limit), so every
//! answer is counted with the status the caller saw. The route is axum's
//! `MatchedPath` (`/v1/summaries/{id}`), never the raw path.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::SharedString;
use tokio::time::Instant;

use crate::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_OVERHEAD, HTTP_REQUESTS, with_request_stats};

/// Requests that matched no route share one label value.
const UNMATCHED: &str = "unmatched";

/// Records `sg_http_*` for every request.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route: SharedString = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str(UNMATCHED), |m| m.as_str().to_owned().into());
    let method = method_label(req.method());
    let in_flight = metrics::gauge!(HTTP_IN_FLIGHT);
    in_flight.increment(1.0);
    let (response, vendor_wait, caller) = with_request_stats(next.run(req)).await;
    in_flight.decrement(1.0);
    let elapsed = started.elapsed();
    let caller: SharedString = caller.map_or(SharedString::const_str("none"), SharedString::from);
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status_label(response.status().as_u16()), "caller" => caller)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route.clone(), "method" => method).record(elapsed.as_secs_f64());
    metrics::histogram!(HTTP_OVERHEAD, "route" => route).record(elapsed.saturating_sub(vendor_wait).as_secs_f64());
    response
}

/// Methods outside the usual set share one label value.
fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a label, without allocating for the codes the API answers with.
fn status_label(status: u16) -> SharedString {
    let s: &'static str = match status {
        200 => "200",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(s)
}
