//! Webhooks to callers: the final resource POSTed to every `callback_url` that
//! asked, signed per Standard Webhooks, at least once.
//!
//! Deliveries are queued in the store's outbox when the job ends (in the same
//! operation that stores the result), claimed with a lease, attempted, and
//! removed only after a 2xx. A failure or non-2xx is retried with exponential
//! backoff — `retry_initial`, doubling per attempt up to `retry_max`, ±20 %
//! jitter — until `give_up_after` has passed since the summary became final.
//!
//! Signing: `webhook-id` (the delivery's id, the same on every attempt),
//! `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, the
//! key being the base64 part of the caller's `whsec_` secret.
//!
//! SSRF: unless `webhooks.allow_private_networks`, the HTTP client resolves
//! names through [`PublicOnly`], which drops every non-public address at
//! connect time — the check is repeated on each attempt, where it matters, and
//! cannot be raced by DNS rebinding. IP-literal URLs are checked before sending;
//! redirects are not followed.

pub mod ssrf;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gateway_config::{AuthConfig, Config, WebhooksConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use url::{Host, Url};

use self::ssrf::is_public;
use providers::time::{duration_ms, now_ms};

use crate::store::{Delivery, Outbox};

/// How many due deliveries one pass of the worker claims.
const BATCH: usize = 64;
/// The worker looks at the outbox at least this often (leases of attempts that
/// died with another process expire; another replica may have queued work).
const MAX_IDLE: Duration = Duration::from_secs(5);

/// The webhook worker.
pub struct Webhooks {
    store: Arc<dyn Outbox>,
    config: WebhooksConfig,
    client: reqwest::Client,
    /// Caller name → signing key; replaced by a reload ([`Self::set_secrets`]).
    keys: ArcSwap<HashMap<String, Vec<u8>>>,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
}

/// Caller name → the key its webhooks are signed with.
fn signing_keys(auth: &AuthConfig) -> HashMap<String, Vec<u8>> {
    auth.keys
        .iter()
        .filter_map(|(name, key)| {
            let secret = key.resolved_webhook_secret.as_ref()?;
            Some((name.clone(), gateway_config::auth::webhook_key(secret.expose())?))
        })
        .collect()
}

/// The Standard Webhooks signature of one attempt: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    pub fn new(config: &Config, store: Arc<dyn Outbox>, wake: Arc<Notify>) -> Result<Self, String> {
        providers::outbound::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("summary-gateway-webhooks/", env!("CARGO_PKG_VERSION")))
            .timeout(config.webhooks.timeout)
            .connect_timeout(config.webhooks.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if !config.webhooks.allow_private_networks {
            builder = builder.dns_resolver(PublicOnly);
        }
        let client = builder.build().map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Self {
            store,
            config: config.webhooks.clone(),
            client,
            keys: ArcSwap::from_pointee(signing_keys(&config.auth)),
            wake,
            slots: Arc::new(Semaphore::new(config.webhooks.max_concurrency)),
        })
    }

    /// Whether deliveries to this caller can be signed.
    pub fn can_sign_for(&self, caller: &str) -> bool {
        self.keys.load().contains_key(caller)
    }

    /// The callers' webhook secrets of a reloaded configuration: deliveries from
    /// now on (queued ones included) are signed with them.
    pub fn set_secrets(&self, auth: &AuthConfig) {
        self.keys.store(Arc::new(signing_keys(auth)));
    }

    /// Whether attempts are under way, or (`due_too`) deliveries are due now:
    /// what a draining replica with the embedded store waits for.
    pub async fn busy(&self, due_too: bool) -> bool {
        if self.slots.available_permits() < self.config.max_concurrency {
            return true;
        }
        due_too && matches!(self.store.next_delivery_ms().await, Ok(Some(next)) if next <= now_ms())
    }

    /// Delivers due webhooks until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = now_ms();
            // Claim no more than can start at once, so the lease covers one attempt
            // (its timeout, plus a margin for the store): a delivery whose replica
            // dies mid-attempt is claimed again soon after.
            let free = self.slots.available_permits().min(BATCH);
            let lease = now + duration_ms(self.config.timeout + Duration::from_secs(5));
            let claimed = if free == 0 { Ok(Vec::new()) } else { self.store.claim_deliveries(now, lease, free).await };
            match claimed {
                Ok(batch) => {
                    for delivery in batch {
                        let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else { return };
                        let this = Arc::clone(&self);
                        tokio::spawn(async move {
                            this.attempt(delivery).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read the webhook outbox"),
            }
            let idle = match self.store.next_delivery_ms().await {
                // All slots busy: an attempt's end wakes the worker.
                _ if free == 0 => MAX_IDLE,
                Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now_ms())).min(MAX_IDLE),
                _ => MAX_IDLE,
            };
            tokio::select! {
                () = tokio::time::sleep(idle) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One attempt; then removed (2xx, or given up) or rescheduled.
    async fn attempt(&self, mut delivery: Delivery) {
        let host = Url::parse(&delivery.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let outcome = self.send(&delivery).await;
        delivery.attempts += 1;
        let result = match outcome {
            Ok(status) => {
                metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "result" => "delivered").increment(1);
                tracing::info!(webhook_id = %delivery.id, summary_id = %delivery.summary_id, caller = %delivery.caller, %host, status, attempts = delivery.attempts, "webhook delivered");
                self.store.remove_delivery(&delivery.id).await
            }
            Err(why) => {
                let now = now_ms();
                if now.saturating_sub(delivery.created_at_ms) >= duration_ms(self.config.give_up_after) {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "result" => "given_up").increment(1);
                    tracing::error!(webhook_id = %delivery.id, summary_id = %delivery.summary_id, caller = %delivery.caller, %host, attempts = delivery.attempts, reason = %why, "webhook given up");
                    self.store.remove_delivery(&delivery.id).await
                } else {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "result" => "retry").increment(1);
                    let wait = retry_delay(&self.config, delivery.attempts);
                    tracing::warn!(webhook_id = %delivery.id, summary_id = %delivery.summary_id, caller = %delivery.caller, %host, attempts = delivery.attempts, reason = %why, retry_in_ms = duration_ms(wait), "webhook failed; will retry");
                    delivery.next_attempt_ms = now + duration_ms(wait);
                    self.store.retry_delivery(delivery).await
                }
            }
        };
        if let Err(e) = result {
            // The lease runs out and the delivery is attempted again: at least once.
            tracing::warn!(error = %e, "could not update the webhook outbox");
        }
        self.wake.notify_one();
    }

    async fn send(&self, delivery: &Delivery) -> Result<u16, String> {
        let keys = self.keys.load();
        let key = keys.get(&delivery.caller).ok_or("the caller no longer has a webhook secret")?;
        let url = Url::parse(&delivery.url).map_err(|_| "not a URL".to_owned())?;
        if !self.config.allow_private_networks {
            let literal = match url.host() {
                Some(Host::Ipv4(ip)) => Some(ip.into()),
                Some(Host::Ipv6(ip)) => Some(ip.into()),
                _ => None,
            };
            if literal.is_some_and(|ip| !is_public(ip)) {
                return Err("the URL's address is not public".into());
            }
        }
        let timestamp = now_ms() / 1000;
        let signature = sign(key, &delivery.id, timestamp, delivery.body.as_bytes());
        let response = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() { Ok(status.as_u16()) } else { Err(format!("HTTP {}", status.as_u16())) }
    }
}

