//! The transport every adapter shares: one pooled keep-alive HTTP client per
//! provider, a cap on calls in flight, an optional outbound rate limit and a
//! deadline per call. Transport failures become [`ProviderError`]s here, with
//! URLs stripped (Yeastar carries its token in the query string).
//!
//! The cap is per replica (`max_concurrency`), unless the vendor's limit is
//! account-wide (ElevateAI): then [`Outbound::with_fleet_slots`] makes each
//! [`Slot`] also hold one of `max_concurrency` slots of a semaphore in the
//! [`SharedState`] that every replica takes from (`elevateai:<provider>:slots`).
//! The local semaphore is taken first, then the fleet's slot; a slot is freed
//! when the [`Slot`] is dropped, or when its ttl passes if its holder died. If
//! the shared store fails, the local semaphore alone decides (with a warning).
//!
//! Answers are read whole before they are mapped, each at most 8 MiB, and all
//! of them together at most an [`AnswerBudget`]: one per process, shared by
//! every provider's `Outbound`. Every byte allocated for an [`Answer`]'s body
//! holds one permit of the budget until the answer is dropped. A
//! `Content-Length` over the per-call limit is refused before a byte is read, a
//! known length takes its whole share up front, and a chunked answer takes its
//! share a segment at a time as it arrives. What does not fit in the budget's rest
//! is refused with [`ProviderError::Overloaded`] and the connection dropped
//! (the vendor stops sending when the gateway stops reading).
//!
//! When the gateway exports spans ([`enable_trace_context`], set once at start),
//! each exchange gets a `vendor_http` client span (method, host, port, status:
//! never the URL, whose query may hold a token) and carries its W3C trace
//! context (`traceparent`, `tracestate`) to the vendor. Otherwise [`Outbound::send`]
//! adds nothing to the request.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gateway_config::{CommonConfig, RateLimit, ServerConfig};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::{ProviderError, VendorDetail};
use crate::shared::{SharedError, SharedState};

/// Vendor answers larger than this are refused rather than buffered.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// `Retry-After` of an answer refused because the budget is spent: answers
/// held now are mapped and dropped within milliseconds.
const BUDGET_RETRY_AFTER: Duration = Duration::from_secs(1);

/// At most one warning this often while answers are refused for the budget.
const BUDGET_WARN_EVERY: Duration = Duration::from_secs(60);

/// A fleet slot outlives the longest exchange by this much before a dead
/// holder's slot is taken back.
const FLEET_SLOT_MARGIN: Duration = Duration::from_secs(2);

/// Pause between tries for a fleet slot, in milliseconds (drawn at random).
const FLEET_RETRY_MS: std::ops::RangeInclusive<u64> = 10..=50;

/// At most one warning this often while the shared store fails.
const FLEET_WARN_EVERY: Duration = Duration::from_secs(60);

/// Shared transport of one provider.
pub struct Outbound {
    client: reqwest::Client,
    timeout: Duration,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The cap shared with the other replicas, if the vendor's is account-wide.
    fleet: Option<Arc<FleetSlots>>,
    /// The bytes of answers all providers may buffer at once.
    budget: AnswerBudget,
}

/// The bytes of vendor answers a process buffers at once, over every provider
/// (`server.vendor_buffer_bytes`): a semaphore with one permit per byte.
/// Clones share the budget.
#[derive(Clone)]
pub struct AnswerBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    bytes: Arc<Semaphore>,
    total: usize,
    /// When a refusal was last logged.
    warned_at: Mutex<Option<Instant>>,
}

/// A slot in the provider's concurrency limit, held for the whole vendor exchange.
pub struct Slot {
    // Fields drop in order: the fleet's slot is given back before the local one.
    _fleet: Option<FleetSlot>,
    _local: OwnedSemaphorePermit,
}

/// A semaphore in the shared store that every replica takes from.
struct FleetSlots {
    store: Arc<dyn SharedState>,
    key: String,
    max: usize,
    /// How long a slot is held at most (a holder that dies frees it then).
    ttl: Duration,
    /// When the store's failure was last logged.
    warned_at: Mutex<Option<Instant>>,
}

