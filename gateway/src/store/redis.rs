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
//! | `P:{jobs}:callbacks:<summary id>` | set | callers' callback targets (JSON) | when the job ends |
//! | `P:{jobs}:lease:<summary id>` | string | the replica polling the job | `job_lease`, renewed every third of it |
//! | `P:{jobs}:outbox` | hash | delivery id → webhook delivery (JSON) | after its 2xx or when given up |
//! | `P:{jobs}:due` | sorted set | delivery id → when it is due / its lease ends (ms) | with the delivery |
//! | `P:{q:<provider>:<conversation>}:ledger` | hash | question id → `<seq>|<question JSON>` | `question_ttl` |
//! | `P:{rl:<caller>}:gcra` | string | the caller's GCRA theoretical arrival time (µs, Redis clock) | when it is in the past |
//! | `P:{shared:<name>}` | string / sorted set | provider state shared by the fleet (Yeastar token, its renewal lock, ElevateAI slots) | the token's life / the lock's / each slot's |
//!
//! Events between replicas are published on the channel `P:events`.
//!
//! # Failure handling
//! Every command has `store.timeout`. A command that fails or times out marks the
//! store down for [`BREAKER`]: meanwhile commands fail at once instead of each
//! waiting for the timeout, and `/readyz` reports `degraded`. The connection is
//! re-established in the background (redis' `ConnectionManager`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use gateway_config::StoreConfig;
use providers::{Question, SharedError, SharedState, Status};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio_util::sync::CancellationToken;

use super::{
    CallbackTarget, Delivery, EventSink, FlightClaim, Job, QuestionLedger, RateVerdict, Store, StoreError, StoreEvent,
    StoredSummary, now_ms,
};

/// How long the store counts as down after a failed command.
pub const BREAKER: Duration = Duration::from_secs(1);

/// The shared Redis store of one replica.
pub struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    /// This replica's name in leases and flights.
    replica: String,
    job_lease: Duration,
    timeout: Duration,
    /// Ms since `epoch` until which the store counts as down (0: up).
    down_until: AtomicU64,
    epoch: Instant,
    /// Why it last failed.
    last_error: Mutex<String>,
    scripts: Scripts,
}

struct Scripts {
    claim_flight: Script,
    end_flight: Script,
    create_job: Script,
    add_callback: Script,
    finish_job: Script,
    unclaimed_jobs: Script,
    acquire_lease: Script,
    renew_lease: Script,
    release_lease: Script,
    claim_deliveries: Script,
    retry_delivery: Script,
    merge_questions: Script,
    gcra: Script,
    unlock: Script,
    acquire_slot: Script,
}

