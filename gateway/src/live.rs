//! The live configuration: the part a reload changes (callers with their keys,
//! limits, quotas and webhook secrets; providers with their mappings, timeouts
//! and concurrency caps), behind one atomic pointer ([`LiveConfig`]).
//!
//! Every `/v1` request loads one snapshot ([`Live`]) when it arrives and is
//! served from it to the end: a reload swaps the pointer for new requests, and
//! requests (and the jobs they started, which hold their `Arc<Provider>`) in
//! flight finish on the configuration they started with.
//!
//! The rest (`server`, `store`, `webhooks`, `telemetry`: listeners, connections,
//! the store's client, the webhook worker, the span exporter) is built once at
//! start: a reload that changes it reports "needs a restart" and keeps the
//! running values ([`RESTART_ONLY`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use gateway_config::Config;
use providers::Provider;

use crate::middleware::auth::Keys;

/// The configuration's sections that only a restart changes.
pub const RESTART_ONLY: &[&str] = &["server", "store", "webhooks", "telemetry"];

/// One generation of the live configuration.
pub struct Live {
    /// 1 at start, one more for every reload that changed something.
    pub generation: u64,
    /// [`Config::fingerprint`] of [`Self::config`].
    pub fingerprint: String,
    /// The effective configuration: the reloaded file, with the running values
    /// of the [`RESTART_ONLY`] sections.
    pub config: Config,
    /// Provider name → provider.
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub keys: Arc<Keys>,
}

/// The live configuration, shared by the router, the jobs service and reloads.
pub type LiveConfig = Arc<ArcSwap<Live>>;

impl Live {
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// The next generation from `new`, or every problem with its path.
    ///
    /// A provider whose configuration is unchanged is kept as it is (its token,
    /// concurrency slots, circuit breaker and connections go on); a changed or
    /// new one is built with `build`. A caller whose rate limit is unchanged
    /// keeps its limiter's state. Also returns the [`RESTART_ONLY`] sections
    /// `new` changes, which keep their running values.
    pub fn next(
        &self,
        mut new: Config,
        build: impl Fn(&gateway_config::ProviderConfig) -> Result<Provider, Vec<String>>,
    ) -> Result<(Self, Vec<&'static str>), Vec<String>> {
        let old = &self.config;
        let mut restart = Vec::new();
        keep_running("server", &mut new.server, &old.server, &mut restart);
        keep_running("store", &mut new.store, &old.store, &mut restart);
        keep_running("webhooks", &mut new.webhooks, &old.webhooks, &mut restart);
        keep_running("telemetry", &mut new.telemetry, &old.telemetry, &mut restart);
        let mut providers = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, config) in &new.providers {
            if old.providers.get(name) == Some(config)
                && let Some(running) = self.providers.get(name)
            {
                providers.insert(name.clone(), Arc::clone(running));
                continue;
            }
            match build(config) {
                Ok(provider) => {
                    providers.insert(name.clone(), Arc::new(provider));
                }
                Err(errors) => problems.extend(errors.into_iter().map(|e| format!("providers.{name}.{e}"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let keys = Arc::new(Keys::from_config_keeping(&new.auth, &self.keys));
        let fingerprint = new.fingerprint();
        let generation = if fingerprint == self.fingerprint { self.generation } else { self.generation + 1 };
        Ok((Self { generation, fingerprint, config: new, providers, keys }, restart))
    }
}

/// A [`RESTART_ONLY`] section: if `new` changes it, it is noted in `restart` and
/// the running value is put back.
fn keep_running<T: PartialEq + Clone>(
    section: &'static str,
    new: &mut T,
    running: &T,
    restart: &mut Vec<&'static str>,
) {
    if new != running {
        restart.push(section);
        new.clone_from(running);
    }
}