/// One slot of [`FleetSlots`], released in the background when dropped.
struct FleetSlot {
    fleet: Arc<FleetSlots>,
    token: String,
}

/// A vendor's HTTP answer, read in full. Its body's bytes are held in the
/// [`AnswerBudget`] until it is dropped.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    _budget: OwnedSemaphorePermit,
}

impl Answer {
    /// An answer holding no budget, for adapters' unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(status: u16, body: Bytes) -> Self {
        let budget = AnswerBudget::new(0);
        let held = budget.try_take(0).unwrap_or_else(|| unreachable!("no bytes asked"));
        Self { status, headers: http::HeaderMap::new(), body, _budget: held }
    }
}

impl AnswerBudget {
    /// A budget of `bytes` (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(bytes: usize) -> Self {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(BudgetInner { bytes: Arc::new(Semaphore::new(total)), total, warned_at: Mutex::new(None) }),
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// The bytes not held by an answer right now.
    pub fn available(&self) -> usize {
        self.inner.bytes.available_permits()
    }

    /// The largest answer one call may buffer: the per-call limit, or half the
    /// budget if that is smaller (joining chunks takes their length twice), so
    /// that an answer refused for the budget fits once the others are done.
    pub fn per_call(&self) -> usize {
        MAX_ANSWER_BYTES.min(self.inner.total / 2)
    }

    /// `bytes` of the budget, or `None` (never waiting) if fewer are left.
    pub fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes).ok()?;
        Arc::clone(&self.inner.bytes).try_acquire_many_owned(permits).ok()
    }

    /// [`Self::try_take`], or 503 `overloaded` (logged at most once a minute).
    fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ProviderError> {
        self.try_take(bytes).ok_or_else(|| {
            let mut warned_at = self.inner.warned_at.lock().unwrap_or_else(PoisonError::into_inner);
            if warned_at.is_none_or(|at| at.elapsed() >= BUDGET_WARN_EVERY) {
                *warned_at = Some(Instant::now());
                tracing::warn!(
                    budget_bytes = self.inner.total,
                    available_bytes = self.available(),
                    wanted_bytes = bytes,
                    "vendor answers refused: server.vendor_buffer_bytes is spent by the answers being read"
                );
            }
            ProviderError::Overloaded { retry_after: BUDGET_RETRY_AFTER }
        })
    }
}

/// A budget of its own, the size of `server.vendor_buffer_bytes`' default: for
/// a provider built alone (tests, `check-config`).
impl Default for AnswerBudget {
    fn default() -> Self {
        Self::new(ServerConfig::DEFAULT_VENDOR_BUFFER_BYTES.get())
    }
}

/// An answer's body as it is read. A known length is copied into one buffer
/// of that size, its budget taken before the first byte. An unknown length is
/// copied into segments of [`SEGMENT_BYTES`], each taking its budget before
/// it is allocated, and joined once at the end. Segments rather than one
/// doubling buffer: in a burst the freed halves of doubling buffers stay with
/// the allocator and cost about as much again as the budget; equal segments
/// are reused. Copied rather than kept as they come: hyper's chunks share its
/// read buffer, and a vendor sending tiny chunks would pin far more than their bytes.
struct Buffer<'a> {
    budget: &'a AnswerBudget,
    /// The per-call limit.
    limit: usize,
    status: u16,
    body: Body,
    len: usize,
    /// The budget of every byte allocated for the body.
    held: OwnedSemaphorePermit,
}

enum Body {
    /// A `Content-Length`: a buffer of that capacity.
    Known(Vec<u8>),
    /// Full segments and the one being filled.
    Segments(Vec<Vec<u8>>),
}

/// The size of the segments an answer of unknown length is read into (or the
/// per-call limit, if smaller).
const SEGMENT_BYTES: usize = 64 * 1024;

