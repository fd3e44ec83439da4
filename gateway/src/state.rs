//! The application's state: everything the handlers share ([`App`]), how it
//! is built from the configuration, and its lifecycle (background work, drain).
//! The router that serves it is assembled in [`crate::app`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gateway_config::Config;
use providers::{Provider, Status};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;
use providers::outbound::AnswerBudget;

use crate::jobs::Jobs;
use crate::live::{Live, LiveConfig};
use crate::middleware::auth::Keys;
use crate::middleware::drain::Draining;
use crate::middleware::redact::KnownKeys;
use crate::questions::Questions;
use crate::quota::Quotas;
use crate::store::{StoreEvent, Stores};
use crate::summaries::{Summaries, flight_ttl};
use crate::waiters::Waiters;
use crate::webhooks::Webhooks;

/// How often a draining replica looks whether its background work is done.
const BACKGROUND_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Everything the handlers share.
pub struct App {
    /// The configuration the process started with: read here only for what a
    /// reload does not change ([`crate::live::RESTART_ONLY`]); the rest is in [`Self::live`].
    pub config: Config,
    /// Callers and providers as last (re)loaded; a request uses one snapshot.
    pub live: LiveConfig,
    /// Every caller key configured since start, for redaction.
    pub known_keys: KnownKeys,
    /// One budget for every provider's buffered answers, reloaded ones too.
    budget: AnswerBudget,
    /// One reload at a time.
    reloading: std::sync::Mutex<()>,
    /// The store, by role; [`Stores::fleet`] only when other replicas share it.
    pub stores: Stores,
    pub summaries: Arc<Summaries>,
    /// Pending vendor jobs and their pollers.
    pub jobs: Arc<Jobs>,
    /// Questions about conversations and their ledger.
    pub questions: Arc<Questions>,
    /// Signs and delivers callers' webhooks (the worker runs while [`crate::run`] serves).
    pub webhooks: Arc<Webhooks>,
    /// Callers' daily and monthly quotas (fleet-wide with a shared store).
    pub quotas: Arc<Quotas>,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub draining: Draining,
    /// Ends of other replicas' flights (summaries' and questions'), fed by the store's events.
    flight_ends: Arc<Waiters<()>>,
    /// Cancelled when the process stops: everything in the background ends.
    shutdown: CancellationToken,
    /// Cancelled at SIGTERM: long-polls answer with the current state at once.
    waits_end: CancellationToken,
    /// Stops the webhook worker claiming deliveries (see [`Self::finish_background`]).
    webhooks_stop: CancellationToken,
    /// `/openapi.json`, serialized once when the router is built.
    pub openapi: OnceLock<Bytes>,
    /// This process's name in a shared store's leases and flights (unique per start).
    pub replica: String,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub fingerprint: String,
    /// Whether anything differed from the running configuration.
    pub changed: bool,
    /// Sections that changed but need a restart (their running values stay).
    pub needs_restart: Vec<&'static str>,
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Problems only the adapter can see, each with its path under `providers.<name>`.
    #[error("{}", .1.iter().map(|e| format!("providers.{}.{e}", .0)).collect::<Vec<_>>().join("\n"))]
    Provider(String, Vec<String>),
    #[error("{0}")]
    Webhooks(String),
    #[error("{0}")]
    Store(String),
}

impl App {
    /// Builds providers (HTTP clients, token state), the store and the keys.
    pub fn new(config: Config) -> Result<Arc<Self>, InitError> {
        // The metrics recorder, once per process, before anything records.
        crate::metrics::handle();
        let replica = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let stores = Stores::from_config(&config.store, &replica).map_err(InitError::Store)?;
        // One budget for every provider: it bounds what the process holds.
        let budget = AnswerBudget::new(config.server.vendor_buffer_bytes.get());
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.providers {
            let built = Provider::from_config_shared(provider, stores.vendor_state.clone(), &budget)
                .map_err(|e| InitError::Provider(name.clone(), e))?;
            providers.insert(name.clone(), Arc::new(built));
        }
        let shutdown = CancellationToken::new();
        let (waiters, flight_ends, outbox_wake) =
            (Arc::new(Waiters::default()), Arc::default(), Arc::new(Notify::new()));
        let jobs = Arc::new(Jobs::new(
            &stores,
            Arc::clone(&waiters),
            Arc::clone(&outbox_wake),
            shutdown.child_token(),
            &config,
        ));
        let waits_end = shutdown.child_token();
        let summaries = Arc::new(Summaries::new(
            &stores,
            Arc::clone(&jobs),
            waiters,
            Arc::clone(&flight_ends),
            waits_end.clone(),
            &config,
        ));
        let questions =
            Questions::new(&stores, config.store.question_ttl, Arc::clone(&flight_ends), flight_ttl(&config));
        let webhooks = Webhooks::new(&config, Arc::clone(&stores.outbox), outbox_wake).map_err(InitError::Webhooks)?;
        let keys = Arc::new(Keys::from_config(&config.auth));
        let known_keys = keys.known_keys();
        let live = Live { generation: 1, fingerprint: config.fingerprint(), config: config.clone(), providers, keys };
        crate::metrics::config_loaded(live.generation, &live.fingerprint);
        Ok(Arc::new(Self {
            questions: Arc::new(questions),
            webhooks: Arc::new(webhooks),
            quotas: Arc::new(Quotas::new(stores.fleet.clone())),
            live: Arc::new(ArcSwap::from_pointee(live)),
            known_keys,
            budget,
            reloading: std::sync::Mutex::new(()),
            stores,
            summaries,
            jobs,
            draining: Draining::default(),
            flight_ends,
            webhooks_stop: shutdown.child_token(),
            waits_end,
            shutdown,
            openapi: OnceLock::new(),
            replica,
            config,
        }))
    }

