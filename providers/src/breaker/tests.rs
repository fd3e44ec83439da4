//! The breaker's state machine on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gateway_config::CircuitBreakerConfig;

use super::*;
use crate::error::VendorDetail;
use crate::shared::MemorySharedState;

fn settings() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        enabled: true,
        consecutive_failures: 3,
        failure_ratio: 0.5,
        min_calls: 10,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(30),
        half_open_calls: 1,
    }
}

fn breaker(settings: &CircuitBreakerConfig) -> Breaker {
    Breaker::new(Arc::from("test"), settings, None)
}

fn down() -> ProviderError {
    ProviderError::Unavailable {
        message: "could not connect".into(),
        retry_after: Duration::from_secs(5),
        vendor: VendorDetail::default(),
    }
}

fn not_found() -> ProviderError {
    ProviderError::NotFound { message: "no such call".into(), vendor: VendorDetail::new(Some(404), None, None) }
}

fn not_ready() -> ProviderError {
    ProviderError::NotReady {
        message: "processing".into(),
        retry_after: Duration::from_secs(30),
        vendor: VendorDetail::new(Some(409), None, None),
    }
}

/// A fake vendor call that counts how often it really ran.
struct Vendor(AtomicU32);

impl Vendor {
    fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// The call: counted when it runs, not when it is made.
    #[allow(clippy::unused_async, reason = "it stands for a vendor call, which is a future")]
    async fn answer(&self, result: Result<(), ProviderError>) -> Result<(), ProviderError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn hits(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

fn refused_for(result: &Result<(), ProviderError>) -> Option<Duration> {
    match result {
        Err(ProviderError::CircuitOpen { retry_after }) => Some(*retry_after),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_refuses_without_calling_then_a_trial_closes_it() {
    let b = breaker(&settings());
    let vendor = Vendor::new();
    for _ in 0..3 {
        assert!(matches!(b.run(vendor.answer(Err(down()))).await, Err(ProviderError::Unavailable { .. })));
    }
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(vendor.hits(), 3);

    for _ in 0..50 {
        let refused = b.run(vendor.answer(Ok(()))).await;
        assert_eq!(refused_for(&refused), Some(Duration::from_secs(30)), "{refused:?}");
    }
    assert_eq!(vendor.hits(), 3, "no vendor call while open");

    // Retry-After is the time left, rounded up.
    tokio::time::advance(Duration::from_millis(20_500)).await;
    assert_eq!(refused_for(&b.run(vendor.answer(Ok(()))).await), Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_millis(9_499)).await;
    assert_eq!(refused_for(&b.run(vendor.answer(Ok(()))).await), Some(Duration::from_secs(1)), "never below 1 s");
    assert_eq!(vendor.hits(), 3);

    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    assert!(b.run(vendor.answer(Ok(()))).await.is_ok(), "the trial call goes through");
    assert_eq!(vendor.hits(), 4);
    assert_eq!(b.state(), CircuitState::Closed);
    // Closed afresh: it takes the full count again to open.
    for _ in 0..2 {
        let _ = b.run(vendor.answer(Err(down()))).await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_it_again_for_the_whole_period() {
    let b = breaker(&settings());
    let vendor = Vendor::new();
    for _ in 0..3 {
        let _ = b.run(vendor.answer(Err(ProviderError::Timeout { after: Duration::from_secs(10) }))).await;
    }
    assert_eq!(b.state(), CircuitState::Open, "timeouts are failures");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(matches!(b.run(vendor.answer(Err(down()))).await, Err(ProviderError::Unavailable { .. })));
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(refused_for(&b.run(vendor.answer(Ok(()))).await), Some(Duration::from_secs(30)));
    assert_eq!(vendor.hits(), 4);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_its_trial_calls_through_and_a_cancelled_trial_gives_its_place_back() {
    let b = breaker(&CircuitBreakerConfig { half_open_calls: 2, ..settings() });
    for _ in 0..3 {
        let _ = b.run(async { Err::<(), _>(down()) }).await;
    }
    tokio::time::advance(Duration::from_secs(30)).await;

    let first = b.admit().expect("first trial");
    let second = b.admit().expect("second trial");
    let third = b.admit();
    assert!(matches!(third, Err(ProviderError::CircuitOpen { retry_after }) if retry_after == Duration::from_secs(1)));
    drop(first); // cancelled: no verdict, its place is free again
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let again = b.admit().expect("the cancelled trial's place");
    second.finish(Verdict::Neutral); // overloaded: no verdict either
    assert_eq!(b.state(), CircuitState::HalfOpen);
    again.finish(Verdict::Success);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn opens_on_the_failure_ratio_once_the_window_holds_min_calls() {
    let b = breaker(&settings());
    let vendor = Vendor::new();
    // Failure, success, ...: never 3 in a row; 50 % but under min_calls.
    for i in 0..9 {
        let result = if i % 2 == 0 { Err(down()) } else { Ok(()) };
        let _ = b.run(vendor.answer(result)).await;
        assert_eq!(b.state(), CircuitState::Closed, "call {i}");
    }
    // The tenth call: 5 of 10 failed.
    let _ = b.run(vendor.answer(Ok(()))).await;
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_no_longer_count() {
    let b = breaker(&settings());
    let vendor = Vendor::new();
    for _ in 0..5 {
        let _ = b.run(vendor.answer(Err(down()))).await;
        let _ = b.run(vendor.answer(Ok(()))).await;
    }
    // 5 of 10 failed ... but the last call succeeded: opened on the ratio.
    assert_eq!(b.state(), CircuitState::Open);

    let b = breaker(&settings());
    for _ in 0..4 {
        let _ = b.run(vendor.answer(Err(down()))).await;
        let _ = b.run(vendor.answer(Ok(()))).await;
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // 8 calls 11 s ago are out of the 10 s window: 1 of 2 now is below min_calls.
    let _ = b.run(vendor.answer(Err(down()))).await;
    let _ = b.run(vendor.answer(Ok(()))).await;
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn not_found_not_ready_and_rejected_never_open_it_and_overloaded_does_not_count() {
    let b = breaker(&CircuitBreakerConfig { consecutive_failures: 1, min_calls: 1, failure_ratio: 0.01, ..settings() });
    let vendor = Vendor::new();
    for _ in 0..100 {
        let _ = b.run(vendor.answer(Err(not_found()))).await;
        let _ = b.run(vendor.answer(Err(not_ready()))).await;
        let rejected = ProviderError::Rejected { message: "bad parameters".into(), vendor: VendorDetail::default() };
        let _ = b.run(vendor.answer(Err(rejected))).await;
        let _ = b.run(vendor.answer(Err(ProviderError::Overloaded { retry_after: Duration::from_secs(1) }))).await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(vendor.hits(), 400);

    // An answer from the vendor resets the run of failures.
    let b = breaker(&CircuitBreakerConfig { min_calls: 1000, ..settings() });
    for _ in 0..10 {
        let _ = b.run(vendor.answer(Err(down()))).await;
        let _ = b.run(vendor.answer(Err(down()))).await;
        let _ = b.run(vendor.answer(Err(not_found()))).await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
    // Overloaded does not: it says nothing about the vendor.
    for _ in 0..2 {
        let _ = b.run(vendor.answer(Err(down()))).await;
        let _ = b.run(vendor.answer(Err(ProviderError::Overloaded { retry_after: Duration::from_secs(1) }))).await;
    }
    let _ = b.run(vendor.answer(Err(down()))).await;
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_while_closed_counts_nothing() {
    let b = breaker(&CircuitBreakerConfig { consecutive_failures: 1, ..settings() });
    for _ in 0..10 {
        let call = b.run(std::future::pending::<Result<(), ProviderError>>());
        assert!(tokio::time::timeout(Duration::from_secs(1), call).await.is_err());
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn disabled_it_never_opens() {
    let b = breaker(&CircuitBreakerConfig { enabled: false, ..settings() });
    let vendor = Vendor::new();
    for _ in 0..100 {
        let _ = b.run(vendor.answer(Err(down()))).await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(vendor.hits(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_replica_whose_call_fails_while_anothers_breaker_is_open_opens_too() {
    let shared: Arc<MemorySharedState> = Arc::new(MemorySharedState::new());
    let replica = |s: &Arc<MemorySharedState>| {
        Breaker::new(Arc::from("fleet"), &settings(), Some(Arc::clone(s) as Arc<dyn SharedState>))
    };
    let (a, b) = (replica(&shared), replica(&shared));
    let vendor = Vendor::new();
    // Calls that succeed read nothing from the store.
    for _ in 0..20 {
        let _ = b.run(vendor.answer(Ok(()))).await;
    }
    assert_eq!(shared.calls(), 0, "the store is not read on the hot path");

    for _ in 0..3 {
        let _ = a.run(vendor.answer(Err(down()))).await;
    }
    assert_eq!(a.state(), CircuitState::Open);
    // One failed call on B: it reads the mark (in the background) and opens.
    let _ = b.run(vendor.answer(Err(down()))).await;
    for _ in 0..100 {
        if b.state() == CircuitState::Open {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(b.state(), CircuitState::Open, "B follows A");
    assert_eq!(vendor.hits(), 20 + 3 + 1);
    let refused = b.run(vendor.answer(Ok(()))).await;
    assert!(refused_for(&refused).is_some_and(|after| after <= Duration::from_secs(30)), "{refused:?}");

    // The mark expires with A's open period: a new replica's failure then finds none.
    tokio::time::advance(Duration::from_secs(31)).await;
    let c = replica(&shared);
    let _ = c.run(vendor.answer(Err(down()))).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(c.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_half_opens_on_time_without_traffic() {
    let b = breaker(&settings());
    for _ in 0..3 {
        let _ = b.run(async { Err::<(), _>(down()) }).await;
    }
    let inner = b.inner.as_ref().expect("enabled");
    assert!(matches!(inner.lock().phase, Phase::Open { .. }));
    tokio::time::sleep(Duration::from_secs(30)).await;
    tokio::task::yield_now().await;
    // Read the phase directly: `state()` would move it itself.
    assert!(matches!(inner.lock().phase, Phase::HalfOpen { trials: 0 }), "the timer moved it");
}
