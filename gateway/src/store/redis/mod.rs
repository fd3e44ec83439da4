//! The shared store: one Redis for every replica.
//!
//! # Key layout
//! `P` is `store.key_prefix` (default `sg`). The part in braces is the Redis
//! Cluster hash tag: every multi-key operation (script or transaction) touches
//! keys of one tag only, so each runs within one slot.
//!
//! | key | type | what | expires |
//! |---|---|---|---|
//! | `P:{<summary id>}:summary` | string | the resource, pre-serialized (`<status><provider>\n<json>`) | `summary_ttl`, `failure_ttl`, or the job's deadline + 10 min while pending |
//! | `P:{<summary id>}:flight` | string | the replica making the vendor call for it | the provider's timeout + margin |
//! | `P:{jobs}:jobs` | hash | summary id → pending job (JSON) | when the job ends |
//! | `P:{jobs}:callbacks:<summary id>` | set | callers' webhook targets (JSON; the key keeps its first name) | when the job ends |
//! | `P:{jobs}:lease:<summary id>` | string | the replica polling the job | `job_lease`, renewed every third of it |
//! | `P:{jobs}:outbox` | hash | delivery id → webhook delivery (JSON) | after its 2xx or when given up |
//! | `P:{jobs}:due` | sorted set | delivery id → when it is due / its lease ends (ms) | with the delivery |
//! | `P:{q:<provider>:<conversation>}:ledger` | hash | question id → `<seq>|<question JSON>` | `question_ttl` |
//! | `P:{quota:<caller>}:all:<period>`, `P:{quota:<caller>}:p:<provider>:<period>` | string | the caller's requests counted in a quota period (`d2026-12-04`, `m2026-12`), over all providers / on one | a minute after the period ends |
//! | `P:{rl:<caller>}:gcra` | string | the caller's GCRA theoretical arrival time (µs, Redis clock) | when it is in the past |
//! | `P:{shared:<name>}` | string / sorted set | provider state shared by the fleet (Yeastar token, its renewal lock, ElevateAI slots) | the token's life / the lock's / each slot's |
//!
//! Events between replicas are published on the channel `P:events` (on a Redis
//! Cluster too: it forwards every `PUBLISH` to all its nodes, and the scripts that
//! publish run in their keys' slots, where a sharded channel could not be).
//!
//! On a Redis Cluster the `{jobs}` tag puts the job table, its leases and the
//! outbox on one master; README.md ("Redis Cluster") gives the load that puts on
//! it and the number of pending jobs it bounds.
//!
//! # Failure handling
//! Every command has `store.timeout`. A command that fails or times out marks the
//! store down for [`breaker::BREAKER`]: meanwhile commands fail at once instead of
//! each waiting for the timeout, and `/readyz` reports `degraded`. The connection
//! is re-established in the background (redis' `ConnectionManager`).
//!
//! # Files
//! One per store role ([`summaries`]: summaries and health, [`jobs`], [`outbox`],
//! [`ledgers`], [`fleet`]: flights, leases, nudges, the fleet-wide rate limit and quotas,
//! [`events`]: the subscription, [`vendor_state`]: what providers share), the
//! [`breaker`], the [`codec`] of stored values and events, and the Lua scripts
//! in `scripts/`, one file each.

mod breaker;
mod codec;
mod connect;
mod events;
mod fleet;
mod jobs;
mod ledgers;
mod outbox;
mod primary;
mod summaries;
mod vendor_state;

use std::sync::Arc;
use std::time::Duration;

use gateway_config::StoreConfig;
use redis::Script;

use self::breaker::Breaker;
use self::connect::{Conn, describe, reason};
use self::primary::Primary;
use super::StoreError;

/// The shared Redis store of one replica.
pub struct RedisStore {
    /// The Redis commands go to (followed through failovers with Sentinel).
    primary: Arc<Primary>,
    prefix: String,
    /// This replica's name in leases and flights.
    replica: String,
    job_lease: Duration,
    timeout: Duration,
    breaker: Breaker,
    scripts: Scripts,
}

