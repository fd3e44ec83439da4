//! Quotas counted on one replica (no shared store), on a clock the test sets:
//! calendar periods, the limit, what counts, provider quotas, the headers.
//! The fleet-wide count is tested against Redis in `tests/e2e/quota.rs`.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use gateway_config::{AuthConfig, KeyConfig};
use serde_json::{Value, json};

use super::*;
use crate::middleware::auth::Keys;

fn at(instant: &str) -> Timestamp {
    instant.parse().unwrap()
}

/// A caller `c` with `quota`.
fn caller(quota: &Value) -> Arc<Caller> {
    let key: KeyConfig = serde_json::from_value(json!({ "key_sha256": "00".repeat(32), "quota": quota })).unwrap();
    let keys = Keys::from_config(&AuthConfig { keys: BTreeMap::from([("c".to_owned(), key)]) });
    keys.by_name("c").unwrap()
}

/// The 429 of a spent daily quota, as the error table test builds it.
pub(crate) fn exceeded() -> ApiError {
    ApiError::QuotaExceeded(Box::new(Exceeded {
        policy: "quota".to_owned(),
        provider: None,
        limit: 1,
        per: QuotaPeriod::Day,
        window: 86_400,
        retry_after: Duration::from_secs(1),
    }))
}

fn headers(used: &QuotaUse) -> (String, String) {
    let mut headers = HeaderMap::new();
    used.apply(&mut headers);
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (get("ratelimit-policy"), get("ratelimit"))
}

#[test]
fn periods_follow_the_utc_calendar() {
    let day = Period::of(QuotaPeriod::Day, at("2026-12-31T23:59:59.5Z"));
    assert_eq!((day.start, day.reset), (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z")));
    assert_eq!(day.secs_until_reset(at("2026-12-31T23:59:59.5Z")), 1);
    assert_eq!(day.window_secs(), 86_400);
    assert_eq!(day.id(QuotaPeriod::Day), "d2026-12-31");
    let month = Period::of(QuotaPeriod::Month, at("2028-02-29T12:00:00Z"));
    assert_eq!((month.start, month.reset), (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z")));
    assert_eq!(month.window_secs(), 29 * 86_400);
    assert_eq!(month.id(QuotaPeriod::Month), "m2028-02");
}

#[tokio::test]
async fn a_daily_quota_allows_its_requests_then_refuses_until_midnight_utc() {
    let quotas = Quotas::new(None);
    let c = caller(&json!({ "requests": 3, "per": "day" }));
    let now = at("2026-12-04T23:00:00Z");
    for remaining in [2, 1, 0] {
        let used = quotas.charge_at(&c, "p", CacheStatus::Miss, now).await.unwrap();
        assert_eq!(headers(&used), ("\"quota\";q=3;w=86400".into(), format!("\"quota\";r={remaining};t=3600")));
    }
    let refused = quotas.charge_at(&c, "p", CacheStatus::Miss, now).await.unwrap_err();
    assert_eq!(refused.code(), "quota_exceeded");
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(refused.to_string(), "this API key has used its quota of 3 requests per day (UTC); it resets in 3600 s");
    let response = axum::response::IntoResponse::into_response(refused);
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3600");
    assert_eq!(response.headers()["ratelimit"], "\"quota\";r=0;t=3600");
    // Refused requests are not counted, and the next day starts at zero.
    let used = quotas.charge_at(&c, "p", CacheStatus::Miss, at("2026-12-05T00:00:00Z")).await.unwrap();
    assert_eq!(headers(&used).1, "\"quota\";r=2;t=86400");
}

#[tokio::test]
async fn cache_hits_count_unless_the_caller_says_they_do_not() {
    let quotas = Quotas::new(None);
    let now = at("2026-12-04T12:00:00Z");
    let counting = caller(&json!({ "requests": 1, "per": "month" }));
    quotas.charge_at(&counting, "p", CacheStatus::Hit, now).await.unwrap();
    assert!(quotas.charge_at(&counting, "p", CacheStatus::Hit, now).await.is_err());

    let quotas = Quotas::new(None);
    let not_counting = caller(&json!({ "requests": 1, "per": "month", "count_cache_hits": false }));
    for _ in 0..3 {
        let used = quotas.charge_at(&not_counting, "p", CacheStatus::Hit, now).await.unwrap();
        assert_eq!(headers(&used), (String::new(), String::new()), "a hit that does not count reports nothing");
    }
    quotas.charge_at(&not_counting, "p", CacheStatus::Miss, now).await.unwrap();
    assert!(quotas.charge_at(&not_counting, "p", CacheStatus::Miss, now).await.is_err());
}

#[tokio::test]
async fn a_provider_quota_within_the_callers_refuses_that_provider_only() {
    let quotas = Quotas::new(None);
    let c = caller(&json!({ "requests": 10, "per": "day", "providers": { "pbx": { "requests": 1, "per": "month" } } }));
    let now = at("2026-12-31T12:00:00Z");
    let used = quotas.charge_at(&c, "pbx", CacheStatus::Miss, now).await.unwrap();
    assert_eq!(
        headers(&used),
        (
            "\"quota\";q=10;w=86400, \"quota-pbx\";q=1;w=2678400".into(),
            "\"quota\";r=9;t=43200, \"quota-pbx\";r=0;t=43200".into()
        )
    );
    let refused = quotas.charge_at(&c, "pbx", CacheStatus::Miss, now).await.unwrap_err();
    assert!(refused.to_string().contains("1 requests per month (UTC) on provider `pbx`"), "{refused}");
    let response = axum::response::IntoResponse::into_response(refused);
    assert_eq!(response.headers()["ratelimit-policy"], "\"quota-pbx\";q=1;w=2678400");
    // The refused request was counted against neither quota.
    let used = quotas.charge_at(&c, "crm", CacheStatus::Miss, now).await.unwrap();
    assert_eq!(headers(&used).1, "\"quota\";r=8;t=43200");
}

#[tokio::test]
async fn a_caller_without_a_quota_is_never_counted() {
    let quotas = Quotas::new(None);
    let key: KeyConfig = serde_json::from_value(json!({ "key_sha256": "00".repeat(32) })).unwrap();
    let keys = Keys::from_config(&AuthConfig { keys: BTreeMap::from([("c".to_owned(), key)]) });
    let c = keys.by_name("c").unwrap();
    let used = quotas.charge(&c, "p", CacheStatus::Miss).await.unwrap();
    assert_eq!(headers(&used), (String::new(), String::new()));
    assert!(quotas.entries().is_empty());
}