impl<'a> Buffer<'a> {
    /// An empty buffer; `length` (a `Content-Length`) is refused over the
    /// per-call limit, else taken from the budget at once.
    fn new(budget: &'a AnswerBudget, status: u16, length: Option<u64>) -> Result<Self, ProviderError> {
        let limit = budget.per_call();
        let known = match length.map(usize::try_from) {
            None => None,
            Some(Ok(n)) if n <= limit => Some(n),
            Some(_) => return Err(too_large(status)),
        };
        let held = budget.take(known.unwrap_or(0))?;
        let body = known.map_or_else(|| Body::Segments(Vec::new()), |n| Body::Known(Vec::with_capacity(n)));
        Ok(Self { budget, limit, status, body, len: 0, held })
    }

    /// Adds a chunk: over the per-call limit it is a 502, past the budget a 503.
    fn push(&mut self, mut chunk: &[u8]) -> Result<(), ProviderError> {
        if self.len + chunk.len() > self.limit {
            return Err(too_large(self.status));
        }
        self.len += chunk.len();
        match &mut self.body {
            // Its whole budget is held already (hyper refuses a body longer
            // than its `Content-Length`).
            Body::Known(bytes) => bytes.extend_from_slice(chunk),
            Body::Segments(segments) => {
                // Within the limit, so never more than one segment of it.
                let size = SEGMENT_BYTES.min(self.limit);
                while !chunk.is_empty() {
                    let room = segments.last().map_or(0, |last| size - last.len());
                    if room == 0 {
                        self.held.merge(self.budget.take(size)?);
                        segments.push(Vec::with_capacity(size));
                        continue;
                    }
                    let (now, rest) = chunk.split_at(chunk.len().min(room));
                    if let Some(last) = segments.last_mut() {
                        last.extend_from_slice(now);
                    }
                    chunk = rest;
                }
            }
        }
        Ok(())
    }

    /// The answer, its body in one piece. Joining several segments needs
    /// their length once more for a moment, taken from the budget too.
    fn into_answer(self, headers: http::HeaderMap) -> Result<Answer, ProviderError> {
        let Self { budget, status, body, len, mut held, .. } = self;
        let body = match body {
            Body::Known(bytes) => Bytes::from(bytes),
            Body::Segments(mut segments) if segments.len() <= 1 => Bytes::from(segments.pop().unwrap_or_default()),
            Body::Segments(segments) => {
                let mut joining = budget.take(len)?;
                let mut joined = Vec::with_capacity(len);
                for segment in segments {
                    joined.extend_from_slice(&segment);
                }
                // The answer holds what it keeps: its joined length.
                std::mem::swap(&mut held, &mut joining);
                Bytes::from(joined)
            }
        };
        Ok(Answer { status, headers, body, _budget: held })
    }
}

fn too_large(status: u16) -> ProviderError {
    ProviderError::bad_answer(status, "a body larger than the gateway accepts")
}

impl Answer {
    /// The vendor's `Retry-After` in seconds, kept within 1 s – 1 h.
    pub fn retry_after(&self) -> Option<Duration> {
        let secs: u64 = self.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(secs.clamp(1, 3600)))
    }
}

