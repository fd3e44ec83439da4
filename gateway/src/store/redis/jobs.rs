//! Pending jobs (`P:{jobs}:jobs`) and their callbacks, ended with their webhooks queued in one script.

use std::time::Duration;

use async_trait::async_trait;
use providers::time::{now_ms, ttl_ms};

use super::RedisStore;
use super::codec::{encode_event, encode_summary, from_json, to_json};
use crate::store::SummaryStore;
use crate::store::{Delivery, Job, JobStore, StoreError, StoreEvent, StoredSummary, WebhookTarget};

#[async_trait]
impl JobStore for RedisStore {
    async fn create_job(&self, job: Job, pending: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        // The job (and this replica's lease) first, then its pending resource: a
        // pending resource always has a job behind it that some replica polls.
        let json = to_json(&job)?;
        let mut conn = self.conn()?;
        let summary_key = self.summary_key(&job.id);
        self.run(async {
            self.scripts
                .create_job
                .key(self.jobs_key("jobs"))
                .key(self.jobs_key(&format!("lease:{}", job.id)))
                .arg(&job.id)
                .arg(&json)
                .arg(&self.replica)
                .arg(ttl_ms(self.job_lease))
                .invoke_async::<i64>(&mut conn)
                .await?;
            redis::cmd("SET")
                .arg(&summary_key)
                .arg(encode_summary(&pending))
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn()?;
        let (job, callbacks): (Option<String>, Vec<String>) = self
            .run(
                redis::pipe()
                    .cmd("HGET")
                    .arg(self.jobs_key("jobs"))
                    .arg(id)
                    .cmd("SMEMBERS")
                    .arg(self.jobs_key(&format!("callbacks:{id}")))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(job) = job else { return Ok(None) };
        let mut job: Job = from_json(&job, "job")?;
        job.webhooks = callbacks.iter().map(|c| from_json(c, "callback")).collect::<Result<_, _>>()?;
        Ok(Some(job))
    }

    async fn unclaimed_jobs(&self) -> Result<Vec<Job>, StoreError> {
        // Plain commands, every key named (a script that built the lease and
        // webhook key names inside Lua would break Redis Cluster's rule that a
        // script declares its keys). Not atomic, and need not be: taking a job
        // is `acquire_lease`, which is.
        let mut conn = self.conn()?;
        let jobs: Vec<(String, String)> =
            self.run(redis::cmd("HGETALL").arg(self.jobs_key("jobs")).query_async(&mut conn)).await?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &jobs {
            pipe.cmd("EXISTS").arg(self.jobs_key(&format!("lease:{id}")));
            pipe.cmd("SMEMBERS").arg(self.jobs_key(&format!("callbacks:{id}")));
        }
        let answers: Vec<redis::Value> = self.run(pipe.query_async(&mut conn)).await?;
        let mut unclaimed = Vec::new();
        for ((_, json), pair) in jobs.iter().zip(answers.chunks(2)) {
            if matches!(pair.first(), Some(redis::Value::Int(0))) {
                let mut job: Job = from_json(json, "job")?;
                let targets: Vec<String> = pair
                    .get(1)
                    .map_or(Ok(Vec::new()), redis::from_redis_value_ref)
                    .map_err(|e| StoreError(format!("redis: a webhook list is unreadable: {e}")))?;
                job.webhooks = targets.iter().map(|t| from_json(t, "webhook")).collect::<Result<_, _>>()?;
                unclaimed.push(job);
            }
        }
        Ok(unclaimed)
    }

    async fn add_webhook(&self, id: &str, target: WebhookTarget) -> Result<bool, StoreError> {
        let json = to_json(&target)?;
        let mut conn = self.conn()?;
        let added: i64 = self
            .run(
                self.scripts
                    .add_webhook
                    .key(self.jobs_key("jobs"))
                    .key(self.jobs_key(&format!("callbacks:{id}")))
                    .arg(id)
                    .arg(&json)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(added == 1)
    }

    async fn finish_job(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<Vec<Delivery>, StoreError> {
        // The final resource first (its own slot), then — atomically in the jobs
        // slot — the job's end with its deliveries. A replica dying in between
        // leaves the job pending: another takes it over and ends it again.
        self.put_summary(id, summary.clone(), ttl).await?;
        let message = encode_event(&StoreEvent::Final { id: id.to_owned(), summary: summary.clone() });
        let body = String::from_utf8_lossy(&summary.body).into_owned();
        let callbacks_key = self.jobs_key(&format!("callbacks:{id}"));
        for _ in 0..8 {
            let mut conn = self.conn()?;
            let targets: Vec<String> =
                self.run(redis::cmd("SMEMBERS").arg(&callbacks_key).query_async(&mut conn)).await?;
            let now = now_ms();
            let deliveries = targets
                .iter()
                .map(|raw| Ok(Delivery::new(id, from_json(raw, "callback")?, body.clone(), now)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut invocation = self.scripts.finish_job.key(self.jobs_key("jobs"));
            invocation
                .key(&callbacks_key)
                .key(self.jobs_key(&format!("lease:{id}")))
                .key(self.jobs_key("outbox"))
                .key(self.jobs_key("due"))
                .arg(id)
                .arg(targets.len())
                .arg(self.channel())
                .arg(&message);
            for d in &deliveries {
                invocation.arg(&d.id).arg(to_json(d)?).arg(d.next_attempt_ms);
            }
            let queued: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
            match queued {
                -1 => return Ok(Vec::new()),
                -2 => {}
                _ => return Ok(deliveries),
            }
        }
        Err(StoreError("redis: callbacks kept being added while the job ended".into()))
    }
}
