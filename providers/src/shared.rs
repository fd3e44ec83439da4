//! State a provider shares with the other replicas of the gateway, so that a
//! fleet behaves as one client of its vendor: one Yeastar login for every
//! replica, one ElevateAI account-wide concurrency cap.
//!
//! The gateway implements [`SharedState`] on its Redis store; without one (the
//! embedded store) each process keeps its own state, which is right for one replica.
//! Keys given here are short names (`yeastar:<provider>:token`); the
//! implementation namespaces them. [`MemorySharedState`] is an in-process
//! implementation, for tests that run several "replicas" in one process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// The shared store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct SharedError(pub String);

/// Coordination between replicas (a Redis store).
#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<String>, SharedError>;

    /// Sets `key` to `value`, kept for `ttl`.
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SharedError>;

    /// Takes the lock `key` for at most `ttl` unless someone holds it. `Some(token)`:
    /// taken (release it with [`Self::unlock`]); `None`: held by someone else.
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<String>, SharedError>;

    /// Releases a lock taken with [`Self::try_lock`] (nothing if it expired and
    /// someone else holds it now).
    async fn unlock(&self, key: &str, token: &str) -> Result<(), SharedError>;

    /// Takes one of `max` slots of the semaphore `key` for at most `ttl` (a
    /// holder that dies frees its slot when `ttl` passes). `Some(token)`: taken;
    /// `None`: all `max` are held.
    async fn try_acquire_slot(&self, key: &str, max: usize, ttl: Duration) -> Result<Option<String>, SharedError>;

    /// Frees a slot taken with [`Self::try_acquire_slot`].
    async fn release_slot(&self, key: &str, token: &str) -> Result<(), SharedError>;
}

/// A [`SharedState`] in this process's memory: for tests (several "replicas"
/// built on one instance) and for anyone needing the trait without a Redis.
/// It shares nothing with other processes.
#[derive(Default)]
pub struct MemorySharedState {
    entries: Mutex<Entries>,
    calls: AtomicU64,
}

#[derive(Default)]
struct Entries {
    /// key → (value, expiry); locks are values too (their token).
    values: HashMap<String, (String, Instant)>,
    /// key → holder token → expiry.
    slots: HashMap<String, HashMap<String, Instant>>,
}

impl MemorySharedState {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls it has answered (tests check a hot path makes none).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entries {
    fn live_value(&mut self, key: &str) -> Option<&String> {
        let now = Instant::now();
        self.values.retain(|_, (_, expiry)| now < *expiry);
        self.values.get(key).map(|(value, _)| value)
    }
}

#[async_trait]
impl SharedState for MemorySharedState {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedError> {
        Ok(self.entries().live_value(key).cloned())
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SharedError> {
        let expiry = Instant::now() + ttl;
        self.entries().values.insert(key.to_owned(), (value.to_owned(), expiry));
        Ok(())
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<String>, SharedError> {
        let mut entries = self.entries();
        if entries.live_value(key).is_some() {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        entries.values.insert(key.to_owned(), (token.clone(), Instant::now() + ttl));
        Ok(Some(token))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), SharedError> {
        let mut entries = self.entries();
        if entries.live_value(key).is_some_and(|holder| holder == token) {
            entries.values.remove(key);
        }
        Ok(())
    }

    async fn try_acquire_slot(&self, key: &str, max: usize, ttl: Duration) -> Result<Option<String>, SharedError> {
        let now = Instant::now();
        let mut entries = self.entries();
        let holders = entries.slots.entry(key.to_owned()).or_default();
        holders.retain(|_, expiry| now < *expiry);
        if holders.len() >= max {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        holders.insert(token.clone(), now + ttl);
        Ok(Some(token))
    }

    async fn release_slot(&self, key: &str, token: &str) -> Result<(), SharedError> {
        if let Some(holders) = self.entries().slots.get_mut(key) {
            holders.remove(token);
        }
        Ok(())
    }
}

/// A shared store that is always down, for tests of the fallback.
#[cfg(test)]
pub(crate) struct DownSharedState;

#[cfg(test)]
#[async_trait]
impl SharedState for DownSharedState {
    async fn get(&self, _: &str) -> Result<Option<String>, SharedError> {
        Err(SharedError("connection refused".into()))
    }

    async fn set(&self, _: &str, _: &str, _: Duration) -> Result<(), SharedError> {
        Err(SharedError("connection refused".into()))
    }

    async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<String>, SharedError> {
        Err(SharedError("connection refused".into()))
    }

    async fn unlock(&self, _: &str, _: &str) -> Result<(), SharedError> {
        Err(SharedError("connection refused".into()))
    }

    async fn try_acquire_slot(&self, _: &str, _: usize, _: Duration) -> Result<Option<String>, SharedError> {
        Err(SharedError("connection refused".into()))
    }

    async fn release_slot(&self, _: &str, _: &str) -> Result<(), SharedError> {
        Err(SharedError("connection refused".into()))
    }
}
