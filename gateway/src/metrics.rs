//! Prometheus metrics: the names, the recorder, and the request-scoped clock
//! that splits a request's time into the vendor's and the gateway's own.
//!
//! Recording goes through the `metrics` facade (the providers crate records
//! vendor calls the same way); `metrics-exporter-prometheus` keeps the values
//! and renders them at `GET /metrics`. The recorder is process-wide: installed
//! once, on the first [`App`](crate::App), shared by every app in the process.
//!
//! Labels are low-cardinality by construction: route templates (never raw
//! paths), configured caller and provider names, status codes, static outcome
//! names; never ids, keys or URLs.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sg_http_requests_total` | counter | `route`, `method`, `status`, `caller` |
//! | `sg_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `sg_http_overhead_seconds` | histogram | `route`: the request's time minus its time waiting on vendors |
//! | `sg_http_requests_in_flight` | gauge | |
//! | `sg_connections_open` | gauge | client connections open now |
//! | `sg_connections_refused_total` | counter | refused at `server.max_connections` |
//! | `sg_connections_timed_out_total` | counter | `reason` (`header_timeout`/`idle_timeout`) |
//! | `sg_http_protocol_errors_total` | counter | `reason` (`malformed`/`uri_too_long`/`head_too_large`/`other`) |
//! | `sg_vendor_calls_total` | counter | `provider`, `operation`, `outcome`, `vendor_code` |
//! | `sg_vendor_call_duration_seconds` | histogram | `provider`, `operation` |
//! | `sg_provider_circuit_state` | gauge | `provider`: 0 closed, 1 open, 2 half-open |
//! | `sg_provider_circuit_rejected_total` | counter | `provider`: refused by an open breaker, no vendor call |
//! | `sg_cache_lookups_total` | counter | `provider`, `result` (`hit`/`miss`) |
//! | `sg_rate_limited_total` | counter | `caller` |
//! | `sg_key_requests_total` | counter | `caller`, `key` (the key's index among the caller's: `0`, `1`, ...) |
//! | `sg_quota_exceeded_total` | counter | `caller`, `provider` (empty for the caller-wide quota) |
//! | `sg_jobs_polling` | gauge | jobs this replica polls now |
//! | `sg_long_polls_waiting` | gauge | requests parked in `?wait` / `Prefer: wait` on this replica now |
//! | `sg_jobs_finished_total` | counter | `provider`, `status` (`done`/`failed`) |
//! | `sg_webhook_deliveries_total` | counter | `result` (`delivered`/`retry`/`given_up`) |
//! | `sg_store_errors_total` | counter | `reason` (`timeout`/`refused`/`lost`/`breaker_open`/`other`) |
//! | `sg_store_degraded` | gauge | 1 while the shared store fails |
//! | `sg_draining` | gauge | 1 from SIGTERM until exit |
//! | `sg_build_info` | gauge | `version` |
//! | `sg_config_reload_total` | counter | `result` (`applied`/`rejected`) |
//! | `sg_config_generation` | gauge | the live configuration's generation: 1 at start, +1 per reload that changed it |
//! | `sg_config_fingerprint` | gauge | the live configuration's fingerprint (12 hex digits in `/readyz`) as a number |

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;

pub const HTTP_REQUESTS: &str = "sg_http_requests_total";
pub const HTTP_DURATION: &str = "sg_http_request_duration_seconds";
pub const HTTP_OVERHEAD: &str = "sg_http_overhead_seconds";
pub const HTTP_IN_FLIGHT: &str = "sg_http_requests_in_flight";
pub const CACHE_LOOKUPS: &str = "sg_cache_lookups_total";
pub const RATE_LIMITED: &str = "sg_rate_limited_total";
pub const KEY_REQUESTS: &str = "sg_key_requests_total";
pub const QUOTA_EXCEEDED: &str = "sg_quota_exceeded_total";
pub const JOBS_POLLING: &str = "sg_jobs_polling";
pub const LONG_POLLS_WAITING: &str = "sg_long_polls_waiting";
pub const JOBS_FINISHED: &str = "sg_jobs_finished_total";
pub const WEBHOOK_DELIVERIES: &str = "sg_webhook_deliveries_total";
pub const STORE_ERRORS: &str = "sg_store_errors_total";
pub const STORE_DEGRADED: &str = "sg_store_degraded";
pub const DRAINING: &str = "sg_draining";
pub const BUILD_INFO: &str = "sg_build_info";
pub const CONFIG_RELOADS: &str = "sg_config_reload_total";
pub const CONFIG_GENERATION: &str = "sg_config_generation";
pub const CONFIG_FINGERPRINT: &str = "sg_config_fingerprint";

/// Latency buckets (seconds) of whole requests and vendor calls: 1 ms – 60 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Buckets of the gateway's own time: 10 µs – 100 ms (its target is well under 1 ms).
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

/// How often histograms are compacted (the exporter needs it called).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HTTP_OVERHEAD.to_owned()), OVERHEAD_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what this one records");
        }
        describe();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // At 0 from the start, so an alert on their increase sees the first reload.
        for result in ["applied", "rejected"] {
            metrics::counter!(CONFIG_RELOADS, "result" => result).increment(0);
        }
        handle
    })
}