struct Scripts {
    claim_flight: Script,
    end_flight: Script,
    create_job: Script,
    add_webhook: Script,
    finish_job: Script,
    acquire_lease: Script,
    renew_lease: Script,
    release_lease: Script,
    claim_deliveries: Script,
    retry_delivery: Script,
    merge_questions: Script,
    gcra: Script,
    quota: Script,
    unlock: Script,
    acquire_slot: Script,
}

impl Scripts {
    /// Each script is a file of its own in `scripts/`, its KEYS and ARGV described at its top.
    fn new() -> Self {
        Self {
            claim_flight: Script::new(include_str!("scripts/claim_flight.lua")),
            end_flight: Script::new(include_str!("scripts/end_flight.lua")),
            create_job: Script::new(include_str!("scripts/create_job.lua")),
            add_webhook: Script::new(include_str!("scripts/add_webhook.lua")),
            finish_job: Script::new(include_str!("scripts/finish_job.lua")),
            acquire_lease: Script::new(include_str!("scripts/acquire_lease.lua")),
            renew_lease: Script::new(include_str!("scripts/renew_lease.lua")),
            release_lease: Script::new(include_str!("scripts/release_lease.lua")),
            claim_deliveries: Script::new(include_str!("scripts/claim_deliveries.lua")),
            retry_delivery: Script::new(include_str!("scripts/retry_delivery.lua")),
            merge_questions: Script::new(include_str!("scripts/merge_questions.lua")),
            gcra: Script::new(include_str!("scripts/gcra.lua")),
            quota: Script::new(include_str!("scripts/quota.lua")),
            unlock: Script::new(include_str!("scripts/unlock.lua")),
            acquire_slot: Script::new(include_str!("scripts/acquire_slot.lua")),
        }
    }
}

impl RedisStore {
    /// Builds the client of `config` without connecting: the URL, user and TLS files are usable.
    pub fn check(config: &StoreConfig) -> Result<(), String> {
        if config.sentinel.is_some() {
            Ok(())
        } else if let Some(seeds) = config.cluster_seeds() {
            primary::cluster_clients(config, &seeds).map(drop)
        } else {
            connect::client(config).map(drop)
        }
    }

    /// A store on `config.redis_url`, or on the primary `config.sentinel` names.
    /// Connects lazily: a gateway whose Redis is down starts, degraded, and
    /// connects when it is back.
    pub fn new(config: &StoreConfig, replica: &str) -> Result<Self, String> {
        Ok(Self {
            primary: Primary::new(config)?,
            prefix: config.key_prefix.clone(),
            replica: replica.to_owned(),
            job_lease: config.job_lease,
            timeout: config.timeout,
            breaker: Breaker::default(),
            scripts: Scripts::new(),
        })
    }

    fn key(&self, tag: &str, rest: &str) -> String {
        if rest.is_empty() { format!("{}:{{{tag}}}", self.prefix) } else { format!("{}:{{{tag}}}:{rest}", self.prefix) }
    }

    fn summary_key(&self, id: &str) -> String {
        self.key(id, "summary")
    }

    fn jobs_key(&self, rest: &str) -> String {
        self.key("jobs", rest)
    }

    fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Runs one Redis exchange with the store's timeout and breaker.
    async fn run<T, F>(&self, exchange: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.is_open() {
            metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => "breaker_open").increment(1);
            return Err(StoreError("redis: unavailable (failing recently)".into()));
        }
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => {
                self.breaker.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => reason(&e)).increment(1);
                self.primary.failed(&e);
                Err(self.breaker.fail(&describe(&e)))
            }
            Err(_) => {
                metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => "timeout").increment(1);
                Err(self.breaker.fail(&format!("no answer within {}", humantime::format_duration(self.timeout))))
            }
        }
    }

    /// A connection to the primary or the cluster (cheap: a handle on multiplexed connections).
    fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.primary.node()?.conn.clone())
    }
}

#[cfg(test)]
mod tests;
