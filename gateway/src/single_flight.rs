//! One vendor call per key, however many identical requests arrive at once.
//!
//! [`SingleFlight`]: in this process the first caller starts the work in its
//! own task, later callers with the same key join it, and a caller that goes
//! away does not cancel it for the others. The work runs in the span of the
//! request that started it (its vendor calls are that request's children in
//! logs and traces).
//!
//! [`Flights`]: the same for the fleet, for summaries and questions alike. With
//! a shared store the process's flight claims the key in the store ([`Fleet`]);
//! the winner runs the work, the others wait for its end
//! ([`StoreEvent::FlightEnded`], through the store) and look again.
//!
//! [`StoreEvent::FlightEnded`]: crate::store::StoreEvent::FlightEnded

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tracing::Instrument;

use crate::error::ApiError;
use crate::store::{Fleet, FlightClaim, StoreError, StoredSummary};
use crate::waiters::Waiters;

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

/// A piece of work a [`Flights`] runs once for the fleet.
pub trait FlightWork: Send + 'static {
    type Output: Clone + Send + Sync + 'static;

    /// What another flight of the same key left behind, looked at before each
    /// claim (`None`: nothing yet, so claim).
    fn look(&self) -> impl Future<Output = Result<Option<Self::Output>, ApiError>> + Send;

    /// The claim found the summary of the key already stored: its answer, if it is one.
    fn stored(&self, summary: StoredSummary) -> Option<Self::Output>;

    /// The work itself.
    fn run(self) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;

    /// The fleet could not be asked: `Ok` runs the work without the fleet's
    /// single flight, `Err` refuses it.
    fn without_fleet(&self, error: StoreError) -> Result<(), ApiError>;
}

/// One run per key in the process and, with a [`Fleet`], in the fleet.
pub struct Flights<T> {
    local: SingleFlight<T>,
    fleet: Option<Arc<dyn Fleet>>,
    /// Ends of other replicas' flights (every kind of flight: fed by the store's events).
    ends: Arc<Waiters<()>>,
    /// How long a claim lasts: no flight outlives it.
    ttl: Duration,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    pub fn new(fleet: Option<Arc<dyn Fleet>>, ends: Arc<Waiters<()>>, ttl: Duration) -> Self {
        Self { local: SingleFlight::default(), fleet, ends, ttl }
    }

    /// Joins the flight of `key`, or starts `work` for it.
    pub async fn run<W: FlightWork<Output = T>>(&self, key: &str, work: W) -> Result<T, ApiError> {
        let (fleet, ends, ttl, owned) = (self.fleet.clone(), Arc::clone(&self.ends), self.ttl, key.to_owned());
        self.local.run(key, move || async move { across_fleet(fleet.as_deref(), &ends, &owned, ttl, work).await }).await
    }
}

/// Claim the flight in the store (which also answers if the summary was stored
/// since), else wait for the replica that has it and look again.
async fn across_fleet<W: FlightWork>(
    fleet: Option<&dyn Fleet>,
    ends: &Waiters<()>,
    key: &str,
    ttl: Duration,
    work: W,
) -> Result<W::Output, ApiError> {
    let Some(fleet) = fleet else {
        if let Some(found) = work.look().await? {
            return Ok(found);
        }
        return work.run().await;
    };
    loop {
        // Subscribe before looking and claiming, so an end in between is not missed.
        let mut ended = ends.subscribe(key);
        if let Some(found) = work.look().await? {
            return Ok(found);
        }
        match fleet.claim_flight(key, ttl).await {
            Ok(FlightClaim::Held(left)) => {
                tracing::debug!(key, "another replica has this flight; waiting for it");
                let _ = tokio::time::timeout(left, ended.published()).await;
            }
            Ok(claim) => {
                if let FlightClaim::Stored(summary) = claim
                    && let Some(found) = work.stored(summary)
                {
                    return Ok(found);
                }
                drop(ended);
                let result = work.run().await;
                if let Err(e) = fleet.end_flight(key).await {
                    // Followers wait for the claim to expire instead.
                    tracing::debug!(key, error = %e, "could not end a flight in the store");
                }
                return result;
            }
            Err(e) => {
                work.without_fleet(e)?;
                return work.run().await;
            }
        }
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
