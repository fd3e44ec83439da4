use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_config::StoreConfig;
use providers::{Conversation, Kind, Question, QuestionStatus, SharedState, Status, SummaryRequest};

use super::RedisStore;
use providers::time::now_ms;

use crate::store::{
    Fleet, FlightClaim, Job, JobStore, Outbox, QuestionLedgers, RateVerdict, StoreHealth, StoredSummary, SummaryStore,
    WebhookTarget,
};

fn url() -> String {
    std::env::var("SG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two replicas' stores on one prefix; the prefix's keys are deleted on drop.
struct Fixture {
    a: RedisStore,
    b: RedisStore,
    prefix: String,
    conn: redis::Connection,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let prefix = format!("sgtest-{name}-{}-{}", std::process::id(), fastrand::u32(..));
        let config = StoreConfig {
            redis_url: Some(url().into()),
            key_prefix: prefix.clone(),
            job_lease: Duration::from_secs(1),
            ..StoreConfig::default()
        };
        let conn = redis::Client::open(url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("these tests need Redis at {} (scripts/test.sh starts one): {e}", url()));
        Self {
            a: RedisStore::new(&config, "replica-a").unwrap(),
            b: RedisStore::new(&config, "replica-b").unwrap(),
            prefix,
            conn,
        }
    }

    fn pttl(&mut self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(format!("{}:{key}", self.prefix)).query(&mut self.conn).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut self.conn).unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut self.conn);
        }
    }
}

fn summary(status: Status) -> StoredSummary {
    StoredSummary { provider: Arc::from("pbx"), status, body: Bytes::from_static(b"{\"id\":\"x\"}") }
}

fn job(id: &str) -> Job {
    Job {
        id: id.into(),
        provider: "commbox".into(),
        request: SummaryRequest { kind: Kind::Summary, language: None, conversation: Conversation::default() },
        vendor_ref: "action-1".into(),
        created_at_ms: now_ms(),
        deadline_ms: now_ms() + 60_000,
        webhooks: Vec::new(),
    }
}

