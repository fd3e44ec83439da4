//! The gateway's own middleware, one layer per file. The order they run in is
//! written down once, in `app.rs`, where the stack is assembled.
//!
//! - [`request_id`]: the caller's `x-request-id` if safe to echo, else a cheap new one.
//! - [`redact`]: moves `?access_token=` out of the URI (before tracing), redacts its other spellings.
//! - [`limits`]: head size (414/431) and body-read deadline (408).
//! - [`trace`]: the request span.
//! - [`drain`]: `Connection: close` on every answer while draining.
//! - [`metrics`]: `sg_http_*` per request (route template, method, status, caller), overhead vs vendor time.
//! - [`problem`]: writes problem+json for every error response.
//! - [`auth`]: `AuthLayer` — Bearer or `access_token` → [`auth::Caller`] in extensions.
//! - [`rate_limit`]: `RateLimitLayer` — the caller's GCRA limit, 429 + headers.

pub mod auth;
pub mod drain;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod rate_limit;
pub mod redact;
pub mod request_id;
pub mod trace;
