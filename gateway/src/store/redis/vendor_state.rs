//! State the providers share across the fleet (`P:{shared:<name>}`): a vendor token, its renewal lock, concurrency slots.

use std::time::Duration;

use async_trait::async_trait;
use providers::time::ttl_ms;
use providers::{SharedError, SharedState};

use super::RedisStore;
use crate::store::StoreError;

impl RedisStore {
    fn shared_key(&self, name: &str) -> String {
        self.key(&format!("shared:{name}"), "")
    }
}

fn shared_error(e: StoreError) -> SharedError {
    SharedError(e.0)
}

#[async_trait]
impl SharedState for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedError> {
        let mut conn = self.conn().map_err(shared_error)?;
        self.run(redis::cmd("GET").arg(self.shared_key(key)).query_async(&mut conn)).await.map_err(shared_error)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SharedError> {
        let mut conn = self.conn().map_err(shared_error)?;
        self.run(
            redis::cmd("SET").arg(self.shared_key(key)).arg(value).arg("PX").arg(ttl_ms(ttl)).query_async(&mut conn),
        )
        .await
        .map_err(shared_error)
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<String>, SharedError> {
        let token = format!("{}:{}", self.replica, uuid::Uuid::new_v4().simple());
        let mut conn = self.conn().map_err(shared_error)?;
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.shared_key(key))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .query_async(&mut conn),
            )
            .await
            .map_err(shared_error)?;
        Ok(set.map(|_| token))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), SharedError> {
        let mut conn = self.conn().map_err(shared_error)?;
        self.run(self.scripts.unlock.key(self.shared_key(key)).arg(token).invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
            .map_err(shared_error)
    }

    async fn try_acquire_slot(&self, key: &str, max: usize, ttl: Duration) -> Result<Option<String>, SharedError> {
        let token = format!("{}:{}", self.replica, uuid::Uuid::new_v4().simple());
        let mut conn = self.conn().map_err(shared_error)?;
        let got: i64 = self
            .run(
                self.scripts
                    .acquire_slot
                    .key(self.shared_key(key))
                    .arg(max)
                    .arg(ttl_ms(ttl))
                    .arg(&token)
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(shared_error)?;
        Ok((got == 1).then_some(token))
    }

    async fn release_slot(&self, key: &str, token: &str) -> Result<(), SharedError> {
        let mut conn = self.conn().map_err(shared_error)?;
        self.run(redis::cmd("ZREM").arg(self.shared_key(key)).arg(token).query_async::<i64>(&mut conn))
            .await
            .map(drop)
            .map_err(shared_error)
    }
}
