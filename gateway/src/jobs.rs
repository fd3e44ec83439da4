//! Polling asynchronous vendor jobs until they end, in the background.
//!
//! One task per job. It sleeps between polls — a jittered
//! [`JobPolicy::poll_interval`] (each wait drawn from [2/3, 5/3] of it: 2–5 s
//! for the default 3 s), doubling per consecutive vendor error up to
//! `poll_backoff_max` — and is woken early by a vendor callback
//! ([`Jobs::nudge`]), which is never trusted by itself: the poll confirms it.
//! At the job's deadline (`job_timeout`, at most the vendor's 12 h) it fails with
//! `provider_timeout`.
//!
//! Ending a job is one store operation ([`JobStore::finish_job`]): final resource
//! stored, job removed, webhooks queued. Then this process's waiters are woken
//! and the webhook worker is told (a shared store also tells the other replicas).
//!
//! With a shared store (a [`Fleet`]) a job is polled by the replica holding its **lease**
//! (`store.job_lease`, taken when the job is created). The poller renews it every
//! third of the lease; if renewal finds another holder it stops. Every replica
//! looks for jobs without a live lease every half lease (jittered) and takes them
//! over, so a job whose replica died (or shut down, releasing its leases) is
//! polled again within about 1.5 leases. While the store is unreachable the
//! poller keeps polling and holds a finished result until the store takes it.
//! Without a fleet the process is the only replica: it polls every job it has.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_config::Config;
use providers::{JobPolicy, Polled, Provider, ProviderError, SummaryError, VendorDetail};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::live::LiveConfig;
use crate::resource::{completed_resource, failed_resource, rfc3339, stored};
use crate::store::{Fleet, Job, JobStore, StoreError, StoredSummary, Stores, WebhookTarget};
use crate::waiters::Waiters;

/// How long ending a job is retried while the store fails (then the job is left
/// to the lease: another replica, or this one, polls and ends it again).
const FINISH_RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// What ended a poller's wait between two polls.
enum Wake {
    /// Time to poll (or a vendor callback said so).
    Poll,
    /// Stop polling this job here.
    Stop,
}

/// How a job ended.
enum End {
    Completed(providers::Completed),
    Failed(SummaryError),
}

/// The jobs service: pending vendor jobs, polled until they end.
pub struct Jobs {
    store: Arc<dyn JobStore>,
    /// Leases, with a shared store.
    fleet: Option<Arc<dyn Fleet>>,
    summary_ttl: Duration,
    failure_ttl: Duration,
    /// How long a replica holds a job without renewing its lease (shared store).
    job_lease: Duration,
    /// Jobs this process polls, with the handle that makes it poll at once (vendor callbacks).
    pollers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Woken with a job's final resource.
    waiters: Arc<Waiters>,
    /// Wakes the webhook worker when deliveries were queued.
    outbox_wake: Arc<Notify>,
    /// Cancelled when pollers must stop (with a shared store, as soon as the
    /// replica stops accepting: its jobs' leases are released for another).
    stop: CancellationToken,
}

impl Jobs {
    pub fn new(
        stores: &Stores,
        waiters: Arc<Waiters>,
        outbox_wake: Arc<Notify>,
        stop: CancellationToken,
        config: &Config,
    ) -> Self {
        Self {
            store: Arc::clone(&stores.jobs),
            fleet: stores.fleet.clone(),
            summary_ttl: config.store.summary_ttl,
            failure_ttl: config.store.failure_ttl,
            job_lease: config.store.job_lease,
            pollers: Mutex::new(HashMap::new()),
            waiters,
            outbox_wake,
            stop,
        }
    }

    /// Records a job the vendor started, with its pending resource (kept for
    /// `ttl`), and starts polling it.
    pub async fn start(
        self: &Arc<Self>,
        job: Job,
        pending: StoredSummary,
        ttl: Duration,
        provider: &Arc<Provider>,
    ) -> Result<(), StoreError> {
        self.store.create_job(job.clone(), pending, ttl).await?;
        tracing::info!(summary_id = %job.id, provider = %job.provider, "job started at the vendor");
        self.spawn_poller(job, Arc::clone(provider));
        Ok(())
    }