#[tokio::test]
async fn summaries_are_shared_and_expire_with_real_ttls() {
    let mut f = Fixture::new("ttl");
    f.a.put_summary("sum_1", summary(Status::Completed), Duration::from_secs(3600)).await.unwrap();
    let got = f.b.get_summary("sum_1").await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.provider.as_ref(), got.body.as_ref()),
        (Status::Completed, "pbx", b"{\"id\":\"x\"}".as_ref())
    );
    let ttl = f.pttl("{sum_1}:summary");
    assert!((3_590_000..=3_600_000).contains(&ttl), "{ttl}");
    f.a.put_summary("sum_2", summary(Status::Failed), Duration::from_millis(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(f.b.get_summary("sum_2").await.unwrap().is_none());
}

#[tokio::test]
async fn one_replica_wins_a_flight_and_the_other_sees_its_result() {
    let f = Fixture::new("flight");
    assert!(matches!(f.a.claim_flight("sum_f", Duration::from_secs(5)).await.unwrap(), FlightClaim::Won));
    match f.b.claim_flight("sum_f", Duration::from_secs(5)).await.unwrap() {
        FlightClaim::Held(left) => assert!(left > Duration::from_secs(4), "{left:?}"),
        other => panic!("{other:?}"),
    }
    f.a.put_summary("sum_f", summary(Status::Completed), Duration::from_secs(60)).await.unwrap();
    f.a.end_flight("sum_f").await.unwrap();
    assert!(matches!(f.b.claim_flight("sum_f", Duration::from_secs(5)).await.unwrap(), FlightClaim::Stored(_)));
    // A flight that ends without a result lets the next claim win.
    assert!(matches!(f.a.claim_flight("sum_g", Duration::from_secs(5)).await.unwrap(), FlightClaim::Won));
    f.a.end_flight("sum_g").await.unwrap();
    assert!(matches!(f.b.claim_flight("sum_g", Duration::from_secs(5)).await.unwrap(), FlightClaim::Won));
}

#[tokio::test]
async fn a_job_lease_is_held_by_one_replica_and_taken_over_when_it_lapses() {
    let f = Fixture::new("lease");
    f.a.create_job(job("sum_j"), summary(Status::Pending), Duration::from_secs(60)).await.unwrap();
    assert!(f.b.unclaimed_jobs().await.unwrap().is_empty(), "a holds the lease it created the job with");
    assert!(!f.b.acquire_lease("sum_j").await.unwrap());
    assert!(f.a.renew_lease("sum_j").await.unwrap());
    let hook = WebhookTarget { caller: "crm".into(), url: "http://127.0.0.1:9/hook".into() };
    assert!(f.a.add_webhook("sum_j", hook.clone()).await.unwrap());
    // a dies: its lease (1 s) lapses, b takes the job over; a's renewal then fails.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let orphans = f.b.unclaimed_jobs().await.unwrap();
    assert_eq!(orphans.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["sum_j"]);
    assert_eq!(orphans[0].webhooks, [hook], "an orphan comes with its webhooks");
    assert!(f.b.acquire_lease("sum_j").await.unwrap());
    assert!(!f.a.renew_lease("sum_j").await.unwrap());
    f.b.release_lease("sum_j").await.unwrap();
    assert_eq!(f.a.unclaimed_jobs().await.unwrap().len(), 1, "released: free for anyone at once");
}

#[tokio::test]
async fn finishing_a_job_queues_one_delivery_per_callback_once() {
    let mut f = Fixture::new("finish");
    f.a.create_job(job("sum_k"), summary(Status::Pending), Duration::from_secs(60)).await.unwrap();
    let target = |caller: &str| WebhookTarget { caller: caller.into(), url: "http://127.0.0.1:9/hook".into() };
    assert!(f.b.add_webhook("sum_k", target("crm")).await.unwrap());
    assert!(f.b.add_webhook("sum_k", target("crm")).await.unwrap(), "the same target again is one target");
    assert!(f.a.add_webhook("sum_k", target("billing")).await.unwrap());
    assert_eq!(f.b.get_job("sum_k").await.unwrap().unwrap().webhooks.len(), 2);
    let queued = f.a.finish_job("sum_k", summary(Status::Completed), Duration::from_secs(600)).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert!(f.b.finish_job("sum_k", summary(Status::Completed), Duration::from_secs(600)).await.unwrap().is_empty());
    assert!(!f.b.add_webhook("sum_k", target("late")).await.unwrap(), "ended: the caller reads the result instead");
    assert_eq!(f.b.get_summary("sum_k").await.unwrap().unwrap().status, Status::Completed);
    assert!(f.pttl("{sum_k}:summary") > 590_000);
    assert!(f.a.get_job("sum_k").await.unwrap().is_none());

    // Claimed with a lease: not handed out again until it lapses (a replica that dies mid-attempt).
    let now = now_ms();
    let claimed = f.a.claim_deliveries(now, now + 300, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(f.b.claim_deliveries(now_ms(), now_ms() + 300, 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = f.b.claim_deliveries(now_ms(), now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 2, "retried by another replica after the lease");
    let mut retried = again[0].clone();
    retried.attempts = 1;
    retried.next_attempt_ms = 42;
    f.b.retry_delivery(retried).await.unwrap();
    assert_eq!(f.a.next_delivery_ms().await.unwrap(), Some(42));
    for d in &again {
        f.b.remove_delivery(&d.id).await.unwrap();
    }
    assert_eq!(f.a.next_delivery_ms().await.unwrap(), None);
}

#[tokio::test]
async fn question_ledgers_keep_ask_order_and_replace_by_id() {
    let mut f = Fixture::new("ledger");
    let q = |id: &str, status: QuestionStatus| Question {
        id: id.into(),
        provider: "ai".into(),
        conversation: Conversation { id: Some("c1".into()), ..Conversation::default() },
        question: format!("question {id}?"),
        answer: None,
        status,
        error: None,
        created_at: "2026-11-21T00:00:00Z".into(),
    };
    assert!(f.a.question_ledger("ai", "c1").await.unwrap().is_none());
    f.a.merge_questions("ai", "c1", Vec::new(), Duration::from_secs(600)).await.unwrap();
    assert_eq!(f.b.question_ledger("ai", "c1").await.unwrap().unwrap().questions.len(), 0, "exists, empty");
    let ttl = Duration::from_secs(600);
    f.a.merge_questions("ai", "c1", vec![q("q_b", QuestionStatus::Failed), q("q_a", QuestionStatus::Answered)], ttl)
        .await
        .unwrap();
    f.b.merge_questions("ai", "c1", vec![q("q_c", QuestionStatus::Answered), q("q_b", QuestionStatus::Answered)], ttl)
        .await
        .unwrap();
    let ledger = f.a.question_ledger("ai", "c1").await.unwrap().unwrap();
    let got: Vec<_> = ledger.questions.iter().map(|q| (q.id.as_str(), q.status)).collect();
    assert_eq!(
        got,
        [("q_b", QuestionStatus::Answered), ("q_a", QuestionStatus::Answered), ("q_c", QuestionStatus::Answered)]
    );
    assert!(f.pttl("{q:ai:c1}:ledger") > 590_000);
}

#[tokio::test]
async fn the_gcra_limit_holds_across_replicas() {
    let mut f = Fixture::new("gcra");
    let mut allowed = 0;
    for i in 0..30 {
        let store = if i % 2 == 0 { &f.a } else { &f.b };
        match store.rate_limit("crm", 1.0, 10).await.unwrap() {
            RateVerdict::Allowed { .. } => allowed += 1,
            RateVerdict::Limited { retry_after } => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
            }
        }
    }
    assert_eq!(allowed, 10, "the burst, once for both replicas");
    assert!(f.pttl("{rl:crm}:gcra") > 0);
}

#[tokio::test]
async fn locks_and_slots_for_providers_are_shared() {
    let f = Fixture::new("shared");
    let token = f.a.try_lock("yeastar:pbx:renew", Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(f.b.try_lock("yeastar:pbx:renew", Duration::from_secs(5)).await.unwrap().is_none());
    f.b.unlock("yeastar:pbx:renew", "not-the-token").await.unwrap();
    assert!(f.b.try_lock("yeastar:pbx:renew", Duration::from_secs(5)).await.unwrap().is_none());
    f.a.unlock("yeastar:pbx:renew", &token).await.unwrap();
    assert!(f.b.try_lock("yeastar:pbx:renew", Duration::from_secs(5)).await.unwrap().is_some());

    let first = f.a.try_acquire_slot("elevateai:ai:slots", 2, Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(f.b.try_acquire_slot("elevateai:ai:slots", 2, Duration::from_secs(5)).await.unwrap().is_some());
    assert!(f.a.try_acquire_slot("elevateai:ai:slots", 2, Duration::from_secs(5)).await.unwrap().is_none());
    f.a.release_slot("elevateai:ai:slots", &first).await.unwrap();
    assert!(f.b.try_acquire_slot("elevateai:ai:slots", 2, Duration::from_millis(100)).await.unwrap().is_some());

    f.a.set("yeastar:pbx:token", "{\"t\":1}", Duration::from_secs(5)).await.unwrap();
    assert_eq!(f.b.get("yeastar:pbx:token").await.unwrap().as_deref(), Some("{\"t\":1}"));
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_reports_why() {
    let config = StoreConfig {
        redis_url: Some("redis://127.0.0.1:1/0".to_owned().into()),
        timeout: Duration::from_millis(200),
        ..StoreConfig::default()
    };
    let store = RedisStore::new(&config, "lonely").unwrap();
    let started = std::time::Instant::now();
    assert!(store.get_summary("sum_x").await.is_err());
    assert!(store.degraded().is_some_and(|why| !why.contains("127.0.0.1")), "{:?}", store.degraded());
    // Within the breaker's second: at once, without trying.
    assert!(store.put_summary("sum_x", summary(Status::Completed), Duration::from_secs(1)).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
}
