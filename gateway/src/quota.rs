//! Quotas: a caller's allowance of requests per UTC day or month, besides its
//! rate limit (`auth.keys.<name>.quota`, optionally per provider within it).
//!
//! A request is counted when it is admitted: a `POST /v1/summaries` or
//! `POST /v1/questions` that passed validation, whatever the vendor then
//! answers; a cache hit only if the caller's `count_cache_hits` (default) says
//! so. Reads, polls and lists are never counted. Every quota that applies (the
//! caller's, the provider's within it) must allow the request, and it is then
//! counted against all of them, or against none.
//!
//! Periods are the UTC calendar: a day resets at 00:00 UTC, a month on the 1st
//! at 00:00 UTC, on this replica's clock (replicas' clocks agree to well under
//! a second; a request in that second may count for either period).
//!
//! **Fleet-wide with a shared store**: one script checks and counts every quota
//! of the request in one round trip ([`Fleet::charge_quota`]), so N replicas
//! allow the quota once, not N times. Once a quota is spent, this replica
//! remembers it until the reset and refuses without asking the store: counts
//! only grow within a period, so that answer is exact. **Fail-open to local
//! counts**: while the store does not answer, each replica holds the caller to
//! the quota on its own count (the fleet to at most N× it), as the rate limit
//! does. Without a shared store the local count is the count.
//!
//! Answers carry the quota in the IETF draft's fields (draft-ietf-httpapi-
//! ratelimit-headers): `RateLimit-Policy: "quota";q=10000;w=86400` and
//! `RateLimit: "quota";r=9958;t=3600` (a provider's quota is named
//! `"quota-<provider>"`); over it, 429 `quota_exceeded` with `Retry-After`
//! until the reset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use gateway_config::QuotaPeriod;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::error::ApiError;
use crate::middleware::auth::Caller;
use crate::store::{Fleet, QuotaCounter, QuotaVerdict};
use crate::summaries::CacheStatus;

static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static STATE: HeaderName = HeaderName::from_static("ratelimit");

/// The quotas of every caller: counted here, and in the shared store if any.
pub struct Quotas {
    fleet: Option<Arc<dyn Fleet>>,
    /// Caller and scope → this period's count. Bounded by the configuration:
    /// one entry per configured quota.
    local: Mutex<HashMap<String, Local>>,
}

/// One quota's count on this replica.
#[derive(Debug, Clone, Copy, Default)]
struct Local {
    /// Start of the period counted (unix seconds): another period starts at zero.
    period: i64,
    /// Requests this replica admitted in the period (with a shared store: its
    /// share, for fail-open; without: the count).
    count: u64,
    /// The shared store said the quota is spent for this period.
    spent: bool,
}

/// One quota as it applies to a request.
#[derive(Debug, Clone)]
struct Scope {
    /// `quota` or `quota-<provider>`: the policy's name in the headers.
    policy: String,
    /// `all` or `p:<provider>`: the counter's name in the store.
    counter: &'static str,
    provider: Option<String>,
    limit: u64,
    per: QuotaPeriod,
    period: Period,
}

/// A calendar period in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    pub reset: Timestamp,
}

impl Period {
    /// The day or month `now` is in, in UTC.
    pub fn of(per: QuotaPeriod, now: Timestamp) -> Self {
        let date = now.to_zoned(TimeZone::UTC).date();
        let (first, next) = match per {
            QuotaPeriod::Day => (date, date.tomorrow()),
            QuotaPeriod::Month => (date.first_of_month(), date.last_of_month().tomorrow()),
        };
        let midnight = |d: jiff::civil::Date| d.to_zoned(TimeZone::UTC).map(|z| z.timestamp());
        // Only past 9999-12-31 would there be no next period.
        let start = midnight(first).unwrap_or(now);
        let reset = next.and_then(midnight).unwrap_or(Timestamp::MAX);
        Self { start, reset }
    }