    /// Adds a caller's webhook to a pending job. `false`: it is no longer pending.
    pub async fn add_webhook(&self, id: &str, target: WebhookTarget) -> Result<bool, StoreError> {
        self.store.add_webhook(id, target).await
    }

    /// Stops the pollers (with a shared store, another replica takes their jobs).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Polls `job` in a task of its own, unless this process already does.
    fn spawn_poller(self: &Arc<Self>, job: Job, provider: Arc<Provider>) {
        let nudge = Arc::new(Notify::new());
        {
            let mut pollers = self.pollers.lock().unwrap_or_else(PoisonError::into_inner);
            if pollers.contains_key(&job.id) {
                return;
            }
            pollers.insert(job.id.clone(), Arc::clone(&nudge));
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let id = job.id.clone();
            this.poll_job(job, &provider, &nudge).await;
            this.pollers.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        });
    }

    /// How many jobs this process polls now.
    pub fn polling(&self) -> usize {
        self.pollers.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Makes the job's poller poll now (a vendor said it ended). False if this
    /// process does not poll that job.
    pub fn nudge(&self, id: &str) -> bool {
        let pollers = self.pollers.lock().unwrap_or_else(PoisonError::into_inner);
        pollers.get(id).is_some_and(|n| {
            n.notify_one();
            true
        })
    }

    /// Jobs in the store that no replica polls, polled by this one from now on:
    /// after a restart, or (shared store) whose replica died.
    pub async fn resume(self: &Arc<Self>, providers: &BTreeMap<String, Arc<Provider>>) {
        let jobs = match self.store.unclaimed_jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "could not list pending jobs to resume");
                return;
            }
        };
        for job in jobs {
            if self.polls(&job.id) {
                continue;
            }
            let Some(provider) = providers.get(&job.provider) else {
                tracing::warn!(summary_id = %job.id, provider = %job.provider, "a pending job's provider is no longer configured");
                continue;
            };
            let leased = match &self.fleet {
                Some(fleet) => fleet.acquire_lease(&job.id).await,
                None => Ok(true),
            };
            match leased {
                Ok(true) => {
                    tracing::info!(summary_id = %job.id, provider = %job.provider, "taking over a pending job");
                    self.spawn_poller(job, Arc::clone(provider));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(summary_id = %job.id, error = %e, "could not take a pending job's lease"),
            }
        }
    }

    /// Every half lease (jittered), [`Self::resume`] until shutdown: how a
    /// replica takes over the jobs of one that died. Shared stores only.
    /// Each pass looks the jobs' providers up in the live configuration, so a
    /// provider a reload added is found too.
    pub async fn watch_orphaned(self: Arc<Self>, live: LiveConfig) {
        loop {
            let providers = live.load_full();
            self.resume(&providers.providers).await;
            drop(providers);
            let every = (self.job_lease / 2).mul_f64(0.75 + 0.5 * fastrand::f64());
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    fn polls(&self, id: &str) -> bool {
        self.pollers.lock().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    async fn poll_job(&self, job: Job, provider: &Arc<Provider>, nudge: &Notify) {
        let Some(policy) = provider.job_policy() else {
            // Only providers with a job policy start jobs; a stored job of a provider
            // reconfigured as another type cannot be polled.
            tracing::warn!(summary_id = %job.id, provider = %job.provider, "the job's provider no longer runs jobs");
            return;
        };
        let deadline = instant_of(job.deadline_ms);
        let mut failures = 0_u32;
        // Only a replica of a fleet holds a lease to renew: without one there is no
        // renewal to wake up for (an instant left in the past would make the wait
        // below return at once, over and over, until the poll: a busy loop).
        let mut renew_at = self.first_renewal();
        loop {
            let poll_at = (Instant::now() + poll_delay(policy, failures)).min(deadline);
            match self.wait_for_poll(&job.id, poll_at, &mut renew_at, nudge).await {
                Wake::Poll => {}
                Wake::Stop => return,
            }
            let end = match provider.poll(&job.vendor_ref).await {
                Ok(Polled::Pending) => {
                    failures = 0;
                    None
                }
                Ok(Polled::Completed(completed)) => Some(End::Completed(completed)),
                Ok(Polled::Failed(failure)) => {
                    Some(End::Failed(SummaryError::from_vendor("provider_failed", failure.message, &failure.vendor)))
                }
                Err(ProviderError::NotFound { message, vendor }) => {
                    Some(End::Failed(SummaryError::from_vendor("provider_error", message, &vendor)))
                }
                Err(e @ ProviderError::CircuitOpen { .. }) => {
                    // The breaker logged its opening once; a poll it refuses is not news.
                    failures += 1;
                    tracing::debug!(summary_id = %job.id, provider = %job.provider, failures, error = %e, "poll refused by the open circuit; backing off");
                    None
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(summary_id = %job.id, provider = %job.provider, failures, error = %e, "polling a job failed; backing off");
                    None
                }
            };
            let end = end.or_else(|| {
                (Instant::now() >= deadline).then(|| {
                    End::Failed(SummaryError::from_vendor(
                        "provider_timeout",
                        format!(
                            "the provider did not finish within {}",
                            humantime::format_duration(Duration::from_millis(job.deadline_ms - job.created_at_ms))
                        ),
                        &VendorDetail::default(),
                    ))
                })
            });
            if let Some(end) = end {
                self.finish(&job, provider, end).await;
                return;
            }
        }
    }

    /// When a new poller first renews its job's lease: a third of the lease from
    /// now, with a fleet; never without one.
    fn first_renewal(&self) -> Option<Instant> {
        self.fleet.as_ref().map(|_| Instant::now() + self.job_lease / 3)
    }

    /// Sleeps until `poll_at`, renewing the job's lease at `renew_at` on the way
    /// (a fleet's replica only: `renew_at` is then `Some`). Returns early to poll
    /// at once when a vendor callback nudges the job; [`Wake::Stop`] when this
    /// replica stops (its lease released for another) or the lease is another's.
    async fn wait_for_poll(&self, id: &str, poll_at: Instant, renew_at: &mut Option<Instant>, nudge: &Notify) -> Wake {
        let renew_every = self.job_lease / 3;
        loop {
            let wake_at = renew_at.map_or(poll_at, |renew| renew.min(poll_at));
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = nudge.notified() => {
                    tracing::debug!(summary_id = %id, "vendor callback: polling now");
                    return Wake::Poll;
                }
                () = self.stop.cancelled() => {
                    // Hand the job over: another replica takes it at once.
                    if let Some(fleet) = &self.fleet {
                        let _ = fleet.release_lease(id).await;
                    }
                    return Wake::Stop;
                }
            }
            if let (Some(fleet), Some(at)) = (&self.fleet, renew_at.as_mut())
                && Instant::now() >= *at
            {
                *at = Instant::now() + renew_every;
                match fleet.renew_lease(id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(summary_id = %id, "the job's lease is another replica's now (or the job ended); not polling it here");
                        return Wake::Stop;
                    }
                    // Nobody can take it while the store is down: keep polling.
                    Err(e) => tracing::debug!(summary_id = %id, error = %e, "could not renew a job's lease"),
                }
            }
            if Instant::now() >= poll_at {
                return Wake::Poll;
            }
        }
    }

    /// Stores the final resource, queues its webhooks and wakes its waiters.
    async fn finish(&self, job: &Job, provider: &Provider, end: End) {
        let now = SystemTime::now();
        let created = UNIX_EPOCH + Duration::from_millis(job.created_at_ms);
        let status = if matches!(end, End::Completed(_)) { "done" } else { "failed" };
        metrics::counter!(crate::metrics::JOBS_FINISHED, "provider" => metrics::SharedString::from(std::sync::Arc::clone(provider.name_arc())), "status" => status).increment(1);
        let (resource, ttl) = match end {
            End::Completed(completed) => {
                let mut r = completed_resource(&job.id, provider, &job.request, completed, now, self.summary_ttl);
                r.created_at = rfc3339(created);
                r.updated_at = rfc3339(now);
                (r, self.summary_ttl)
            }
            End::Failed(error) => (
                failed_resource(&job.id, provider, &job.request, created, error, now, self.failure_ttl),
                self.failure_ttl,
            ),
        };
        let name: Arc<str> = Arc::from(provider.name());
        let Ok(stored) = stored(&name, &resource) else {
            tracing::error!(summary_id = %job.id, "could not serialize a final resource");
            return;
        };
        let give_up = Instant::now() + FINISH_RETRY_FOR;
        let mut backoff = Duration::from_millis(200);
        let deliveries = loop {
            match self.store.finish_job(&job.id, stored.clone(), ttl).await {
                Ok(deliveries) => break deliveries,
                Err(e) if Instant::now() + backoff < give_up => {
                    tracing::warn!(summary_id = %job.id, error = %e, "could not store a finished job; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        // The job stays pending in the store; whoever takes its lease ends it.
                        () = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Still pending in the store: its lease lapses and a replica polls it again.
                    tracing::error!(summary_id = %job.id, error = %e, "could not store a finished job; leaving it to be polled again");
                    return;
                }
            }
        };
        tracing::info!(summary_id = %job.id, provider = %job.provider, status = ?resource.status, webhooks = deliveries.len(), "job ended");
        self.waiters.publish(&job.id, &stored);
        if !deliveries.is_empty() {
            self.outbox_wake.notify_one();
        }
    }
}

/// The wait before the next poll: the interval, or after `failures` consecutive
/// vendor errors the interval doubled per error up to `poll_backoff_max`; then
/// jittered to [2/3, 5/3] of that so many jobs do not poll in step.
pub fn poll_delay(policy: &JobPolicy, failures: u32) -> Duration {
    let base = if failures == 0 {
        policy.poll_interval
    } else {
        policy.poll_interval.saturating_mul(1 << failures.min(16)).min(policy.poll_backoff_max)
    };
    let jittered = base.mul_f64(2.0 / 3.0 + fastrand::f64());
    if failures == 0 { jittered } else { jittered.min(policy.poll_backoff_max) }
}

/// The tokio instant of a wall-clock time in ms since the epoch (now if past).
fn instant_of(unix_ms: u64) -> Instant {
    let target = UNIX_EPOCH + Duration::from_millis(unix_ms);
    Instant::now() + target.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a fleet there is no lease to renew, so a poller's wait lasts until
    /// its poll, however long after a third of `job_lease` that is. (It used to
    /// keep a renewal instant that passed after a third of the lease and was
    /// never moved on: every wait from then on returned at once, a busy loop
    /// burning a core per pending job until the next poll.) On paused time the
    /// clock only moves when every task is idle, so a spinning wait never sees
    /// its poll: the wall-clock watchdog below fails the test instead of hanging.
    #[test]
    fn without_a_fleet_the_wait_between_polls_sleeps() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
            let Ok(runtime) = runtime else { return };
            let woke_after = runtime.block_on(async {
                let mut config = Config::default();
                config.store.job_lease = Duration::from_secs(3);
                let stores = Stores::from_config(&config.store, "test").expect("the embedded store");
                let jobs = Jobs::new(
                    &stores,
                    Arc::new(Waiters::default()),
                    Arc::new(Notify::new()),
                    CancellationToken::new(),
                    &config,
                );
                let nudge = Notify::new();
                let start = Instant::now();
                // Far past a third of the lease, several times over.
                let poll_at = start + Duration::from_secs(60);
                let mut renew_at = jobs.first_renewal();
                assert!(matches!(jobs.wait_for_poll("sum_x", poll_at, &mut renew_at, &nudge).await, Wake::Poll));
                assert_eq!(renew_at, None);
                Instant::now() - start
            });
            let _ = done_tx.send(woke_after);
        });
        let woke_after = done_rx.recv_timeout(Duration::from_secs(20)).expect("the wait ended (it did not spin)");
        assert_eq!(woke_after, Duration::from_secs(60));
    }

    #[test]
    fn poll_delays_are_jittered_and_back_off_to_the_cap() {
        let policy = JobPolicy {
            poll_interval: Duration::from_secs(3),
            poll_backoff_max: Duration::from_secs(60),
            job_timeout: Duration::from_secs(600),
        };
        for _ in 0..1000 {
            let d = poll_delay(&policy, 0);
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(5), "{d:?}");
            let d = poll_delay(&policy, 2); // 12 s base
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(20), "{d:?}");
            assert!(poll_delay(&policy, 30) <= Duration::from_secs(60));
        }
    }
}