impl Scripts {
    #[allow(clippy::too_many_lines, reason = "the scripts are data, each commented where it is")]
    fn new() -> Self {
        Self {
            // KEYS: summary, flight. ARGV: replica, ttl ms.
            claim_flight: Script::new(
                r"
local s = redis.call('GET', KEYS[1])
if s then return 'S' .. s end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'W' end
return 'H' .. redis.call('PTTL', KEYS[2])",
            ),
            // KEYS: flight. ARGV: replica, channel, message.
            end_flight: Script::new(
                r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1",
            ),
            // KEYS: jobs, lease. ARGV: id, job JSON, replica, lease ms.
            create_job: Script::new(
                r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1",
            ),
            // KEYS: jobs, callbacks. ARGV: id, target JSON.
            add_callback: Script::new(
                r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1",
            ),
            // KEYS: jobs, callbacks, lease, outbox, due. ARGV: id, callbacks expected,
            // channel, message, then (delivery id, JSON, due ms) per delivery.
            // -1: the job had already ended; -2: a callback was added meanwhile (read again).
            finish_job: Script::new(
                r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[2]) then return -2 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
local n = 0
for i = 5, #ARGV, 3 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[5], ARGV[i + 2], ARGV[i])
  n = n + 1
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n",
            ),
            // KEYS: jobs. ARGV: lease key prefix, callbacks key prefix.
            // Returns job JSON, callbacks JSON array, ... for jobs without a lease.
            unclaimed_jobs: Script::new(
                r"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[1] .. all[i]) == 0 then
    table.insert(out, all[i + 1])
    table.insert(out, '[' .. table.concat(redis.call('SMEMBERS', ARGV[2] .. all[i]), ',') .. ']')
  end
end
return out",
            ),
            // KEYS: jobs, lease. ARGV: id, replica, lease ms.
            acquire_lease: Script::new(
                r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('PEXPIRE', KEYS[2], ARGV[3]) return 1 end
return 0",
            ),
            // KEYS: jobs, lease. ARGV: id, replica, lease ms. Ours, or free again
            // (it expired while the store was unreachable): extended. Another's: lost.
            renew_lease: Script::new(
                r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1",
            ),
            // KEYS: lease. ARGV: replica.
            release_lease: Script::new(
                r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1",
            ),
            // KEYS: outbox, due. ARGV: now ms, lease until ms, limit.
            claim_deliveries: Script::new(
                r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local d = redis.call('HGET', KEYS[1], id)
  if d then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, d)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out",
            ),
            // KEYS: outbox, due. ARGV: id, JSON, due ms.
            retry_delivery: Script::new(
                r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1",
            ),
            // KEYS: ledger. ARGV: ttl ms, then (question id, JSON) pairs. The
            // field `_` marks a ledger that exists with no question yet.
            merge_questions: Script::new(
                r"
redis.call('HSET', KEYS[1], '_', '')
for i = 2, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local seq
  if old then seq = string.sub(old, 1, 10) else seq = string.format('%010d', redis.call('HLEN', KEYS[1])) end
  redis.call('HSET', KEYS[1], ARGV[i], seq .. '|' .. ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1",
            ),
            // GCRA on the Redis clock (one clock for every replica).
            // KEYS: tat. ARGV: emission interval µs, burst.
            // Returns {1, remaining} or {0, retry after µs}.
            gcra: Script::new(
                r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then return {0, math.ceil(allow_at - now)} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((tolerance - (new_tat - now)) / interval)}",
            ),
            // KEYS: lock. ARGV: token.
            unlock: Script::new(
                r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1",
            ),
            // KEYS: semaphore. ARGV: max, ttl ms, token.
            acquire_slot: Script::new(
                r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
            ),
        }
    }
}

impl RedisStore {
    /// A store on `config.redis_url` (which must be set). Connects lazily: a
    /// gateway whose Redis is down starts, degraded, and connects when it is back.
    pub fn new(config: &StoreConfig, replica: &str) -> Result<Self, String> {
        let url = config.redis_url.as_ref().ok_or("store.redis_url is not set")?;
        // The URL may carry a password: name the problem, never the URL.
        let client = Client::open(url.expose().as_str()).map_err(|e| format!("store.redis_url: {}", e.category()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| format!("store.redis_url: {}", e.category()))?;
        Ok(Self {
            client,
            conn,
            prefix: config.key_prefix.clone(),
            replica: replica.to_owned(),
            job_lease: config.job_lease,
            timeout: config.timeout,
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
            last_error: Mutex::new(String::new()),
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

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) > self.since_epoch_ms()
    }

    fn fail(&self, what: &str) -> StoreError {
        let first = !self.is_down();
        self.down_until.store(self.since_epoch_ms() + duration_ms(BREAKER), Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            what.clone_into(&mut last);
        }
        if first {
            tracing::warn!(error = what, "redis store failing: cache bypassed, local rate limits, jobs refused");
        }
        StoreError(format!("redis: {what}"))
    }

    /// Runs one Redis exchange with the store's timeout and breaker.
    async fn run<T, F>(&self, exchange: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if self.is_down() {
            metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => "breaker_open").increment(1);
            return Err(StoreError("redis: unavailable (failing recently)".into()));
        }
        let was_failing = self.down_until.load(Ordering::Relaxed) != 0;
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => {
                if was_failing && self.down_until.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!("redis store answering again");
                }
                Ok(value)
            }
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => reason(&e)).increment(1);
                Err(self.fail(&describe(&e)))
            }
            Err(_) => {
                metrics::counter!(crate::metrics::STORE_ERRORS, "reason" => "timeout").increment(1);
                Err(self.fail(&format!("no answer within {}", humantime::format_duration(self.timeout))))
            }
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// The `reason` label of a failed command.
fn reason(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_refusal() {
        "refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "lost"
    } else {
        "other"
    }
}

