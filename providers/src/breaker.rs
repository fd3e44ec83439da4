//! The circuit breaker of one provider: while its vendor is down or failing,
//! the gateway stops calling it for a while and answers at once.
//!
//! A small state machine of its own rather than a crate: it runs on tokio's
//! clock (so tests use paused time), opens on consecutive failures *or* a
//! failure ratio over a minimum volume in a sliding window, bounds the trial
//! calls of half-open, hands a trial back when its call is cancelled, logs and
//! publishes each transition once, and tells the other replicas through the
//! [`SharedState`]: the crates that exist cover one or two of these each.
//!
//! - **Closed**: calls go through; each outcome is counted (see [`Verdict`]).
//!   `consecutive_failures` failures in a row, or `failure_ratio` of the calls
//!   of the last `window` once there were `min_calls`, open it.
//! - **Open** for `open_for`: every call is refused with
//!   [`ProviderError::CircuitOpen`] (503 `provider_unavailable`, `Retry-After`
//!   the time left) without touching the vendor.
//! - **Half-open**: up to `half_open_calls` trial calls go through at once, the
//!   rest are refused; a trial that succeeds closes the breaker, one that fails
//!   opens it again, one with no verdict (cancelled, `overloaded`) frees its place.
//!
//! Fleet: with a shared store, opening writes `breaker:<provider>:open` (when it
//! closes again, as Unix milliseconds, kept for `open_for`); a replica whose call
//! fails while it is closed reads it (one read at a time, in the background) and
//! opens too for the time left. So a fleet spends about `consecutive_failures`
//! calls on a dead vendor rather than that many per replica, at the cost of one
//! store read per failed call while closed and one write per opening.
//!
//! Each transition is logged once (warn when it opens, info when it half-opens
//! or closes) and sets `sg_provider_circuit_state{provider}` (0 closed, 1 open,
//! 2 half-open); each refused call counts in `sg_provider_circuit_rejected_total{provider}`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use gateway_config::CircuitBreakerConfig;
use tokio::time::Instant;

use crate::error::ProviderError;
use crate::shared::SharedState;
use crate::time::unix_ms;

/// `sg_provider_circuit_state{provider}`: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_STATE: &str = "sg_provider_circuit_state";
/// `sg_provider_circuit_rejected_total{provider}`: calls refused without a vendor call.
pub const CIRCUIT_REJECTED: &str = "sg_provider_circuit_rejected_total";

/// Buckets of the sliding window (its resolution is `window / BUCKETS`).
const BUCKETS: usize = 10;

/// `Retry-After` of a call refused while the trial calls are under way: they
/// decide within the vendor's timeout, usually much sooner.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The value of [`CIRCUIT_STATE`].
    pub const fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// What one call's outcome says about the vendor's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The vendor answered (whatever the answer meant for the request).
    Success,
    /// The vendor is down or failing.
    Failure,
    /// Says nothing about the vendor.
    Neutral,
}

impl Verdict {
    /// How a call's result counts.
    pub const fn of<T>(result: &Result<T, ProviderError>) -> Self {
        match result {
            Ok(_) => Self::Success,
            Err(e) => match e {
                // Down, refusing us (5xx, throttling, a blocked IP) or not answering in time.
                ProviderError::Unavailable { .. } | ProviderError::Timeout { .. } => Self::Failure,
                // A definite answer from a vendor that is up: no such conversation,
                // not processed yet (they NEVER open it), or refused: a request it
                // rejects (400, 422), the gateway's credentials (401/403, which
                // `/v1/providers` shows as `credentials_rejected`) or an answer it
                // could not parse. Refusing every caller for one caller's bad
                // requests would be wrong, and these come fast, so failing fast
                // gains nothing.
                ProviderError::NotFound { .. } | ProviderError::NotReady { .. } | ProviderError::Rejected { .. } => {
                    Self::Success
                }
                // `overloaded` is the gateway's own queue or rate limit (no vendor
                // call was made) or the vendor's account-wide concurrency refusal
                // after retries: backpressure, which the concurrency cap handles;
                // opening on it would turn a burst into `open_for` of refusing everyone.
                ProviderError::Overloaded { .. } | ProviderError::CircuitOpen { .. } => Self::Neutral,
            },
        }
    }
}