    /// Whole seconds from `now` until the reset, at least 1.
    fn secs_until_reset(&self, now: Timestamp) -> u64 {
        let ms = self.reset.as_millisecond().saturating_sub(now.as_millisecond()).max(0);
        u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1)
    }

    fn window_secs(&self) -> i64 {
        self.reset.as_second() - self.start.as_second()
    }

    /// The period's name in a store key: `d2026-12-04` or `m2026-12`.
    fn id(&self, per: QuotaPeriod) -> String {
        let format = match per {
            QuotaPeriod::Day => "d%Y-%m-%d",
            QuotaPeriod::Month => "m%Y-%m",
        };
        self.start.to_zoned(TimeZone::UTC).strftime(format).to_string()
    }
}

/// Where a request stands against its quotas: for the response's headers.
#[derive(Debug, Clone, Default)]
pub struct QuotaUse {
    /// Per quota: policy name, limit, window (s), remaining, seconds to reset.
    quotas: Vec<(String, u64, i64, u64, u64)>,
}

impl QuotaUse {
    /// Adds `RateLimit-Policy` and `RateLimit` (the IETF draft's fields).
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.quotas.is_empty() {
            return;
        }
        let policy = self.quotas.iter().map(|(name, q, w, _, _)| format!("\"{name}\";q={q};w={w}"));
        let state = self.quotas.iter().map(|(name, _, _, r, t)| format!("\"{name}\";r={r};t={t}"));
        for (header, value) in [(&POLICY, policy.collect::<Vec<_>>()), (&STATE, state.collect())] {
            if let Ok(value) = HeaderValue::try_from(value.join(", ")) {
                headers.insert(header.clone(), value);
            }
        }
    }
}

impl Quotas {
    /// `fleet`: the fleet-wide counts of a shared store; none: local counts alone.
    pub fn new(fleet: Option<Arc<dyn Fleet>>) -> Self {
        Self { fleet, local: Mutex::new(HashMap::new()) }
    }

    /// Counts one request of `caller` to `provider` (answered from the store
    /// or not, `cache`) against its quotas; over one, 429 `quota_exceeded`.
    /// Nothing to count: an empty [`QuotaUse`].
    pub async fn charge(&self, caller: &Caller, provider: &str, cache: CacheStatus) -> Result<QuotaUse, ApiError> {
        self.charge_at(caller, provider, cache, Timestamp::now()).await
    }