/// Why a command failed, without the URL (it may hold a password).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".into()
    } else {
        format!("{} ({})", e.category(), e.code().unwrap_or("client"))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `<status byte><provider>\n<json>`: what the cache-hit path needs without parsing the JSON.
fn encode_summary(s: &StoredSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.provider.len() + s.body.len() + 2);
    out.push(match s.status {
        Status::Pending => b'p',
        Status::Completed => b'c',
        Status::Failed => b'f',
    });
    out.extend_from_slice(s.provider.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&s.body);
    out
}

fn decode_summary(raw: &[u8]) -> Result<StoredSummary, StoreError> {
    let bad = || StoreError("redis: a stored summary is not in the gateway's format".into());
    let (&tag, rest) = raw.split_first().ok_or_else(bad)?;
    let status = match tag {
        b'p' => Status::Pending,
        b'c' => Status::Completed,
        b'f' => Status::Failed,
        _ => return Err(bad()),
    };
    let newline = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let provider = std::str::from_utf8(&rest[..newline]).map_err(|_| bad())?;
    Ok(StoredSummary { provider: Arc::from(provider), status, body: Bytes::copy_from_slice(&rest[newline + 1..]) })
}

/// `D <id>\n<summary>`, `F <id>`, `N <id>`.
fn encode_event(event: &StoreEvent) -> Vec<u8> {
    match event {
        StoreEvent::Final { id, summary } => {
            let mut out = format!("D {id}\n").into_bytes();
            out.extend_from_slice(&encode_summary(summary));
            out
        }
        StoreEvent::FlightEnded { id } => format!("F {id}").into_bytes(),
        StoreEvent::Nudge { id } => format!("N {id}").into_bytes(),
        StoreEvent::Resync => b"R".to_vec(),
    }
}