/// The wait after `attempts` failed attempts: `retry_initial` × 2^(attempts−1),
/// at most `retry_max`, ±20 % jitter.
pub fn retry_delay(config: &WebhooksConfig, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let base = config.retry_initial.saturating_mul(1 << exp).min(config.retry_max);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// A transport error without its URL (a callback URL may carry a caller's token).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        // The innermost cause says why (refused, no public address, ...); it carries no URL.
        use std::error::Error as _;
        let root = std::iter::successors(e.source(), |c| (*c).source()).last();
        root.map_or_else(|| "could not connect".to_owned(), |c| format!("could not connect: {c}"))
    } else {
        "the connection failed".into()
    }
}

/// A DNS resolver that only returns public addresses.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` has no public address (webhooks.allow_private_networks is off)").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_like_the_standard_webhooks_example() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// A delivery already in the outbox (queued by an older build, or through a
    /// name that has since changed) is checked again at send time, with the same
    /// rule as `callback_url`: an IPv4 address inside an IPv6 transition prefix is
    /// not sent to, literal or resolved.
    #[tokio::test]
    async fn deliveries_check_the_address_again_at_send_time() {
        let yaml = "auth:\n  keys:\n    crm:\n      key: k\n      webhook_secret: whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI=\n\
                    providers:\n  pbx:\n    type: yeastar\n    base_url: http://127.0.0.1:9\n    client_id: a\n    client_secret: b\n";
        let config = Config::from_yaml(&providers::registry::config_types(), yaml, &|_| None).unwrap();
        let store: Arc<dyn Outbox> = Arc::new(crate::store::memory::MemoryStore::new(1 << 20));
        let webhooks = Webhooks::new(&config, store, Arc::new(Notify::new())).unwrap();
        for url in ["http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/", "http://[::ffff:0:a9fe:a9fe]/"] {
            let target = crate::store::WebhookTarget { caller: "crm".into(), url: url.into() };
            let delivery = Delivery::new("sum_0", target, "{}".into(), now_ms());
            assert_eq!(webhooks.send(&delivery).await, Err("the URL's address is not public".to_owned()), "{url}");
        }
        let resolved = reqwest::dns::Resolve::resolve(&PublicOnly, "localhost".parse().unwrap()).await;
        assert!(resolved.is_err_and(|e| e.to_string().contains("no public address")));
    }

    #[test]
    fn retries_back_off_exponentially_to_the_cap() {
        let config = WebhooksConfig {
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            ..WebhooksConfig::default()
        };
        let d1 = retry_delay(&config, 1);
        assert!(d1 >= Duration::from_secs(4) && d1 <= Duration::from_secs(6), "{d1:?}");
        let d4 = retry_delay(&config, 4);
        assert!(d4 >= Duration::from_secs(32) && d4 <= Duration::from_secs(48), "{d4:?}");
        assert!(retry_delay(&config, 40) <= Duration::from_secs(720));
    }
}
