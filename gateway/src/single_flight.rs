//! One piece of work per key at a time in this process: the first caller
//! starts it in its own task, later callers with the same key join it, and a
//! caller that goes away does not cancel it for the others. The work runs in
//! the span of the request that started it (its vendor calls are that
//! request's children in logs and traces).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tracing::Instrument;

use crate::error::ApiError;

type Flight<T> = Shared<BoxFuture<'static, Result<T, ApiError>>>;

/// Work in flight, by key.
pub struct SingleFlight<T> {
    inflight: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self { inflight: Arc::default() }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Joins the work in flight for `key`, or starts `work()` for it.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(flight) = inflight.get(key) {
                flight.clone()
            } else {
                let work = work();
                let map = Arc::clone(&self.inflight);
                let owned_key = key.to_owned();
                let task = tokio::spawn(
                    async move {
                        let result = work.await;
                        map.lock().unwrap_or_else(PoisonError::into_inner).remove(&owned_key);
                        result
                    }
                    .in_current_span(),
                );
                let flight = async move {
                    task.await.unwrap_or_else(|e| Err(ApiError::Internal(format!("in-flight task failed: {e}"))))
                }
                .boxed()
                .shared();
                inflight.insert(key.to_owned(), flight.clone());
                flight
            }
        };
        flight.await
    }

    /// Whether no work is in flight.
    pub fn is_idle(&self) -> bool {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Paused time: the work's sleep ends only once every task is idle, i.e.
    /// after all ten callers have joined the flight.
    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_run_and_the_key_is_freed() {
        let flights = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut joins = Vec::new();
        for _ in 0..10 {
            let (flights, runs) = (Arc::clone(&flights), Arc::clone(&runs));
            joins.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(runs.fetch_add(1, Ordering::SeqCst))
                    })
                    .await
            }));
        }
        for j in joins {
            assert_eq!(j.await.expect("joined").expect("ran"), 0);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_idle());
    }
}
