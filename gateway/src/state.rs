//! The application's state: everything the handlers share ([`App`]), how it
//! is built from the configuration, and its lifecycle (background work, drain).
//! The router that serves it is assembled in [`crate::app`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gateway_config::Config;
use providers::Provider;
use tokio_util::sync::CancellationToken;

use crate::middleware::auth::Keys;
use crate::middleware::drain::Draining;
use crate::questions::Questions;
use crate::store::{MemoryStore, RedisStore, Store};
use crate::summaries::Summaries;
use crate::webhooks::Webhooks;

/// How often a draining replica looks whether its background work is done.
const BACKGROUND_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    /// Provider name → provider.
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub summaries: Arc<Summaries>,
    /// Questions about conversations and their ledger.
    pub questions: Arc<Questions>,
    /// Signs and delivers callers' webhooks (the worker runs while [`crate::run`] serves).
    pub webhooks: Arc<Webhooks>,
    pub keys: Arc<Keys>,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub draining: Draining,
    /// Stops the webhook worker claiming deliveries (see [`Self::finish_background`]).
    webhooks_stop: CancellationToken,
    /// `/openapi.json`, serialized once when the router is built.
    pub openapi: OnceLock<Bytes>,
    /// This process's name in a shared store's leases and flights (unique per start).
    pub replica: String,
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
        let (store, shared): (Arc<dyn Store>, Option<Arc<dyn providers::SharedState>>) =
            if config.store.redis_url.is_some() {
                let redis = Arc::new(RedisStore::new(&config.store, &replica).map_err(InitError::Store)?);
                (Arc::clone(&redis) as Arc<dyn Store>, Some(redis as Arc<dyn providers::SharedState>))
            } else {
                (Arc::new(MemoryStore::new(config.store.max_bytes)), None)
            };
        // One budget for every provider: it bounds what the process holds.
        let budget = providers::outbound::AnswerBudget::new(config.server.vendor_buffer_bytes.get());
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.providers {
            let built = Provider::from_config_shared(provider, shared.clone(), &budget)
                .map_err(|e| InitError::Provider(name.clone(), e))?;
            providers.insert(name.clone(), Arc::new(built));
        }
        let summaries = Arc::new(Summaries::new(Arc::clone(&store), &config));
        let webhooks =
            Webhooks::new(&config, store, Arc::clone(&summaries.outbox_wake)).map_err(InitError::Webhooks)?;
        Ok(Arc::new(Self {
            questions: Arc::new(Questions::new(
                Arc::clone(summaries.store()),
                config.store.question_ttl,
                Arc::clone(&summaries.flight_ends),
                summaries.flight_ttl,
            )),
            webhooks: Arc::new(webhooks),
            keys: Arc::new(Keys::from_config(&config.auth)),
            providers,
            draining: Draining::default(),
            webhooks_stop: summaries.shutdown.child_token(),
            openapi: OnceLock::new(),
            replica,
            config,
            summaries,
        }))
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// Starts the background work: the webhook worker, and polling of jobs the
    /// store holds from before (a shared store). Stops on [`Self::stop_background`].
    pub fn start_background(self: &Arc<Self>) {
        crate::metrics::spawn_upkeep();
        let shutdown = self.summaries.shutdown.clone();
        tokio::spawn(Arc::clone(&self.webhooks).run(self.webhooks_stop.clone()));
        let store = self.summaries.store();
        if store.shared() {
            tracing::info!(replica = %self.replica, "shared store: coordinating with other replicas");
            // Weak: the subscription must not keep the app alive after it stops.
            let summaries = Arc::downgrade(&self.summaries);
            store.subscribe(
                Arc::new(move |event| {
                    if let Some(summaries) = summaries.upgrade() {
                        summaries.on_event(event);
                    }
                }),
                shutdown,
            );
            tokio::spawn(Arc::clone(&self.summaries).watch_orphaned_jobs(self.providers.clone()));
        } else {
            let app = Arc::clone(self);
            tokio::spawn(async move { app.summaries.resume_jobs(&app.providers).await });
        }
    }

    /// Drain, step 1 (SIGTERM): `/readyz` turns 503 and long-polls, waiting
    /// and new, answer with the current state at once. Requests are still served.
    pub fn begin_drain(&self) {
        self.draining.begin();
        metrics::gauge!(crate::metrics::DRAINING).set(1.0);
        self.summaries.waits_end.cancel();
    }

    /// Drain, step 2 (no longer accepting): with a shared store, background
    /// work is handed over: pollers release their jobs' leases (another replica
    /// takes them at its next scan) and the webhook worker claims no more
    /// deliveries. With the embedded store nobody else could take it: it goes on.
    pub fn hand_over_background(&self) {
        if self.summaries.store().shared() {
            self.summaries.jobs_stop.cancel();
            self.webhooks_stop.cancel();
        }
    }

    /// Drain, step 3 (in-flight requests answered): waits until `deadline`
    /// for webhook attempts under way to end and, with the embedded store, for
    /// the jobs it polls to end and their webhooks to go out; then stops
    /// everything in the background.
    pub async fn finish_background(&self, deadline: tokio::time::Instant) {
        self.hand_over_background();
        let shared = self.summaries.store().shared();
        loop {
            let jobs = if shared { 0 } else { self.summaries.polling() };
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

    /// Stops everything in the background at once: pollers, the webhook worker,
    /// the store's subscription, and answers long-polls with the current state.
    pub fn stop_background(&self) {
        self.summaries.shutdown.cancel();
    }
}