    /// The live configuration now (a request takes it once, on arrival).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in `config` for new requests, if everything in it is valid (what
    /// `check-config` checks, and what only the adapters can): otherwise keeps
    /// the running configuration and returns every problem with its path.
    /// Changes to [`crate::live::RESTART_ONLY`] sections are reported and not applied.
    pub fn reload(&self, config: Config) -> Result<Reloaded, Vec<String>> {
        let _one = self.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = self.live.load_full();
        let vendor_state = self.stores.vendor_state.clone();
        let next = running.next(config, |p| Provider::from_config_shared(p, vendor_state.clone(), &self.budget));
        let (next, needs_restart) = match next {
            Ok(next) => next,
            Err(problems) => {
                metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => "rejected").increment(1);
                return Err(problems);
            }
        };
        let changed = next.generation != running.generation;
        let reloaded =
            Reloaded { generation: next.generation, fingerprint: next.fingerprint.clone(), changed, needs_restart };
        if changed {
            // Keys first: a new key is redacted from the first request that may send it.
            self.known_keys.add(next.keys.hashes());
            self.webhooks.set_secrets(&next.config.auth);
            crate::metrics::config_loaded(next.generation, &next.fingerprint);
            self.live.store(Arc::new(next));
        }
        metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => "applied").increment(1);
        Ok(reloaded)
    }

    /// Starts the background work: the webhook worker, and polling of jobs the
    /// store holds from before (a shared store). Stops on [`Self::stop_background`].
    pub fn start_background(self: &Arc<Self>) {
        crate::metrics::spawn_upkeep();
        tokio::spawn(Arc::clone(&self.webhooks).run(self.webhooks_stop.clone()));
        if let Some(fleet) = &self.stores.fleet {
            tracing::info!(replica = %self.replica, "shared store: coordinating with other replicas");
            // A store that cannot be used (wrong password, TLS refused) is said at
            // once, not at the first request; the gateway serves degraded meanwhile.
            let health = Arc::clone(&self.stores.health);
            tokio::spawn(async move {
                if let Err(e) = health.ping().await {
                    tracing::error!(error = %e, "the shared store does not answer at start-up: serving degraded (cache bypassed, asynchronous summaries refused) until it does");
                }
            });
            // Weak: the subscription must not keep the app alive after it stops.
            let app = Arc::downgrade(self);
            fleet.subscribe(
                Arc::new(move |event| {
                    if let Some(app) = app.upgrade() {
                        app.on_event(event);
                    }
                }),
                self.shutdown.clone(),
            );
            tokio::spawn(Arc::clone(&self.jobs).watch_orphaned(Arc::clone(&self.live)));
        } else {
            let app = Arc::clone(self);
            tokio::spawn(async move { app.jobs.resume(&app.live().providers).await });
        }
    }

    /// An event from another replica (shared store).
    fn on_event(self: &Arc<Self>, event: StoreEvent) {
        match event {
            StoreEvent::Final { id, summary } => {
                self.summaries.waiters.publish(&id, &summary);
                self.flight_ends.publish(&id, &());
            }
            StoreEvent::FlightEnded { id } => self.flight_ends.publish(&id, &()),
            StoreEvent::Nudge { id } => {
                self.jobs.nudge(&id);
            }
            StoreEvent::Resync => {
                // Events may have been missed: followers claim again, waiters read the store again.
                for id in self.flight_ends.ids() {
                    self.flight_ends.publish(&id, &());
                }
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    for id in this.summaries.waiters.ids() {
                        if let Ok(Some(now)) = this.stores.summaries.get_summary(&id).await
                            && now.status != Status::Pending
                        {
                            this.summaries.waiters.publish(&id, &now);
                        }
                    }
                });
            }
        }
    }

    /// Drain, step 1 (SIGTERM): `/readyz` turns 503 and long-polls, waiting
    /// and new, answer with the current state at once. Requests are still served.
    pub fn begin_drain(&self) {
        self.draining.begin();
        metrics::gauge!(crate::metrics::DRAINING).set(1.0);
        self.waits_end.cancel();
    }

    /// Drain, step 2 (no longer accepting): with a shared store, background
    /// work is handed over: pollers release their jobs' leases (another replica
    /// takes them at its next scan) and the webhook worker claims no more
    /// deliveries. With the embedded store nobody else could take it: it goes on.
    pub fn hand_over_background(&self) {
        if self.stores.shared() {
            self.jobs.stop();
            self.webhooks_stop.cancel();
        }
    }

    /// Drain, step 3 (in-flight requests answered): waits until `deadline`
    /// for webhook attempts under way to end and, with the embedded store, for
    /// the jobs it polls to end and their webhooks to go out; then stops
    /// everything in the background.
    pub async fn finish_background(&self, deadline: tokio::time::Instant) {
        self.hand_over_background();
        let shared = self.stores.shared();
        loop {
            let jobs = if shared { 0 } else { self.jobs.polling() };
            let deliveries = self.webhooks.busy(!shared).await;
            if jobs == 0 && !deliveries {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    jobs_pending = jobs,
                    deliveries_under_way = deliveries,
                    "drain time over with background work left; the embedded store does not keep it"
                );
                break;
            }
            tokio::time::sleep(BACKGROUND_CHECK_EVERY).await;
        }
        self.stop_background();
    }

    /// Cancelled when the process stops (for background tasks outside the app).
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Stops everything in the background at once: pollers, the webhook worker,
    /// the store's subscription, and answers long-polls with the current state.
    pub fn stop_background(&self) {
        self.shutdown.cancel();
    }
}