impl Outbound {
    /// Builds the pooled client. `user_agent` is sent on every request; answers
    /// are buffered within `budget`, shared with the process's other providers.
    pub fn new(common: &CommonConfig, user_agent: &str, budget: AnswerBudget) -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(common.timeout)
            .connect_timeout(common.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(common.max_concurrency)
            .tcp_nodelay(true)
            // A redirect could carry a query-string token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            timeout: common.timeout,
            slots: Arc::new(Semaphore::new(common.max_concurrency)),
            queue_timeout: common.queue_timeout,
            limiter: common.rate_limit.as_ref().map(limiter),
            fleet: None,
            budget,
        })
    }

    /// Makes every [`Slot`] also take one of `max` slots of the semaphore `key`
    /// in `shared`, which the other replicas take from too: for a vendor whose
    /// concurrency limit is per account rather than per client.
    #[must_use]
    pub fn with_fleet_slots(mut self, shared: Arc<dyn SharedState>, key: String, max: usize) -> Self {
        // Held from the rate limiter's wait to the end of the exchange.
        let ttl = self.queue_timeout + self.timeout + FLEET_SLOT_MARGIN;
        self.fleet = Some(Arc::new(FleetSlots { store: shared, key, max, ttl, warned_at: Mutex::new(None) }));
        self
    }

    /// The client, to build requests with.
    pub const fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The per-call deadline.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Waits (at most `queue_timeout`) for a free slot, here and in the fleet
    /// if it shares one, then (at most `queue_timeout`) for the outbound rate limit.
    pub async fn slot(&self) -> Result<Slot, ProviderError> {
        let deadline = Instant::now() + self.queue_timeout;
        let local = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| overloaded())?
            .map_err(|_| overloaded())?;
        let fleet = match &self.fleet {
            Some(fleet) => fleet.acquire(deadline).await?,
            None => None,
        };
        if let Some(limiter) = &self.limiter {
            tokio::time::timeout(self.queue_timeout, limiter.until_ready()).await.map_err(|_| overloaded())?;
        }
        Ok(Slot { _fleet: fleet, _local: local })
    }

    /// Sends a request and reads the whole answer within the provider's deadline.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        if !trace_context_enabled() {
            return self.exchange(request.send()).await;
        }
        let (client, request) = request.build_split();
        let mut request = request.map_err(|e| self.transport_error(&e))?;
        let span = client_span(&request);
        inject_trace_context(&span, request.headers_mut());
        let answer = self.exchange(client.execute(request)).instrument(span.clone()).await;
        match &answer {
            Ok(answer) => {
                span.record("http.response.status_code", answer.status);
                if answer.status >= 400 {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        answer
    }

    /// Awaits the response and reads its body within the provider's deadline
    /// and the answer budget.
    async fn exchange(
        &self,
        sent: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
    ) -> Result<Answer, ProviderError> {
        let exchange = async {
            let mut response = sent.await.map_err(|e| self.transport_error(&e))?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            // Refused here, the response is dropped unread and its connection closed.
            let mut body = Buffer::new(&self.budget, status, response.content_length())?;
            while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(&e))? {
                body.push(&chunk)?;
            }
            body.into_answer(headers)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ProviderError::Timeout { after: self.timeout })?
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return ProviderError::Timeout { after: self.timeout };
        }
        // Never keep the URL: it may carry a vendor token in its query.
        let what =
            if e.is_connect() { "could not connect to the provider" } else { "the connection to the provider failed" };
        tracing::warn!(cause = %error_chain(e), "{what}");
        ProviderError::Unavailable {
            message: what.to_owned(),
            retry_after: Duration::from_secs(5),
            vendor: VendorDetail::default(),
        }
    }
}

fn overloaded() -> ProviderError {
    ProviderError::Overloaded { retry_after: Duration::from_secs(1) }
}

impl FleetSlots {
    /// One of the fleet's slots, tried again after short random pauses until
    /// `deadline`. `Ok(None)`: the store failed, so the local semaphore alone decides.
    async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Option<FleetSlot>, ProviderError> {
        loop {
            let tried = self.store.try_acquire_slot(&self.key, self.max, self.ttl);
            // A store call cut short here may still take a slot: its ttl frees it.
            match tokio::time::timeout_at(deadline, tried).await.map_err(|_| overloaded())? {
                Ok(Some(token)) => return Ok(Some(FleetSlot { fleet: Arc::clone(self), token })),
                Ok(None) => {}
                Err(e) => {
                    self.warn(&e, "the account's concurrency is capped per replica only");
                    return Ok(None);
                }
            }
            let pause = Duration::from_millis(fastrand::u64(FLEET_RETRY_MS));
            if Instant::now() + pause >= deadline {
                return Err(overloaded());
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Logs the store's failure, at most once per [`FLEET_WARN_EVERY`].
    fn warn(&self, error: &SharedError, consequence: &str) {
        let mut warned_at = self.warned_at.lock().unwrap_or_else(PoisonError::into_inner);
        if warned_at.is_none_or(|at| at.elapsed() >= FLEET_WARN_EVERY) {
            *warned_at = Some(Instant::now());
            tracing::warn!(key = %self.key, error = %error, "shared concurrency slots unavailable; {consequence}");
        }
    }
}

impl Drop for FleetSlot {
    fn drop(&mut self) {
        // Never block in Drop: give the slot back in the background. Without a
        // runtime (or if that fails) the slot's ttl frees it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let fleet = Arc::clone(&self.fleet);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            if let Err(e) = fleet.store.release_slot(&fleet.key, &token).await {
                fleet.warn(&e, "a slot stays taken until its ttl passes");
            }
        });
    }
}

