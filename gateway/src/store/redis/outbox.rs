//! The webhook outbox (`P:{jobs}:outbox`, due times in `P:{jobs}:due`).

use async_trait::async_trait;

use super::RedisStore;
use super::codec::{from_json, to_json};
use crate::store::{Delivery, Outbox, StoreError};

#[async_trait]
impl Outbox for RedisStore {
    async fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn()?;
        let raw: Vec<String> = self
            .run(
                self.scripts
                    .claim_deliveries
                    .key(self.jobs_key("outbox"))
                    .key(self.jobs_key("due"))
                    .arg(now_ms)
                    .arg(lease_until_ms)
                    .arg(limit)
                    .invoke_async(&mut conn),
            )
            .await?;
        raw.iter().map(|d| from_json(d, "delivery")).collect()
    }

    async fn retry_delivery(&self, delivery: Delivery) -> Result<(), StoreError> {
        let json = to_json(&delivery)?;
        let mut conn = self.conn()?;
        self.run(
            self.scripts
                .retry_delivery
                .key(self.jobs_key("outbox"))
                .key(self.jobs_key("due"))
                .arg(&delivery.id)
                .arg(&json)
                .arg(delivery.next_attempt_ms)
                .invoke_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        self.run(
            redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(self.jobs_key("outbox"))
                .arg(id)
                .ignore()
                .cmd("ZREM")
                .arg(self.jobs_key("due"))
                .arg(id)
                .ignore()
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn next_delivery_ms(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn()?;
        let first: Vec<(String, f64)> = self
            .run(redis::cmd("ZRANGE").arg(self.jobs_key("due")).arg(0).arg(0).arg("WITHSCORES").query_async(&mut conn))
            .await?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "scores are ms since the epoch")]
        Ok(first.first().map(|(_, score)| *score as u64))
    }
}
