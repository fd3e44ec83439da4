//! Coordination of the replicas: flights, job leases, nudges and the fleet-wide rate limit.

use std::time::Duration;

use async_trait::async_trait;
use providers::time::ttl_ms;
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::codec::{decode_summary, encode_event};
use crate::store::{EventSink, Fleet, FlightClaim, QuotaCounter, QuotaVerdict, RateVerdict, StoreError, StoreEvent};

#[async_trait]
impl Fleet for RedisStore {
    async fn claim_flight(&self, id: &str, ttl: Duration) -> Result<FlightClaim, StoreError> {
        let mut conn = self.conn()?;
        let answer: Vec<u8> = self
            .run(
                self.scripts
                    .claim_flight
                    .key(self.summary_key(id))
                    .key(self.key(id, "flight"))
                    .arg(&self.replica)
                    .arg(ttl_ms(ttl))
                    .invoke_async(&mut conn),
            )
            .await?;
        match answer.split_first() {
            Some((b'S', stored)) => Ok(FlightClaim::Stored(decode_summary(stored)?)),
            Some((b'W', _)) => Ok(FlightClaim::Won),
            Some((b'H', pttl)) => {
                let ms = std::str::from_utf8(pttl).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
                Ok(FlightClaim::Held(Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(10))))
            }
            _ => Err(StoreError("redis: unexpected answer to a flight claim".into())),
        }
    }

    async fn end_flight(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let message = encode_event(&StoreEvent::FlightEnded { id: id.to_owned() });
        self.run(
            self.scripts
                .end_flight
                .key(self.key(id, "flight"))
                .arg(&self.replica)
                .arg(self.channel())
                .arg(message)
                .invoke_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn acquire_lease(&self, id: &str) -> Result<bool, StoreError> {
        self.lease(&self.scripts.acquire_lease, id).await
    }

    async fn renew_lease(&self, id: &str) -> Result<bool, StoreError> {
        self.lease(&self.scripts.renew_lease, id).await
    }

    async fn release_lease(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        self.run(
            self.scripts
                .release_lease
                .key(self.jobs_key(&format!("lease:{id}")))
                .arg(&self.replica)
                .invoke_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn nudge(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let message = encode_event(&StoreEvent::Nudge { id: id.to_owned() });
        self.run(redis::cmd("PUBLISH").arg(self.channel()).arg(message).query_async::<i64>(&mut conn)).await.map(drop)
    }

    fn subscribe(&self, sink: EventSink, shutdown: CancellationToken) {
        self.spawn_subscription(sink, shutdown);
    }

    async fn rate_limit(&self, key: &str, per_second: f64, burst: u32) -> Result<RateVerdict, StoreError> {
        let interval_us = (1_000_000.0 / per_second).max(1.0);
        let mut conn = self.conn()?;
        let (allowed, value): (i64, i64) = self
            .run(
                self.scripts
                    .gcra
                    .key(self.key(&format!("rl:{key}"), "gcra"))
                    .arg(interval_us)
                    .arg(burst)
                    .invoke_async(&mut conn),
            )
            .await?;
        let value = u64::try_from(value).unwrap_or(0);
        Ok(if allowed == 1 {
            RateVerdict::Allowed { remaining: value }
        } else {
            RateVerdict::Limited { retry_after: Duration::from_micros(value) }
        })
    }

    async fn charge_quota(&self, caller: &str, counters: &[QuotaCounter]) -> Result<QuotaVerdict, StoreError> {
        let mut conn = self.conn()?;
        // One hash tag per caller: every counter of a request in one slot, one script.
        let tag = format!("quota:{caller}");
        let mut invocation = self.scripts.quota.prepare_invoke();
        for counter in counters {
            invocation.key(self.key(&tag, &counter.name)).arg(counter.limit).arg(counter.reset_ms);
        }
        let reply: Vec<i64> = self.run(invocation.invoke_async(&mut conn)).await?;
        match reply.split_first() {
            Some((1, used)) => {
                Ok(QuotaVerdict::Counted { used: used.iter().map(|&n| u64::try_from(n).unwrap_or(0)).collect() })
            }
            Some((0, [index, ..])) => Ok(QuotaVerdict::Spent { index: usize::try_from(*index - 1).unwrap_or(0) }),
            _ => Err(StoreError(format!("unexpected reply of the quota script: {reply:?}"))),
        }
    }
}

impl RedisStore {
    async fn lease(&self, script: &Script, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let held: i64 = self
            .run(
                script
                    .key(self.jobs_key("jobs"))
                    .key(self.jobs_key(&format!("lease:{id}")))
                    .arg(id)
                    .arg(&self.replica)
                    .arg(ttl_ms(self.job_lease))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }
}