/// Whether spans are exported, so trace context goes to vendors: set once at
/// start by the gateway's telemetry, read (one relaxed load) on every exchange
/// and request.
static TRACE_CONTEXT: AtomicBool = AtomicBool::new(false);

/// Turns on `vendor_http` spans and `traceparent` on every vendor request.
/// Call it once the global OpenTelemetry propagator and layer are installed.
pub fn enable_trace_context() {
    TRACE_CONTEXT.store(true, Ordering::Relaxed);
}

/// Whether [`enable_trace_context`] was called.
pub fn trace_context_enabled() -> bool {
    TRACE_CONTEXT.load(Ordering::Relaxed)
}

/// The client span of one exchange. The host and port only: the path and query
/// may carry identifiers and tokens.
fn client_span(request: &reqwest::Request) -> Span {
    let url = request.url();
    tracing::info_span!(
        "vendor_http",
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Writes `span`'s trace context into `headers` with the global propagator
/// (W3C: `traceparent`, and `tracestate` if the trace has one).
fn inject_trace_context(span: &Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// TLS to vendors uses rustls with *ring* (no C toolchain beyond cc needed);
/// reqwest is built without a default provider, so one is installed once here.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error and its sources on one line, without any URL.
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        source = s.source();
    }
    if out.is_empty() { "transport error".to_owned() } else { out }
}

/// A GCRA limiter for `limit`.
pub fn limiter(limit: &RateLimit) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(limit))
}

