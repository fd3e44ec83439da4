//! Requests waiting for a pending summary to become final (`?wait=N`,
//! `Prefer: wait=N`), woken by the job's end — no polling loop, no timer per
//! check: each waiter is a parked future holding a `watch` receiver and one
//! timer entry, and costs no CPU until the job ends or its time is up.
//!
//! One `watch` channel per summary id that has waiters; the last waiter to
//! leave removes it, and [`Waiters::publish`] removes it as it wakes everyone.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::store::StoredSummary;

type Channel<T> = watch::Sender<Option<T>>;

/// The waiters of this process, by summary id, for a `T` (the final summary;
/// `()` for the end of another replica's flight).
pub struct Waiters<T = StoredSummary> {
    channels: Mutex<HashMap<String, Channel<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self { channels: Mutex::new(HashMap::new()) }
    }
}

/// One waiter's place; leaving (drop) cleans the channel up if it was the last.
pub struct Subscription<'a, T = StoredSummary> {
    waiters: &'a Waiters<T>,
    id: String,
    rx: watch::Receiver<Option<T>>,
}

impl<T> Waiters<T> {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel<T>>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> Waiters<T> {
    /// Starts waiting for `id`. Subscribe *before* reading the store, so an end
    /// between the read and the wait is not missed.
    pub fn subscribe(&self, id: &str) -> Subscription<'_, T> {
        let rx = self.channels().entry(id.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe();
        Subscription { waiters: self, id: id.to_owned(), rx }
    }

    /// Wakes every waiter of `id` with `value`.
    pub fn publish(&self, id: &str, value: &T) {
        if let Some(tx) = self.channels().remove(id) {
            tx.send_replace(Some(value.clone()));
        }
    }

    /// The ids with at least one waiter.
    pub fn ids(&self) -> Vec<String> {
        self.channels().keys().cloned().collect()
    }

    /// How many requests wait for `id` (for tests and metrics).
    pub fn waiting(&self, id: &str) -> usize {
        self.channels().get(id).map_or(0, watch::Sender::receiver_count)
    }

    /// Requests waiting, over every id (`sg_long_polls_waiting`).
    pub fn total(&self) -> usize {
        self.channels().values().map(watch::Sender::receiver_count).sum()
    }

    /// Summaries with at least one waiter (for tests and metrics).
    pub fn len(&self) -> usize {
        self.channels().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone> Subscription<'_, T> {
    /// The value once published; `None` if the channel went away without one.
    pub async fn published(&mut self) -> Option<T> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}

impl<T> Drop for Subscription<'_, T> {
    fn drop(&mut self) {
        let mut channels = self.waiters.channels();
        // Only our own channel (not a newer one under the same id), and only if
        // nobody else waits on it: our receiver plus the probe make 2. (The probe
        // is a named local: a temporary in an `&&` operand would be dropped early.)
        let last = channels.get(&self.id).is_some_and(|tx| {
            let probe = tx.subscribe();
            probe.same_channel(&self.rx) && tx.receiver_count() <= 2
        });
        if last {
            channels.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use providers::Status;

    use super::*;

    fn done() -> StoredSummary {
        StoredSummary { provider: Arc::from("p"), status: Status::Completed, body: Bytes::from_static(b"{}") }
    }

    #[tokio::test]
    async fn publish_wakes_every_waiter_and_leaves_nothing_behind() {
        let waiters = Waiters::<StoredSummary>::default();
        let mut a = waiters.subscribe("x");
        let mut b = waiters.subscribe("x");
        assert_eq!(waiters.len(), 1);
        waiters.publish("x", &done());
        assert_eq!(a.published().await.unwrap().status, Status::Completed);
        assert_eq!(b.published().await.unwrap().status, Status::Completed);
        drop((a, b));
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn the_last_waiter_to_leave_removes_the_channel() {
        let waiters = Waiters::<StoredSummary>::default();
        let a = waiters.subscribe("x");
        let mut b = waiters.subscribe("x");
        drop(a);
        assert_eq!(waiters.len(), 1);
        assert!(tokio::time::timeout(Duration::from_millis(20), b.published()).await.is_err());
        drop(b);
        assert!(waiters.is_empty());
    }
}