fn decode_event(raw: &[u8]) -> Option<StoreEvent> {
    let (head, rest) = match raw.iter().position(|&b| b == b'\n') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let head = std::str::from_utf8(head).ok()?;
    let (kind, id) = head.split_once(' ')?;
    let id = id.to_owned();
    match kind {
        "D" => Some(StoreEvent::Final { id, summary: decode_summary(rest?).ok()? }),
        "F" => Some(StoreEvent::FlightEnded { id }),
        "N" => Some(StoreEvent::Nudge { id }),
        _ => None,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(format!("could not serialize: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError(format!("redis: a stored {what} is unreadable: {e}")))
}

fn callbacks_of(raw: &str) -> Result<Vec<CallbackTarget>, StoreError> {
    from_json(raw, "callback list")
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shared(&self) -> bool {
        true
    }

    fn degraded(&self) -> Option<String> {
        self.is_down().then(|| self.last_error.lock().map(|e| format!("redis: {e}")).unwrap_or_default())
    }

    async fn get_summary(&self, id: &str) -> Result<Option<StoredSummary>, StoreError> {
        let key = self.summary_key(id);
        let mut conn = self.conn();
        let raw: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(&key).query_async(&mut conn)).await?;
        raw.map(|r| decode_summary(&r)).transpose()
    }

    async fn put_summary(&self, id: &str, summary: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        let key = self.summary_key(id);
        let mut conn = self.conn();
        self.run(
            redis::cmd("SET")
                .arg(&key)
                .arg(encode_summary(&summary))
                .arg("PX")
                .arg(duration_ms(ttl))
                .query_async(&mut conn),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // Not behind the breaker: readiness must see the moment Redis is back.
        match tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => {
                self.down_until.store(0, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(&describe(&e))),
            Err(_) => Err(self.fail("no answer to PING")),
        }
    }

    async fn create_job(&self, job: Job, pending: StoredSummary, ttl: Duration) -> Result<(), StoreError> {
        // The job (and this replica's lease) first, then its pending resource: a
        // pending resource always has a job behind it that some replica polls.
        let json = to_json(&job)?;
        let mut conn = self.conn();
        let summary_key = self.summary_key(&job.id);
        self.run(async {
            self.scripts
                .create_job
                .key(self.jobs_key("jobs"))
                .key(self.jobs_key(&format!("lease:{}", job.id)))
                .arg(&job.id)
                .arg(&json)
                .arg(&self.replica)
                .arg(duration_ms(self.job_lease))
                .invoke_async::<i64>(&mut conn)
                .await?;
            redis::cmd("SET")
                .arg(&summary_key)
                .arg(encode_summary(&pending))
                .arg("PX")
                .arg(duration_ms(ttl))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn();
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
        job.callbacks = callbacks.iter().map(|c| from_json(c, "callback")).collect::<Result<_, _>>()?;
        Ok(Some(job))
    }

    async fn unclaimed_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.conn();
        let raw: Vec<String> = self
            .run(
                self.scripts
                    .unclaimed_jobs
                    .key(self.jobs_key("jobs"))
                    .arg(self.jobs_key("lease:"))
                    .arg(self.jobs_key("callbacks:"))
                    .invoke_async(&mut conn),
            )
            .await?;
        raw.chunks(2)
            .map(|pair| {
                let mut job: Job = from_json(&pair[0], "job")?;
                job.callbacks = pair.get(1).map_or(Ok(Vec::new()), |c| callbacks_of(c))?;
                Ok(job)
            })
            .collect()
    }

    async fn acquire_lease(&self, id: &str) -> Result<bool, StoreError> {
        self.lease(&self.scripts.acquire_lease, id).await
    }

    async fn renew_lease(&self, id: &str) -> Result<bool, StoreError> {
        self.lease(&self.scripts.renew_lease, id).await
    }

    async fn release_lease(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
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

    async fn add_callback(&self, id: &str, target: CallbackTarget) -> Result<bool, StoreError> {
        let json = to_json(&target)?;
        let mut conn = self.conn();
        let added: i64 = self
            .run(
                self.scripts
                    .add_callback
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
            let mut conn = self.conn();
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

    async fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        let first: Vec<(String, f64)> = self
            .run(redis::cmd("ZRANGE").arg(self.jobs_key("due")).arg(0).arg(0).arg("WITHSCORES").query_async(&mut conn))
            .await?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "scores are ms since the epoch")]
        Ok(first.first().map(|(_, score)| *score as u64))
    }

    async fn question_ledger(&self, provider: &str, conversation: &str) -> Result<Option<QuestionLedger>, StoreError> {
        let mut conn = self.conn();
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
        invocation.arg(duration_ms(ttl));
        for q in &questions {
            invocation.arg(&q.id).arg(to_json(q)?);
        }
        let mut conn = self.conn();
        self.run(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }

    async fn claim_flight(&self, id: &str, ttl: Duration) -> Result<FlightClaim, StoreError> {
        let mut conn = self.conn();
        let answer: Vec<u8> = self
            .run(
                self.scripts
                    .claim_flight
                    .key(self.summary_key(id))
                    .key(self.key(id, "flight"))
                    .arg(&self.replica)
                    .arg(duration_ms(ttl))
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
        let mut conn = self.conn();
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

    async fn nudge(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let message = encode_event(&StoreEvent::Nudge { id: id.to_owned() });
        self.run(redis::cmd("PUBLISH").arg(self.channel()).arg(message).query_async::<i64>(&mut conn)).await.map(drop)
    }

    fn subscribe(&self, sink: EventSink, shutdown: CancellationToken) {
        let client = self.client.clone();
        let channel = self.channel();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut connected_before = false;
            loop {
                let session = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let connected = tokio::select! {
                    r = session => r,
                    () = shutdown.cancelled() => return,
                };
                match connected {
                    Ok(mut pubsub) => {
                        backoff = Duration::from_millis(100);
                        if connected_before {
                            tracing::info!("redis events: resubscribed");
                            sink(StoreEvent::Resync);
                        }
                        connected_before = true;
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(m) => {
                                        if let Some(event) = decode_event(m.get_payload_bytes()) {
                                            sink(event);
                                        }
                                    }
                                    None => break,
                                },
                                () = shutdown.cancelled() => return,
                            }
                        }
                        tracing::warn!("redis events: subscription lost; reconnecting");
                        // Whatever happens while disconnected is missed: look again once back.
                        sink(StoreEvent::Resync);
                    }
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), retry_in_ms = duration_ms(backoff), "redis events: cannot subscribe");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }

    async fn rate_limit(&self, key: &str, per_second: f64, burst: u32) -> Result<Option<RateVerdict>, StoreError> {
        let interval_us = (1_000_000.0 / per_second).max(1.0);
        let mut conn = self.conn();
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
        Ok(Some(if allowed == 1 {
            RateVerdict::Allowed { remaining: value }
        } else {
            RateVerdict::Limited { retry_after: Duration::from_micros(value) }
        }))
    }
}

impl RedisStore {
    async fn lease(&self, script: &Script, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let held: i64 = self
            .run(
                script
                    .key(self.jobs_key("jobs"))
                    .key(self.jobs_key(&format!("lease:{id}")))
                    .arg(id)
                    .arg(&self.replica)
                    .arg(duration_ms(self.job_lease))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }

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
        let mut conn = self.conn();
        self.run(redis::cmd("GET").arg(self.shared_key(key)).query_async(&mut conn)).await.map_err(shared_error)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SharedError> {
        let mut conn = self.conn();
        self.run(
            redis::cmd("SET")
                .arg(self.shared_key(key))
                .arg(value)
                .arg("PX")
                .arg(duration_ms(ttl))
                .query_async(&mut conn),
        )
        .await
        .map_err(shared_error)
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<String>, SharedError> {
        let token = format!("{}:{}", self.replica, uuid::Uuid::new_v4().simple());
        let mut conn = self.conn();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.shared_key(key))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(duration_ms(ttl))
                    .query_async(&mut conn),
            )
            .await
            .map_err(shared_error)?;
        Ok(set.map(|_| token))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), SharedError> {
        let mut conn = self.conn();
        self.run(self.scripts.unlock.key(self.shared_key(key)).arg(token).invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
            .map_err(shared_error)
    }

    async fn try_acquire_slot(&self, key: &str, max: usize, ttl: Duration) -> Result<Option<String>, SharedError> {
        let token = format!("{}:{}", self.replica, uuid::Uuid::new_v4().simple());
        let mut conn = self.conn();
        let got: i64 = self
            .run(
                self.scripts
                    .acquire_slot
                    .key(self.shared_key(key))
                    .arg(max)
                    .arg(duration_ms(ttl))
                    .arg(&token)
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(shared_error)?;
        Ok((got == 1).then_some(token))
    }

    async fn release_slot(&self, key: &str, token: &str) -> Result<(), SharedError> {
        let mut conn = self.conn();
        self.run(redis::cmd("ZREM").arg(self.shared_key(key)).arg(token).query_async::<i64>(&mut conn))
            .await
            .map(drop)
            .map_err(shared_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_events_round_trip_through_their_encoding() {
        let summary = StoredSummary {
            provider: Arc::from("pbx-hq"),
            status: Status::Failed,
            body: Bytes::from_static(b"{\"a\":\n1}"),
        };
        let back = decode_summary(&encode_summary(&summary)).unwrap();
        assert_eq!(
            (back.provider.as_ref(), back.status, back.body.as_ref()),
            ("pbx-hq", Status::Failed, b"{\"a\":\n1}".as_ref())
        );
        match decode_event(&encode_event(&StoreEvent::Final { id: "sum_1".into(), summary })) {
            Some(StoreEvent::Final { id, summary }) => {
                assert_eq!((id.as_str(), summary.body.as_ref()), ("sum_1", b"{\"a\":\n1}".as_ref()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_event(b"F sum_2"), Some(StoreEvent::FlightEnded { id }) if id == "sum_2"));
        assert!(matches!(decode_event(b"N sum_3"), Some(StoreEvent::Nudge { id }) if id == "sum_3"));
        assert!(decode_event(b"garbage").is_none());
        assert!(decode_summary(b"x").is_err());
    }
}

/// The store against the real Redis of the machine (`SG_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`; `scripts/test.sh` starts one), each test under a
/// key prefix of its own, deleted afterwards.
#[cfg(test)]
#[path = "redis_tests.rs"]
mod redis_tests;
