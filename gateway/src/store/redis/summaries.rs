//! Summaries (`P:{<id>}:summary`) and the store's health.

use std::time::Duration;

use async_trait::async_trait;
use providers::time::ttl_ms;

use super::RedisStore;
use super::codec::{decode_summary, encode_summary};
use super::describe;
use crate::store::{StoreError, StoreHealth, StoredSummary, SummaryStore};

#[async_trait]
impl SummaryStore for RedisStore {
    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError> {
        let key = self.summary_key(id);
        let mut conn = self.conn()?;
        let raw: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(&key).query_async(&mut conn)).await?;
        raw.map(|r| decode_summary(&r)).transpose()
    }

    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        let key = self.summary_key(id);
        let mut conn = self.conn()?;
        self.run(
            redis::cmd("SET").arg(&key).arg(encode_summary(&summary)).arg("PX").arg(ttl_ms(ttl)).query_async(&mut conn),
        )
        .await
    }
}

#[async_trait]
impl StoreHealth for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn degraded(&self) -> Option<String> {
        self.breaker.degraded()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        // Not behind the breaker: readiness must see the moment Redis is back.
        match tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => {
                self.breaker.reset();
                Ok(())
            }
            Ok(Err(e)) => Err(self.breaker.fail(&describe(&e))),
            Err(_) => Err(self.breaker.fail("no answer to PING")),
        }
    }
}