/// The breaker of one provider (`enabled: false`: lets everything through).
pub struct Breaker {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: Arc<str>,
    settings: CircuitBreakerConfig,
    state: Mutex<State>,
    fleet: Option<Fleet>,
}

/// The breaker's mark in the store the replicas share.
struct Fleet {
    store: Arc<dyn SharedState>,
    key: String,
    /// A read of the mark is under way (at most one at a time).
    reading: AtomicBool,
}

struct State {
    phase: Phase,
    /// Failures in a row while closed.
    consecutive: u32,
    window: Window,
    /// Counts transitions: a timer or a fleet read begun before the latest one does nothing.
    epoch: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

impl Phase {
    const fn state(self) -> CircuitState {
        match self {
            Self::Closed => CircuitState::Closed,
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// A change of state, logged once the lock is released.
enum Transition {
    Opened { why: String, open_for: Duration },
    HalfOpened,
    Closed,
}

/// Leave to make one call: [`Permit::finish`] it with the call's outcome.
/// Dropped unfinished (the call was cancelled), it gives back its trial place.
pub struct Permit {
    inner: Option<Arc<Inner>>,
    /// A half-open trial of this epoch (else admitted while closed).
    trial: Option<u64>,
}

impl Breaker {
    /// `shared`: the store the replicas share, if any (see the module docs).
    pub fn new(provider: Arc<str>, settings: &CircuitBreakerConfig, shared: Option<Arc<dyn SharedState>>) -> Self {
        if !settings.enabled {
            return Self { inner: None };
        }
        let fleet = shared.map(|store| Fleet {
            store,
            key: format!("breaker:{provider}:open"),
            reading: AtomicBool::new(false),
        });
        let state = State { phase: Phase::Closed, consecutive: 0, window: Window::new(settings.window), epoch: 0 };
        let inner = Inner { provider, settings: settings.clone(), state: Mutex::new(state), fleet };
        inner.publish(CircuitState::Closed);
        Self { inner: Some(Arc::new(inner)) }
    }

    /// Where it is now (an open breaker whose time is up is half-open).
    pub fn state(&self) -> CircuitState {
        let Some(inner) = &self.inner else { return CircuitState::Closed };
        let (state, transition) = {
            let mut state = inner.lock();
            let transition = inner.half_open_if_due(&mut state, Instant::now());
            (state.phase.state(), transition)
        };
        inner.log(transition);
        state
    }

    /// Runs one vendor call if the breaker lets it, and counts its outcome.
    pub async fn run<T>(&self, call: impl Future<Output = Result<T, ProviderError>>) -> Result<T, ProviderError> {
        let permit = self.admit()?;
        let result = call.await;
        permit.finish(Verdict::of(&result));
        result
    }

    /// Leave to call the vendor now, or [`ProviderError::CircuitOpen`].
    pub fn admit(&self) -> Result<Permit, ProviderError> {
        let Some(inner) = &self.inner else { return Ok(Permit { inner: None, trial: None }) };
        let now = Instant::now();
        let (admitted, transition) = {
            let mut state = inner.lock();
            let transition = inner.half_open_if_due(&mut state, now);
            let admitted = match &mut state.phase {
                Phase::Closed => Ok(None),
                Phase::Open { until } => Err(retry_after(until.saturating_duration_since(now))),
                Phase::HalfOpen { trials } if *trials < inner.settings.half_open_calls => {
                    *trials += 1;
                    Ok(Some(state.epoch))
                }
                Phase::HalfOpen { .. } => Err(HALF_OPEN_RETRY_AFTER),
            };
            (admitted, transition)
        };
        inner.log(transition);
        match admitted {
            Ok(trial) => Ok(Permit { inner: Some(Arc::clone(inner)), trial }),
            Err(retry_after) => {
                metrics::counter!(CIRCUIT_REJECTED, "provider" => metrics::SharedString::from(Arc::clone(&inner.provider)))
                    .increment(1);
                Err(ProviderError::CircuitOpen { retry_after })
            }
        }
    }
}

impl Permit {
    /// Counts the call's outcome.
    pub fn finish(mut self, verdict: Verdict) {
        let Some(inner) = self.inner.take() else { return };
        let now = Instant::now();
        let (transition, opened, read_fleet) = {
            let mut state = inner.lock();
            let epoch_before = state.epoch;
            let mut read_fleet = false;
            let transition = match (self.trial, state.phase) {
                (Some(epoch), Phase::HalfOpen { trials }) if epoch == state.epoch => {
                    state.phase = Phase::HalfOpen { trials: trials.saturating_sub(1) };
                    match verdict {
                        Verdict::Success => Some(inner.close(&mut state)),
                        Verdict::Failure => Some(inner.open(&mut state, now, "the trial call failed".to_owned(), None)),
                        Verdict::Neutral => None,
                    }
                }
                (None, Phase::Closed) if verdict != Verdict::Neutral => {
                    let failed = verdict == Verdict::Failure;
                    state.window.record(now, failed);
                    state.consecutive = if failed { state.consecutive.saturating_add(1) } else { 0 };
                    let tripped = inner.tripped(&state, now);
                    read_fleet = failed && tripped.is_none();
                    tripped.map(|why| inner.open(&mut state, now, why, None))
                }
                // A call admitted before the latest transition: it no longer decides anything.
                _ => None,
            };
            let opened = match state.phase {
                Phase::Open { until } if state.epoch != epoch_before => Some((until, state.epoch)),
                _ => None,
            };
            (transition, opened, read_fleet)
        };
        inner.log(transition);
        if let Some((until, epoch)) = opened {
            Inner::after_opening(&inner, until, epoch, true);
        }
        if read_fleet {
            Inner::read_fleet(&inner);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Unfinished: the call was cancelled. A trial gives its place back.
        let (Some(inner), Some(epoch)) = (self.inner.take(), self.trial) else { return };
        let mut state = inner.lock();
        if let Phase::HalfOpen { trials } = state.phase
            && state.epoch == epoch
        {
            state.phase = Phase::HalfOpen { trials: trials.saturating_sub(1) };
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the counts since the last transition open it, if they do.
    fn tripped(&self, state: &State, now: Instant) -> Option<String> {
        let s = &self.settings;
        if state.consecutive >= s.consecutive_failures {
            return Some(format!("{} calls in a row failed", state.consecutive));
        }
        let (calls, failures) = state.window.totals(now);
        (calls >= s.min_calls && f64::from(failures) >= s.failure_ratio * f64::from(calls)).then(|| {
            format!("{failures} of the last {calls} calls within {} failed", humantime::format_duration(s.window))
        })
    }

    /// Opens for `open_for` (or `for_`, when the fleet says less is left).
    fn open(&self, state: &mut State, now: Instant, why: String, for_: Option<Duration>) -> Transition {
        let open_for = for_.unwrap_or(self.settings.open_for);
        self.enter(state, Phase::Open { until: now + open_for });
        Transition::Opened { why, open_for }
    }

    fn close(&self, state: &mut State) -> Transition {
        self.enter(state, Phase::Closed);
        Transition::Closed
    }

    fn half_open_if_due(&self, state: &mut State, now: Instant) -> Option<Transition> {
        match state.phase {
            Phase::Open { until } if now >= until => {
                self.enter(state, Phase::HalfOpen { trials: 0 });
                Some(Transition::HalfOpened)
            }
            _ => None,
        }
    }

    /// Every transition starts its counts afresh.
    fn enter(&self, state: &mut State, phase: Phase) {
        state.phase = phase;
        state.consecutive = 0;
        state.window = Window::new(self.settings.window);
        state.epoch += 1;
        self.publish(phase.state());
    }

    fn publish(&self, state: CircuitState) {
        metrics::gauge!(CIRCUIT_STATE, "provider" => metrics::SharedString::from(Arc::clone(&self.provider)))
            .set(state.gauge());
    }

    fn log(&self, transition: Option<Transition>) {
        let provider = &*self.provider;
        match transition {
            None => {}
            Some(Transition::Opened { why, open_for }) => tracing::warn!(
                provider,
                reason = %why,
                open_for = %humantime::format_duration(open_for),
                "circuit breaker opened: requests to this provider get 503 without a vendor call until it is tried again"
            ),
            Some(Transition::HalfOpened) => tracing::info!(
                provider,
                trial_calls = self.settings.half_open_calls,
                "circuit breaker half-open: trying the provider again"
            ),
            Some(Transition::Closed) => {
                tracing::info!(provider, "circuit breaker closed: the provider answers again");
            }
        }
    }

    /// Once open (in `epoch`): half-open on time even without traffic (so the
    /// gauge and `/v1/providers` tell the truth), and tell the fleet.
    fn after_opening(this: &Arc<Self>, until: Instant, epoch: u64, tell_fleet: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let weak: Weak<Self> = Arc::downgrade(this);
        runtime.spawn(async move {
            tokio::time::sleep_until(until).await;
            let Some(inner) = weak.upgrade() else { return };
            let transition = {
                let mut state = inner.lock();
                if state.epoch == epoch { inner.half_open_if_due(&mut state, Instant::now()) } else { None }
            };
            inner.log(transition);
        });
        if let Some(fleet) = this.fleet.as_ref().filter(|_| tell_fleet) {
            let store = Arc::clone(&fleet.store);
            let key = fleet.key.clone();
            let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let closes_at = unix_ms(SystemTime::now() + left);
            runtime.spawn(async move {
                if let Err(e) = store.set(&key, &closes_at.to_string(), left).await {
                    tracing::debug!(%key, error = %e, "could not tell the other replicas the circuit opened");
                }
            });
        }
    }

    /// After a failure while closed: is the fleet's breaker open? Then this one opens too.
    fn read_fleet(this: &Arc<Self>) {
        let Some(fleet) = &this.fleet else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if fleet.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(this);
        runtime.spawn(async move {
            let Some(fleet) = &inner.fleet else { return };
            let read = fleet.store.get(&fleet.key).await;
            fleet.reading.store(false, Ordering::Release);
            let closes_at = match read {
                Ok(Some(value)) => value.trim().parse::<u64>().ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(key = %fleet.key, error = %e, "could not read the fleet's circuit breaker");
                    None
                }
            };
            let left = closes_at
                .map(|at| Duration::from_millis(at.saturating_sub(unix_ms(SystemTime::now()))))
                .filter(|left| !left.is_zero())
                .map(|left| left.min(inner.settings.open_for));
            let Some(left) = left else { return };
            let now = Instant::now();
            let (transition, epoch) = {
                let mut state = inner.lock();
                if !matches!(state.phase, Phase::Closed) {
                    return;
                }
                let why = "another replica's breaker is open and a call here failed too".to_owned();
                (inner.open(&mut state, now, why, Some(left)), state.epoch)
            };
            inner.log(Some(transition));
            // The mark is the other replica's: left as it is.
            Inner::after_opening(&inner, now + left, epoch, false);
        });
    }
}

/// Seconds to wait, rounded up, at least 1 s.
fn retry_after(left: Duration) -> Duration {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Calls and failures of the last `window`, in [`BUCKETS`] buckets of `window / BUCKETS`.
struct Window {
    origin: Instant,
    bucket_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which stretch of `window / BUCKETS` since `origin` it counts.
    slot: u64,
    calls: u32,
    failures: u32,
}

impl Window {
    fn new(window: Duration) -> Self {
        let bucket_nanos = (window.as_nanos() / BUCKETS as u128).max(1);
        Self { origin: Instant::now(), bucket_nanos, buckets: [Bucket::default(); BUCKETS] }
    }

    fn slot(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / self.bucket_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let slot = self.slot(now);
        #[allow(clippy::cast_possible_truncation, reason = "a remainder below BUCKETS")]
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket { slot, calls: 0, failures: 0 };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
    }

    /// (calls, failures) of the buckets still inside the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let slot = self.slot(now);
        self.buckets
            .iter()
            .filter(|b| b.slot <= slot && slot - b.slot < BUCKETS as u64)
            .fold((0, 0), |(calls, failures), b| (calls.saturating_add(b.calls), failures.saturating_add(b.failures)))
    }
}

#[cfg(test)]
mod tests;
