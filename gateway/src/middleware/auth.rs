//! Authentication: `Authorization: Bearer <key>` or `?access_token=<key>`.
//!
//! Keys are known only by their SHA-256. The presented key is hashed once and
//! compared with every configured hash in constant time ([`subtle`]), so timing
//! tells nothing about which bytes matched. A caller may have several keys (for
//! rotation); one past its `not_after` is refused as expired. On success the caller ([`Caller`])
//! goes into the request's extensions for the rate limiter and the handlers, and
//! its name into the request span. Failures are 401 with `WWW-Authenticate`.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use gateway_config::{AuthConfig, Credential, Quota, RateLimit, Secret};
use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::redact::QueryCredential;
use crate::error::{ApiError, AuthError};

/// A per-key GCRA limiter that reports remaining capacity.
pub type KeyLimiter = RateLimiter<NotKeyed, InMemoryState, LimiterClock, StateInformationMiddleware>;

/// The clock of the per-key limiters: the system's; in unit tests governor's
/// `FakeRelativeClock`, which moves only when the test moves it, so that rate
/// limit timing is tested without sleeping ([`Keys::with_fake_clock`]).
#[derive(Clone, Debug)]
pub enum LimiterClock {
    System {
        clock: DefaultClock,
        origin: <DefaultClock as Clock>::Instant,
    },
    #[cfg(test)]
    Fake(governor::clock::FakeRelativeClock),
}

impl LimiterClock {
    fn system() -> Self {
        let clock = DefaultClock::default();
        let origin = clock.now();
        Self::System { clock, origin }
    }
}

impl Clock for LimiterClock {
    /// Time since the clock was made: one instant type for both clocks (the
    /// limiter only ever subtracts instants).
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::System { clock, origin } => clock.now().duration_since(*origin),
            #[cfg(test)]
            Self::Fake(clock) => clock.now(),
        }
    }
}

/// An authenticated caller (one API key).
pub struct Caller {
    /// The caller's configured name: in logs and metrics, never the key.
    pub name: Arc<str>,
    /// The caller's keys (one, or several for rotation), by their hashes.
    credentials: Vec<Credential>,
    /// Providers the key may use; `None`: all.
    providers: Option<HashSet<String>>,
    /// The key's own limiter: one per configured key, so its memory is bounded by
    /// the configuration and there is nothing to prune. Shared with the next
    /// generation of the keys when a reload leaves the caller's rate unchanged.
    pub limiter: Arc<KeyLimiter>,
    pub rate_limit: RateLimit,
    /// The caller's quota, if it has one ([`crate::quota`]).
    pub quota: Option<Quota>,
    /// Secret for signing webhooks to this caller.
    pub webhook_secret: Option<Secret<String>>,
}

impl Caller {
    /// Whether this key may use `provider`.
    pub fn may_use(&self, provider: &str) -> bool {
        self.providers.as_ref().is_none_or(|p| p.contains(provider))
    }
}

/// All configured keys.
pub struct Keys {
    callers: Vec<Arc<Caller>>,
}

impl Keys {
    /// The keys' hashes, for redacting a key sent under another name.
    pub fn known_keys(&self) -> super::redact::KnownKeys {
        super::redact::KnownKeys::new(self.hashes())
    }

    /// The SHA-256 of every key of every caller.
    pub fn hashes(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.callers.iter().flat_map(|c| c.credentials.iter().map(|k| k.sha256))
    }

    pub fn from_config(auth: &AuthConfig) -> Self {
        Self::with_clock(auth, LimiterClock::system)
    }

    /// The keys of a reloaded `auth`, every caller whose rate limit is unchanged
    /// keeping its limiter from `running` (a reload does not refill a burst).
    pub fn from_config_keeping(auth: &AuthConfig, running: &Self) -> Self {
        let mut keys = Self::from_config(auth);
        for caller in &mut keys.callers {
            if let Some(old) =
                running.callers.iter().find(|old| old.name == caller.name && old.rate_limit == caller.rate_limit)
                && let Some(caller) = Arc::get_mut(caller)
            {
                caller.limiter = Arc::clone(&old.limiter);
            }
        }
        keys
    }