/// The governor quota of a configured limit.
pub fn quota(limit: &RateLimit) -> Quota {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn quotas_follow_the_configured_rate_and_burst() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(&RateLimit { per_second: 0.5, burst: 2 }), clock.clone());
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let refused = limiter.check().unwrap_err();
        assert_eq!(refused.wait_time_from(governor::clock::Clock::now(&clock)), Duration::from_secs(2));
        clock.advance(Duration::from_millis(1999));
        assert!(limiter.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check().is_ok(), "one request every 2 s at 0.5/s");
        assert!(limiter.check().is_err());
    }

    const KIB: usize = 1024;

    /// A `Content-Length` of `n` bytes.
    #[allow(clippy::unnecessary_wraps, reason = "what `Buffer::new` takes")]
    fn known(n: usize) -> Option<u64> {
        Some(n as u64)
    }

    /// A chunk of `n` bytes.
    fn chunk(n: usize) -> Vec<u8> {
        vec![b'a'; n]
    }

    fn answer(buffer: Buffer<'_>) -> Result<Answer, ProviderError> {
        buffer.into_answer(http::HeaderMap::new())
    }

    #[test]
    fn answers_hold_their_bytes_of_the_budget_until_dropped() {
        let budget = AnswerBudget::new(1024 * KIB);
        let mut first = Buffer::new(&budget, 200, None).unwrap();
        assert_eq!(budget.available(), 1024 * KIB, "nothing taken before a byte arrives");
        first.push(&chunk(10 * KIB)).unwrap();
        assert_eq!(budget.available(), 960 * KIB, "a segment taken before it is allocated");
        first.push(&chunk(60 * KIB)).unwrap();
        assert_eq!(budget.available(), 896 * KIB, "a second segment");
        let first = answer(first).unwrap();
        assert_eq!(first.body.len(), 70 * KIB);
        assert_eq!(budget.available(), 954 * KIB, "joined, the answer holds its length");

        // A known length takes its share up front; the clone shares the budget.
        let shared = budget.clone();
        let mut second = Buffer::new(&shared, 200, known(300 * KIB)).unwrap();
        assert_eq!(budget.available(), 654 * KIB);
        second.push(&chunk(300 * KIB)).unwrap();
        assert_eq!(budget.available(), 654 * KIB, "no more for the bytes of a known length");
        drop(second);
        assert_eq!(budget.available(), 954 * KIB, "a refused or dropped read gives its share back");
        drop(first);
        assert_eq!(budget.available(), 1024 * KIB, "a dropped answer gives its share back");
    }

    #[test]
    fn what_the_budget_cannot_hold_is_refused_as_overloaded() {
        let budget = AnswerBudget::new(256 * KIB);
        let held = [
            Buffer::new(&budget, 200, known(100 * KIB)).unwrap(),
            Buffer::new(&budget, 200, known(100 * KIB)).unwrap(),
        ];
        assert!(matches!(
            Buffer::new(&budget, 200, known(60 * KIB)),
            Err(ProviderError::Overloaded { retry_after }) if retry_after == BUDGET_RETRY_AFTER
        ));
        let mut chunked = Buffer::new(&budget, 200, None).unwrap();
        assert!(matches!(chunked.push(&chunk(1)), Err(ProviderError::Overloaded { .. })));
        assert_eq!(budget.available(), 56 * KIB, "a refused chunk takes nothing");
        drop((held, chunked));
        assert_eq!(budget.available(), 256 * KIB, "served again once answers are dropped");

        // Joining segments needs their length once more, for a moment.
        let mut chunked = Buffer::new(&budget, 200, None).unwrap();
        chunked.push(&chunk(100 * KIB)).unwrap();
        assert_eq!(budget.available(), 128 * KIB);
        let joined = answer(chunked).unwrap();
        assert_eq!((joined.body.len(), budget.available()), (100 * KIB, 156 * KIB));
        let mut chunked = Buffer::new(&budget, 200, None).unwrap();
        chunked.push(&chunk(100 * KIB)).unwrap();
        assert!(matches!(answer(chunked), Err(ProviderError::Overloaded { .. })), "28 KiB left to join 100");
        assert_eq!(budget.available(), 156 * KIB);
        drop(joined);

        // One segment is not copied: the answer keeps it, and its budget.
        let mut one = Buffer::new(&budget, 200, None).unwrap();
        one.push(&chunk(40 * KIB)).unwrap();
        let one = answer(one).unwrap();
        assert_eq!((one.body.len(), budget.available()), (40 * KIB, 192 * KIB));
    }

    #[test]
    fn answers_over_the_per_call_limit_are_refused_as_bad_answers() {
        let budget = AnswerBudget::default();
        assert_eq!(budget.per_call(), MAX_ANSWER_BYTES);
        assert!(matches!(Buffer::new(&budget, 200, known(MAX_ANSWER_BYTES + 1)), Err(ProviderError::Rejected { .. })));
        assert!(matches!(Buffer::new(&budget, 200, Some(u64::MAX)), Err(ProviderError::Rejected { .. })));
        assert_eq!(budget.available(), budget.total(), "refused before taking anything");
        let mut chunked = Buffer::new(&budget, 200, None).unwrap();
        for _ in 0..8 {
            chunked.push(&chunk(1024 * KIB)).unwrap();
        }
        assert!(matches!(chunked.push(&chunk(1)), Err(ProviderError::Rejected { .. })));
        assert_eq!(budget.available(), budget.total() - MAX_ANSWER_BYTES, "segments fill up to the limit");
        drop(chunked);

        // A budget under twice the per-call limit lowers it: what could never
        // fit is a 502, not a 503; segments are no larger than the limit.
        let small = AnswerBudget::new(16 * KIB);
        assert_eq!(small.per_call(), 8 * KIB);
        assert!(matches!(Buffer::new(&small, 200, known(9 * KIB)), Err(ProviderError::Rejected { .. })));
        let mut chunked = Buffer::new(&small, 200, None).unwrap();
        chunked.push(&chunk(4 * KIB)).unwrap();
        chunked.push(&chunk(4 * KIB)).unwrap();
        assert!(answer(chunked).is_ok(), "the largest answer allowed fits");
    }
}
