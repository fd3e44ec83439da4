//! Question ledgers (`P:{q:<provider>:<conversation>}:ledger`).

use std::time::Duration;

use async_trait::async_trait;
use providers::Question;
use providers::time::ttl_ms;

use super::RedisStore;
use super::codec::{from_json, to_json};
use crate::store::{QuestionLedger, QuestionLedgers, StoreError};

#[async_trait]
impl QuestionLedgers for RedisStore {
    async fn question_ledger(&self, provider: &str, conversation: &str) -> Result<Option<QuestionLedger>, StoreError> {
        let mut conn = self.conn()?;
        let key = self.key(&format!("q:{provider}:{conversation}"), "ledger");
        let fields: Vec<(String, String)> = self.run(redis::cmd("HGETALL").arg(&key).query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut entries: Vec<(&str, &str)> =
            fields.iter().filter(|(field, _)| field != "_").filter_map(|(_, value)| value.split_once('|')).collect();
        entries.sort_unstable_by_key(|(seq, _)| *seq);
        let questions =
            entries.iter().map(|(_, json)| from_json::<Question>(json, "question")).collect::<Result<_, _>>()?;
        Ok(Some(QuestionLedger { questions }))
    }

    async fn merge_questions(
        &self,
        provider: &str,
        conversation: &str,
        questions: Vec<Question>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(&format!("q:{provider}:{conversation}"), "ledger");
        let mut invocation = self.scripts.merge_questions.key(&key);
        invocation.arg(ttl_ms(ttl));
        for q in &questions {
            invocation.arg(&q.id).arg(to_json(q)?);
        }
        let mut conn = self.conn()?;
        self.run(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }
}