    /// The keys with every limiter on `clock` (clones of a fake clock share its time).
    #[cfg(test)]
    pub fn with_fake_clock(auth: &AuthConfig, clock: &governor::clock::FakeRelativeClock) -> Self {
        Self::with_clock(auth, || LimiterClock::Fake(clock.clone()))
    }

    fn with_clock(auth: &AuthConfig, clock: impl Fn() -> LimiterClock) -> Self {
        let callers = auth
            .keys
            .iter()
            .map(|(name, key)| {
                Arc::new(Caller {
                    name: Arc::from(name.as_str()),
                    credentials: key.credentials.clone(),
                    providers: key.providers.as_ref().map(|p| p.iter().cloned().collect()),
                    limiter: Arc::new(
                        RateLimiter::direct_with_clock(providers::outbound::quota(&key.rate_limit), clock())
                            .with_middleware::<StateInformationMiddleware>(),
                    ),
                    rate_limit: key.rate_limit,
                    quota: key.quota.clone(),
                    webhook_secret: key.resolved_webhook_secret.clone(),
                })
            })
            .collect();
        Self { callers }
    }

    /// The caller named `name`.
    #[cfg(test)]
    pub fn by_name(&self, name: &str) -> Option<Arc<Caller>> {
        self.callers.iter().find(|c| &*c.name == name).cloned()
    }

    /// The caller whose key this is and the key's index among the caller's,
    /// comparing against every key in constant time; an expired key is an error.
    fn find(&self, presented: &[u8]) -> Result<(Arc<Caller>, usize), AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for caller in &self.callers {
            for (index, credential) in caller.credentials.iter().enumerate() {
                if bool::from(credential.sha256.ct_eq(&digest)) {
                    found = Some((caller, index, credential.not_after));
                }
            }
        }
        let (caller, index, not_after) = found.ok_or(AuthError::Unknown)?;
        if not_after.is_some_and(|end| jiff::Timestamp::now() >= end) {
            tracing::info!(caller = &*caller.name, key = index, "expired key refused");
            return Err(AuthError::Expired);
        }
        Ok((Arc::clone(caller), index))
    }

    /// Authenticates a request: the caller and the index of the key it used.
    pub fn authenticate(&self, req: &Request) -> Result<(Arc<Caller>, usize), AuthError> {
        let header = req.headers().get(header::AUTHORIZATION).map(|v| {
            let v = v.as_bytes();
            // "Bearer" is case-insensitive (RFC 6750 / RFC 9110 auth-scheme).
            if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") { Some(trim(&v[7..])) } else { None }
        });
        let presented: &[u8] = match header {
            Some(Some(key)) => key,
            Some(None) => return Err(AuthError::Unknown),
            None => match req.extensions().get::<QueryCredential>() {
                Some(QueryCredential(key)) => key.expose().as_bytes(),
                None => return Err(AuthError::Missing),
            },
        };
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        self.find(presented)
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Layer: authenticate every request or answer 401.
///
/// Against the keys of the request's configuration snapshot (an `Arc<Keys>` in
/// its extensions, put there by the router's snapshot layer, so a reload takes
/// effect for the next request); without one, against the keys it was made with.
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<Keys>,
}

impl AuthLayer {
    pub const fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, keys: Arc::clone(&self.keys) }
    }
}

/// Service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    keys: Arc<Keys>,
}

impl<S> Service<Request> for AuthService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let keys = req.extensions().get::<Arc<Keys>>().unwrap_or(&self.keys);
        match keys.authenticate(&req) {
            Ok((caller, key)) => {
                tracing::Span::current().record("caller", &*caller.name);
                crate::metrics::set_caller(&caller.name);
                crate::metrics::key_used(&caller.name, key);
                req.extensions_mut().insert(caller);
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Ok(ApiError::from(e).into_response()))),
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
