//! The edge where errors become RFC 9457 problem+json.
//!
//! An [`ApiError`] response carries its [`Problem`] in the response extensions;
//! here the `request_id` is added and the body written. Any other error response
//! without a problem body (router 404/405, the body limit's 413, the timeout's
//! 504, a caught panic) gets one made from its status. 5xx are logged here, with
//! the internal cause that the body never shows.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{ApiError, PROBLEM_JSON, Problem, RequestError};

/// The request id header (set by tower-http's request-id layers).
pub const X_REQUEST_ID: &str = "x-request-id";

/// What the edge needs to know to describe errors it did not raise itself.
#[derive(Clone, Copy)]
pub struct ProblemContext {
    pub max_body_bytes: usize,
    pub body_read_timeout: std::time::Duration,
}

/// Writes problem+json bodies for every error response.
pub async fn problem_json(State(ctx): State<ProblemContext>, req: Request, next: Next) -> Response {
    let request_id = req.headers().get(X_REQUEST_ID).cloned();
    let response = next.run(req).await;
    if response.status().as_u16() < 400 {
        return response;
    }
    finish(response, request_id.as_ref(), ctx)
}

fn finish(mut response: Response, request_id: Option<&HeaderValue>, ctx: ProblemContext) -> Response {
    let mut problem = if let Some(p) = response.extensions_mut().remove::<Arc<Problem>>() {
        Arc::unwrap_or_clone(p)
    } else {
        if response.headers().get(header::CONTENT_TYPE) == Some(&PROBLEM_JSON) {
            return response;
        }
        from_status(response.status(), ctx)
    };
    if let Some(id) = request_id.and_then(|v| v.to_str().ok()) {
        id.clone_into(&mut problem.request_id);
    }
    if let Some(cause) = &problem.internal_cause {
        // A bug of the gateway's own: the cause is logged, never sent.
        tracing::error!(status = problem.status, code = %problem.code, %cause, "request failed");
    } else if problem.status >= 500 && !problem.expected {
        // A vendor or the store failed: already mapped, worth a warning.
        tracing::warn!(
            status = problem.status,
            code = %problem.code,
            provider = problem.provider.as_deref().unwrap_or(""),
            detail = %problem.detail,
            "request failed"
        );
    } else {
        tracing::debug!(status = problem.status, code = %problem.code, detail = %problem.detail, "request refused");
    }
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, PROBLEM_JSON);
    headers.remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(body);
    response
}

/// A problem for an error response that did not come from an `ApiError`.
fn from_status(status: StatusCode, ctx: ProblemContext) -> Problem {
    let error = match status {
        StatusCode::NOT_FOUND => RequestError::NotFound("no such route; see /openapi.json".into()).into(),
        StatusCode::METHOD_NOT_ALLOWED => RequestError::MethodNotAllowed.into(),
        StatusCode::PAYLOAD_TOO_LARGE => RequestError::PayloadTooLarge { limit: ctx.max_body_bytes }.into(),
        StatusCode::REQUEST_TIMEOUT => RequestError::TooSlow { after: ctx.body_read_timeout }.into(),
        StatusCode::GATEWAY_TIMEOUT => ApiError::RequestTimeout,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => RequestError::UnsupportedMediaType.into(),
        StatusCode::BAD_REQUEST => RequestError::Invalid("the request is malformed".into()).into(),
        s if s.is_server_error() => ApiError::Internal(format!("unexpected {s} from an inner layer")),
        s => {
            return Problem::new(s, "error", s.canonical_reason().unwrap_or("error").to_owned());
        }
    };
    error.to_problem()
}
