//! Limits on the request itself, before any handler: the size of its head and
//! the time its body may take.
//!
//! - [`check_head`]: a URI over [`MAX_URI_BYTES`] is 414 `uri_too_long`, headers
//!   over [`MAX_HEADER_BYTES`] in all are 431 `headers_too_large` (problem+json;
//!   heads beyond hyper's own buffer are refused by hyper itself, see
//!   [`crate::server`]).
//! - [`read_body_within`]: the body is read in full within
//!   `server.body_read_timeout` (never longer than `request_timeout`), else 408
//!   `request_timeout` — a client that stalls its body is told so, instead of a
//!   504 that would blame the vendor after the whole request timeout. The body
//!   is bounded by the body-limit layer above, so buffering it here costs no
//!   more than the handlers' own extractors would.

use std::error::Error as _;
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;

use crate::error::{ApiError, RequestError};

/// The longest request target (path and query) accepted, like common proxies' 8 KiB line limit.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes (names, values and their separators) accepted.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses requests whose URI or headers are larger than the gateway accepts.
pub async fn check_head(req: Request, next: Next) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return close(ApiError::from(RequestError::UriTooLong { limit: MAX_URI_BYTES }).into_response());
    }
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers > MAX_HEADER_BYTES {
        return close(ApiError::from(RequestError::HeadersTooLarge { limit: MAX_HEADER_BYTES }).into_response());
    }
    next.run(req).await
}

/// Reads the request body within `timeout` (408 otherwise) and hands it on in full.
pub async fn read_body_within(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, usize::MAX)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) if is_length_limit(&e) => {
            // The body-limit layer's own 413, made a problem by the edge.
            close(axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response())
        }
        Ok(Err(_)) => {
            close(ApiError::from(RequestError::Invalid("the request body could not be read".into())).into_response())
        }
        Err(_) => close(ApiError::from(RequestError::TooSlow { after: timeout }).into_response()),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The connection cannot be reused: part of the request is still unread.
fn close(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
