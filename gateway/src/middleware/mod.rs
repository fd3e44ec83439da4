//! The gateway's own middleware, one layer per file. The order they run in is
//! written down once, in `app.rs`, where the stack is assembled.
//!
//! - [`request_id`]: cheap ids for requests that come without `x-request-id`.
//! - [`redact`]: moves `?access_token=` out of the URI (before tracing).
//! - [`trace`]: the request span.
//! - [`drain`]: `Connection: close` on every answer while draining.
//! - [`metrics`]: `sg_http_*` per request (route template, method, status, caller), overhead vs vendor time.
//! - [`problem`]: writes problem+json for every error response.
//! - [`auth`]: `AuthLayer` — Bearer or `access_token` → [`auth::Caller`] in extensions.
//! - [`rate_limit`]: `RateLimitLayer` — the caller's GCRA limit, 429 + headers.

pub mod auth;
pub mod drain;
pub mod metrics;
pub mod problem;
pub mod rate_limit;
pub mod redact;
pub mod request_id;
pub mod trace;