    async fn charge_at(
        &self,
        caller: &Caller,
        provider: &str,
        cache: CacheStatus,
        now: Timestamp,
    ) -> Result<QuotaUse, ApiError> {
        let Some(quota) = caller.quota.as_ref() else { return Ok(QuotaUse::default()) };
        if cache == CacheStatus::Hit && !quota.count_cache_hits {
            return Ok(QuotaUse::default());
        }
        let mut scopes = vec![Scope {
            policy: "quota".to_owned(),
            counter: "all",
            provider: None,
            limit: quota.requests,
            per: quota.per,
            period: Period::of(quota.per, now),
        }];
        if let Some(own) = quota.providers.get(provider) {
            scopes.push(Scope {
                policy: format!("quota-{provider}"),
                counter: "p",
                provider: Some(provider.to_owned()),
                limit: own.requests,
                per: own.per,
                period: Period::of(own.per, now),
            });
        }
        // A quota the store said is spent, or (alone) this replica's count.
        if let Some(spent) = self.locally_spent(&caller.name, &scopes) {
            return Err(Self::exceeded(caller, &scopes[spent], now));
        }
        let used = match &self.fleet {
            Some(fleet) => {
                let counters: Vec<QuotaCounter> = scopes
                    .iter()
                    .map(|s| QuotaCounter {
                        name: match &s.provider {
                            Some(p) => format!("{}:{p}:{}", s.counter, s.period.id(s.per)),
                            None => format!("{}:{}", s.counter, s.period.id(s.per)),
                        },
                        limit: s.limit,
                        reset_ms: s.period.reset.as_millisecond(),
                    })
                    .collect();
                match fleet.charge_quota(&caller.name, &counters).await {
                    Ok(QuotaVerdict::Counted { used }) => {
                        self.count_locally(&caller.name, &scopes);
                        used
                    }
                    Ok(QuotaVerdict::Spent { index }) => {
                        let index = index.min(scopes.len() - 1);
                        self.mark_spent(&caller.name, &scopes[index]);
                        return Err(Self::exceeded(caller, &scopes[index], now));
                    }
                    // Fail-open: this replica's own count decides.
                    Err(_) => self.count_alone(caller, &scopes, now)?,
                }
            }
            None => self.count_alone(caller, &scopes, now)?,
        };
        let quotas = scopes
            .iter()
            .zip(used)
            .map(|(s, used)| {
                let remaining = s.limit.saturating_sub(used);
                (s.policy.clone(), s.limit, s.period.window_secs(), remaining, s.period.secs_until_reset(now))
            })
            .collect();
        Ok(QuotaUse { quotas })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This period's entry of `scope`, reset if the period changed.
    fn entry<'m>(local: &'m mut HashMap<String, Local>, caller: &str, scope: &Scope) -> &'m mut Local {
        let key = format!("{caller}\0{}", scope.policy);
        let start = scope.period.start.as_second();
        let entry = local.entry(key).or_default();
        if entry.period != start {
            *entry = Local { period: start, count: 0, spent: false };
        }
        entry
    }

    /// The index of a quota known to be spent without asking the store.
    fn locally_spent(&self, caller: &str, scopes: &[Scope]) -> Option<usize> {
        let mut local = self.entries();
        scopes.iter().position(|scope| {
            let entry = Self::entry(&mut local, caller, scope);
            entry.spent || (self.fleet.is_none() && entry.count >= scope.limit)
        })
    }

    fn mark_spent(&self, caller: &str, scope: &Scope) {
        Self::entry(&mut self.entries(), caller, scope).spent = true;
    }

    fn count_locally(&self, caller: &str, scopes: &[Scope]) {
        let mut local = self.entries();
        for scope in scopes {
            Self::entry(&mut local, caller, scope).count += 1;
        }
    }

    /// Checks and counts on this replica's counts alone: each quota's new count.
    fn count_alone(&self, caller: &Caller, scopes: &[Scope], now: Timestamp) -> Result<Vec<u64>, ApiError> {
        let mut local = self.entries();
        if let Some(spent) = scopes.iter().position(|s| Self::entry(&mut local, &caller.name, s).count >= s.limit) {
            drop(local);
            return Err(Self::exceeded(caller, &scopes[spent], now));
        }
        Ok(scopes
            .iter()
            .map(|scope| {
                let entry = Self::entry(&mut local, &caller.name, scope);
                entry.count += 1;
                entry.count
            })
            .collect())
    }

    fn exceeded(caller: &Caller, scope: &Scope, now: Timestamp) -> ApiError {
        let retry_after = scope.period.secs_until_reset(now);
        // The caller-wide quota has an empty `provider` label: no provider name can take it.
        let provider = scope.provider.as_deref().unwrap_or("");
        tracing::info!(caller = &*caller.name, provider, retry_after_secs = retry_after, "quota exceeded");
        metrics::counter!(crate::metrics::QUOTA_EXCEEDED, "caller" => caller.name.to_string(), "provider" => provider.to_owned())
            .increment(1);
        ApiError::QuotaExceeded(Box::new(Exceeded {
            policy: scope.policy.clone(),
            provider: scope.provider.clone(),
            limit: scope.limit,
            per: scope.per,
            window: scope.period.window_secs(),
            retry_after: Duration::from_secs(retry_after),
        }))
    }
}

/// A spent quota: what 429 `quota_exceeded` says.
#[derive(Debug, Clone)]
pub struct Exceeded {
    policy: String,
    provider: Option<String>,
    limit: u64,
    per: QuotaPeriod,
    window: i64,
    pub retry_after: Duration,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.per {
            QuotaPeriod::Day => "day (UTC)",
            QuotaPeriod::Month => "month (UTC)",
        };
        match &self.provider {
            Some(p) => {
                write!(f, "this API key has used its quota of {} requests per {per} on provider `{p}`", self.limit)?;
            }
            None => write!(f, "this API key has used its quota of {} requests per {per}", self.limit)?,
        }
        write!(f, "; it resets in {} s", self.retry_after.as_secs())
    }
}

impl Exceeded {
    /// `RateLimit-Policy` and `RateLimit` of the spent quota (nothing remaining).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let used =
            QuotaUse { quotas: vec![(self.policy.clone(), self.limit, self.window, 0, self.retry_after.as_secs())] };
        used.apply(headers);
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
pub(crate) mod tests;