/// Keeps the histograms compact; runs until the process ends (one per process).
pub fn spawn_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_ok() {
        let handle = handle();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "Requests answered, by route template, method, status and caller.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time from request to response.");
    describe_histogram!(
        HTTP_OVERHEAD,
        Unit::Seconds,
        "The gateway's own time per request: total time minus time waiting on vendors (vendor calls, joined flights, long-polls)."
    );
    describe_gauge!(HTTP_IN_FLIGHT, "Requests being answered now.");
    describe_gauge!(crate::server::CONNECTIONS_OPEN, "Client connections open now.");
    describe_counter!(crate::server::CONNECTIONS_REFUSED, "Client connections refused at server.max_connections.");
    describe_counter!(
        crate::server::CONNECTIONS_TIMED_OUT,
        "Client connections closed by a deadline: header_timeout (no complete head in time) or idle_timeout."
    );
    describe_counter!(
        crate::server::PROTOCOL_ERRORS,
        "Request heads hyper refused before routing, by reason (malformed, uri_too_long, head_too_large, other)."
    );
    describe_counter!(
        providers::metrics::VENDOR_CALLS,
        "Vendor calls by provider, operation, outcome and the vendor's error code (or HTTP status) if its adapter knows it, else other."
    );
    describe_histogram!(providers::metrics::VENDOR_DURATION, Unit::Seconds, "Vendor call latency.");
    describe_gauge!(
        providers::breaker::CIRCUIT_STATE,
        "Each provider's circuit breaker: 0 closed, 1 open (requests refused without a vendor call), 2 half-open (trial calls)."
    );
    describe_counter!(
        providers::breaker::CIRCUIT_REJECTED,
        "Requests refused by a provider's open circuit breaker, without a vendor call."
    );
    describe_counter!(CACHE_LOOKUPS, "Summary requests answered from the store (hit) or sent on (miss).");
    describe_counter!(RATE_LIMITED, "Requests refused with 429, by caller.");
    describe_counter!(
        KEY_REQUESTS,
        "Authenticated requests, by caller and the index of the key used among the caller's (for rotation)."
    );
    describe_counter!(QUOTA_EXCEEDED, "Requests refused with 429 quota_exceeded, by caller and provider quota.");
    describe_gauge!(JOBS_POLLING, "Pending vendor jobs this replica is polling.");
    describe_gauge!(LONG_POLLS_WAITING, "Requests parked in ?wait / Prefer: wait on this replica now.");
    describe_counter!(JOBS_FINISHED, "Vendor jobs that ended, by provider and final status.");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook attempts by result: delivered, retry (failed, rescheduled), given_up (failed for good)."
    );
    describe_counter!(STORE_ERRORS, "Store (Redis) commands that failed, by reason.");
    describe_gauge!(STORE_DEGRADED, "1 while the shared store is failing (cache bypassed, local limits).");
    describe_gauge!(DRAINING, "1 from SIGTERM until exit.");
    describe_gauge!(BUILD_INFO, "Always 1; the version as a label.");
    describe_counter!(CONFIG_RELOADS, "Configuration reloads (SIGHUP or the file changed), applied or rejected.");
    describe_gauge!(
        CONFIG_GENERATION,
        "Generation of the live configuration: 1 at start, one more per reload that changed it."
    );
    describe_gauge!(
        CONFIG_FINGERPRINT,
        "The live configuration's fingerprint (the 12 hex digits /readyz shows) as a number: equal on replicas running the same configuration."
    );
}

/// What the layers below the metrics layer learn about the request.
#[derive(Default)]
struct RequestStats {
    /// Time spent waiting on vendors.
    vendor_wait: Cell<Duration>,
    /// The caller, once auth knows it.
    caller: Cell<Option<Arc<str>>>,
}

tokio::task_local! {
    /// The current request's [`RequestStats`] (set by the metrics layer).
    static REQUEST: RequestStats;
}

/// Runs `request` with its [`RequestStats`]; returns its output, the time it
/// waited on vendors and its caller (if authenticated).
pub async fn with_request_stats<F: Future>(request: F) -> (F::Output, Duration, Option<Arc<str>>) {
    let scoped = REQUEST.scope(RequestStats::default(), request);
    let mut scoped = std::pin::pin!(scoped);
    let output = scoped.as_mut().await;
    let stats = scoped.as_mut().take_value().unwrap_or_default();
    (output, stats.vendor_wait.into_inner(), stats.caller.into_inner())
}

/// Awaits `work` (a vendor call, a joined flight, a long-poll) and counts its
/// time as waiting on vendors, not as the gateway's own.
pub async fn vendor_wait<F: Future>(work: F) -> F::Output {
    let started = Instant::now();
    let output = work.await;
    let elapsed = started.elapsed();
    let _ = REQUEST.try_with(|r| r.vendor_wait.set(r.vendor_wait.get() + elapsed));
    output
}

/// Counts an authenticated request by its caller and the index of its key.
/// The live configuration is now `generation` with `fingerprint` (12 hex digits).
pub fn config_loaded(generation: u64, fingerprint: &str) {
    #[allow(clippy::cast_precision_loss)] // 48 bits and a generation count: exact in an f64
    {
        metrics::gauge!(CONFIG_GENERATION).set(generation as f64);
        metrics::gauge!(CONFIG_FINGERPRINT).set(u64::from_str_radix(fingerprint, 16).unwrap_or(0) as f64);
    }
}

pub fn key_used(caller: &Arc<str>, key: usize) {
    const INDEXES: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];
    let key = INDEXES.get(key).map_or_else(|| key.to_string(), |i| (*i).to_owned());
    metrics::counter!(KEY_REQUESTS, "caller" => caller.to_string(), "key" => key).increment(1);
}

/// Labels the current request's metrics with its caller (called by auth).
pub fn set_caller(name: &Arc<str>) {
    let _ = REQUEST.try_with(|r| r.caller.set(Some(Arc::clone(name))));
}
