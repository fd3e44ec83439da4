//! The store's own breaker: after a failed command the store counts as down for
//! [`BREAKER`], and commands fail at once instead of each waiting for the timeout.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use providers::time::duration_ms;

use crate::store::StoreError;

/// How long the store counts as down after a failed command.
pub const BREAKER: Duration = Duration::from_secs(1);

/// Whether the store is down, and why it last failed.
pub(super) struct Breaker {
    /// Ms since `epoch` until which the store counts as down (0: up).
    down_until: AtomicU64,
    epoch: Instant,
    last_error: Mutex<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { down_until: AtomicU64::new(0), epoch: Instant::now(), last_error: Mutex::new(String::new()) }
    }
}

impl Breaker {
    fn since_epoch_ms(&self) -> u64 {
        duration_ms(self.epoch.elapsed())
    }

    /// Whether commands fail at once now.
    pub(super) fn is_open(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) > self.since_epoch_ms()
    }

    /// A command failed with `what`: open for [`BREAKER`] (logged once per outage).
    pub(super) fn fail(&self, what: &str) -> StoreError {
        let first = !self.is_open();
        self.down_until.store(self.since_epoch_ms() + duration_ms(BREAKER), Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            what.clone_into(&mut last);
        }
        if first {
            tracing::warn!(error = what, "redis store failing: cache bypassed, local rate limits, jobs refused");
        }
        StoreError(format!("redis: {what}"))
    }

    /// A command succeeded: closed again (logged if it was open or had been).
    pub(super) fn succeeded(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 && self.down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!("redis store answering again");
        }
    }

    /// Closes without a log line (readiness saw the store answer).
    pub(super) fn reset(&self) {
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Why the store is down, while it is.
    pub(super) fn degraded(&self) -> Option<String> {
        self.is_open().then(|| self.last_error.lock().map(|e| format!("redis: {e}")).unwrap_or_default())
    }
}
