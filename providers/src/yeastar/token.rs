//! Yeastar's access token, shared by every request of one provider and, with a
//! [`SharedState`], by every replica of the gateway.
//!
//! - One token for all requests: `get_token` is called once, then the token is
//!   renewed with `refresh_token` (which also rotates the refresh token) when it
//!   comes within `token_refresh_margin` of its 30-minute expiry.
//! - Single flight: whoever needs a new token takes the gate; everyone else
//!   waiting on the gate finds the new token when they get it and does not log
//!   in again. Reading the current token takes no async lock, and a valid token
//!   never touches the shared store.
//! - One login for the fleet (given a shared store): the PBX allows about 8 live
//!   tokens per application. A process needing a token first reads the fleet's
//!   record (`yeastar:<provider>:token`, see [`FleetToken`]) and adopts a token
//!   another replica got. Otherwise it takes the lock `yeastar:<provider>:renew`,
//!   renews at the PBX (refreshing with the fleet's refresh token while it lasts,
//!   else logging in) and writes the record with the next `generation`. A replica
//!   that finds the lock held waits for the new record instead of renewing too.
//! - If the shared store fails, the process warns and renews on its own, as a
//!   single replica does: the gateway keeps serving.
//! - A rejected credential is never retried: 5 failed logins block the
//!   gateway's IP at the PBX, so after one rejection the provider fails fast
//!   until its configuration is fixed and the gateway restarted. That state is
//!   per process.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use gateway_config::Secret;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::{Envelope, errcode_error, parse_envelope};
use crate::error::{ProviderError, VendorDetail};
use crate::outbound::Outbound;
use crate::shared::{SharedError, SharedState};
use crate::time::now_ms;

/// A refresh token is not used this close to its expiry.
const REFRESH_SLACK: Duration = Duration::from_secs(60);

/// First and longest pause between reads of the record while another replica renews.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// How many times a replica waits out another's renewal lock before giving up.
const LOCK_ROUNDS: u32 = 2;

/// A live access token.
pub struct Token {
    access: Secret<String>,
    /// When the PBX will stop accepting it (by our clock).
    expires_at: Instant,
    /// When we start renewing it.
    renew_at: Instant,
    /// Distinguishes this process's tokens, so a request that saw token N
    /// expire does not renew N+1.
    pub generation: u64,
}

impl Token {
    pub fn access(&self) -> &str {
        self.access.expose()
    }
}

struct Gate {
    refresh: Option<(Secret<String>, Instant)>,
    generation: u64,
    /// The generation of the fleet's record this process last adopted or wrote (0: none).
    fleet_generation: u64,
    rejected: Option<VendorDetail>,
}

/// Where the fleet keeps its token.
struct Fleet {
    store: Arc<dyn SharedState>,
    /// `yeastar:<provider>:token`: the [`FleetToken`].
    token_key: String,
    /// `yeastar:<provider>:renew`: held by the replica renewing.
    lock_key: String,
}

/// The fleet's token, stored as JSON under `yeastar:<provider>:token` for as
/// long as its refresh token lives. Times are milliseconds since the Unix
/// epoch. It holds vendor tokens: never log it.
#[derive(Deserialize)]
struct FleetToken {
    access_token: Secret<String>,
    access_token_expires_at_ms: u64,
    /// When replicas start renewing it (the expiry less the writer's refresh margin).
    renew_at_ms: u64,
    refresh_token: Option<Secret<String>>,
    refresh_token_expires_at_ms: Option<u64>,
    /// Counts the fleet's renewals: a record of another generation than the
    /// one a replica holds is someone else's newer token.
    generation: u64,
}

/// The token of one Yeastar provider.
pub struct TokenManager {
    provider: Arc<str>,
    current: RwLock<Option<Arc<Token>>>,
    gate: Mutex<Gate>,
    client_id: Secret<String>,
    client_secret: Secret<String>,
    margin: Duration,
    get_token_url: Url,
    refresh_token_url: Url,
    fleet: Option<Fleet>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    access_token_expire_time: Option<u64>,
    refresh_token: Option<String>,
    refresh_token_expire_time: Option<u64>,
}

/// Tokens the PBX has just issued.
struct Issued {
    access: Secret<String>,
    access_life: Duration,
    /// The new refresh token and its lifetime.
    refresh: Option<(Secret<String>, Duration)>,
    /// By `refresh_token` (else by `get_token`), for the log.
    refreshed: bool,
}

enum Renewal {
    Got(Issued),
    /// The PBX refused the refresh token (expired or unknown): log in instead.
    RefreshRefused,
}

impl TokenManager {
    /// `shared`: the store where replicas keep one token for the fleet (None: this process's own).
    pub fn new(
        provider: Arc<str>,
        base: &Url,
        client_id: Secret<String>,
        client_secret: Secret<String>,
        margin: Duration,
        shared: Option<Arc<dyn SharedState>>,
    ) -> Result<Self, url::ParseError> {
        let fleet = shared.map(|store| Fleet {
            store,
            token_key: format!("yeastar:{provider}:token"),
            lock_key: format!("yeastar:{provider}:renew"),
        });
        Ok(Self {
            provider,
            current: RwLock::new(None),
            gate: Mutex::new(Gate { refresh: None, generation: 0, fleet_generation: 0, rejected: None }),
            client_id,
            client_secret,
            margin,
            get_token_url: base.join("openapi/v1.0/get_token")?,
            refresh_token_url: base.join("openapi/v1.0/refresh_token")?,
            fleet,
        })
    }

    fn current(&self) -> Option<Arc<Token>> {
        self.current.read().ok().and_then(|t| t.clone())
    }

    /// True once the PBX has rejected our credentials.
    pub fn is_rejected(&self) -> bool {
        self.gate.try_lock().is_ok_and(|g| g.rejected.is_some())
    }

    /// A token to use now.
    pub async fn get(&self, out: &Outbound) -> Result<Arc<Token>, ProviderError> {
        let now = Instant::now();
        if let Some(token) = self.current() {
            if now < token.renew_at {
                return Ok(token);
            }
            if now < token.expires_at {
                // Within the margin: one caller renews, the others keep using it meanwhile.
                if let Ok(gate) = self.gate.try_lock() {
                    return match self.renew_locked(gate, out, Some(token.generation)).await {
                        Ok(t) => Ok(t),
                        Err(e) => {
                            tracing::warn!(provider = %self.provider, error = %e, "yeastar: early token renewal failed; using the current token");
                            Ok(token)
                        }
                    };
                }
                return Ok(token);
            }
        }
        let gate = self.gate.lock().await;
        self.renew_locked(gate, out, None).await
    }

    /// A new token because `stale` was refused (errcode 10004). If someone else
    /// already replaced `stale`, their token is returned without a vendor call.
    pub async fn replace(&self, out: &Outbound, stale: u64) -> Result<Arc<Token>, ProviderError> {
        let gate = self.gate.lock().await;
        self.renew_locked(gate, out, Some(stale)).await
    }

    /// Renews under the gate. `stale`: the generation the caller found unusable
    /// (None: no usable token at all).
    async fn renew_locked(
        &self,
        mut gate: tokio::sync::MutexGuard<'_, Gate>,
        out: &Outbound,
        stale: Option<u64>,
    ) -> Result<Arc<Token>, ProviderError> {
        let now = Instant::now();
        if let Some(token) = self.current() {
            let replaced = stale.is_some_and(|s| s != token.generation);
            let fresh = stale.is_none() && now < token.renew_at;
            if replaced || fresh {
                return Ok(token);
            }
        }
        if let Some(vendor) = &gate.rejected {
            return Err(rejected_error(vendor.clone()));
        }
        if let Some(fleet) = &self.fleet {
            match self.renew_with_fleet(fleet, &mut gate, out).await {
                Ok(renewed) => return renewed,
                Err(e) => tracing::warn!(
                    provider = %self.provider,
                    error = %e,
                    "yeastar: the shared store failed; renewing the token without the other replicas"
                ),
            }
        }
        let refresh = gate.refresh.take();
        let issued = self.renew_at_pbx(&mut gate, out, refresh).await?;
        Ok(self.install(&mut gate, issued, None))
    }

    /// Renews through the fleet's record: adopts a token another replica got,
    /// or renews under the fleet's lock and publishes the result, or waits for
    /// the replica holding the lock. `Err`: the store failed before any call to
    /// the PBX (the caller renews on its own).
    async fn renew_with_fleet(
        &self,
        fleet: &Fleet,
        gate: &mut Gate,
        out: &Outbound,
    ) -> Result<Result<Arc<Token>, ProviderError>, SharedError> {
        // Long enough for a refused refresh and a login, each within the timeout.
        let lock_ttl = out.timeout().saturating_mul(2);
        for _ in 0..LOCK_ROUNDS {
            if let Some(token) = self.adopt_newer(gate, self.read_record(fleet).await?) {
                return Ok(Ok(token));
            }
            if let Some(lock) = fleet.store.try_lock(&fleet.lock_key, lock_ttl).await? {
                let renewed = self.renew_under_lock(fleet, gate, out).await;
                if let Err(e) = fleet.store.unlock(&fleet.lock_key, &lock).await {
                    tracing::warn!(provider = %self.provider, error = %e, "yeastar: could not release the token renewal lock; it expires by itself");
                }
                return renewed;
            }
            // Another replica is renewing: wait for its record while its lock lasts.
            let until = Instant::now() + lock_ttl;
            let mut pause = FIRST_PAUSE;
            while Instant::now() < until {
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                pause = pause.saturating_mul(2).min(MAX_PAUSE);
                if let Some(token) = self.adopt_newer(gate, self.read_record(fleet).await?) {
                    return Ok(Ok(token));
                }
            }
        }
        Ok(Err(ProviderError::Unavailable {
            message: "another gateway replica is renewing the PBX token and has not finished".into(),
            retry_after: Duration::from_secs(5),
            vendor: VendorDetail::default(),
        }))
    }

    /// Holding the fleet's lock: adopts a record written since it was read, or
    /// renews at the PBX and writes the next record.
    async fn renew_under_lock(
        &self,
        fleet: &Fleet,
        gate: &mut Gate,
        out: &Outbound,
    ) -> Result<Result<Arc<Token>, ProviderError>, SharedError> {
        let record = self.read_record(fleet).await?;
        let generation = record.as_ref().map_or(0, |r| r.generation).max(gate.fleet_generation).saturating_add(1);
        let shared_refresh = record.as_ref().and_then(FleetToken::refresh);
        if let Some(token) = self.adopt_newer(gate, record) {
            return Ok(Ok(token));
        }
        let refresh = shared_refresh.or_else(|| gate.refresh.take());
        Ok(self.renew_for_fleet(fleet, gate, out, refresh, generation).await)
    }

    /// Renews at the PBX and publishes the tokens as the fleet's record `generation`.
    async fn renew_for_fleet(
        &self,
        fleet: &Fleet,
        gate: &mut Gate,
        out: &Outbound,
        refresh: Option<(Secret<String>, Instant)>,
        generation: u64,
    ) -> Result<Arc<Token>, ProviderError> {
        let issued = self.renew_at_pbx(gate, out, refresh).await?;
        let record = FleetToken::new(&issued, self.margin, generation);
        if let Err(e) = fleet.store.set(&fleet.token_key, &record.to_json(), record.ttl()).await {
            tracing::warn!(provider = %self.provider, error = %e, "yeastar: could not share the new token; other replicas will renew their own");
        }
        gate.fleet_generation = generation;
        Ok(self.install(gate, issued, Some(generation)))
    }

    /// The fleet's record, if there is a readable one.
    async fn read_record(&self, fleet: &Fleet) -> Result<Option<FleetToken>, SharedError> {
        let Some(json) = fleet.store.get(&fleet.token_key).await? else {
            return Ok(None);
        };
        // The parse error is not logged: it may quote a token.
        let record = serde_json::from_str(&json).ok();
        if record.is_none() {
            tracing::warn!(provider = %self.provider, "yeastar: the shared token record is unreadable; it will be renewed over");
        }
        Ok(record)
    }

    /// Takes the fleet's token if it is another than this process holds and
    /// has not expired.
    fn adopt_newer(&self, gate: &mut Gate, record: Option<FleetToken>) -> Option<Arc<Token>> {
        let record = record.filter(|r| r.generation != gate.fleet_generation)?;
        let now = now_ms();
        if now >= record.access_token_expires_at_ms {
            return None;
        }
        let in_ms = |at: u64| Instant::now() + Duration::from_millis(at.saturating_sub(now));
        // The record's refresh token is the fleet's to use; a local one is spent
        // or will be, so a fallback to renewing alone logs in rather than
        // presenting a rotated refresh token (a failed authentication at the PBX).
        gate.refresh = None;
        gate.fleet_generation = record.generation;
        let token = self.set_current(
            gate,
            record.access_token,
            in_ms(record.access_token_expires_at_ms),
            in_ms(record.renew_at_ms),
        );
        tracing::info!(
            provider = %self.provider,
            generation = token.generation,
            fleet_generation = record.generation,
            "yeastar: using the access token another replica got"
        );
        Some(token)
    }

    /// Renews at the PBX: with `refresh` while it lasts, else (or if the PBX
    /// refuses it) by logging in.
    async fn renew_at_pbx(
        &self,
        gate: &mut Gate,
        out: &Outbound,
        refresh: Option<(Secret<String>, Instant)>,
    ) -> Result<Issued, ProviderError> {
        if let Some((refresh, refresh_expires)) = refresh
            && Instant::now() < refresh_expires
        {
            let body = json!({ "refresh_token": refresh.expose() });
            match self.call(out, &self.refresh_token_url, body, gate).await {
                Ok(Renewal::Got(issued)) => return Ok(issued),
                Ok(Renewal::RefreshRefused) => {
                    tracing::warn!(provider = %self.provider, "yeastar: refresh token refused; logging in again");
                }
                Err(e) => {
                    // Transport trouble: keep the refresh token for next time.
                    gate.refresh = Some((refresh, refresh_expires));
                    return Err(e);
                }
            }
        }
        let body = json!({ "username": self.client_id.expose(), "password": self.client_secret.expose() });
        match self.call(out, &self.get_token_url, body, gate).await? {
            Renewal::Got(issued) => Ok(issued),
            Renewal::RefreshRefused => Err(rejected_error(gate.rejected.clone().unwrap_or_default())),
        }
    }

    /// Makes tokens the PBX issued this process's current token.
    /// `fleet_generation`: the record they were published as.
    fn install(&self, gate: &mut Gate, issued: Issued, fleet_generation: Option<u64>) -> Arc<Token> {
        let now = Instant::now();
        if let Some((refresh, life)) = issued.refresh {
            gate.refresh = Some((refresh, now + life.saturating_sub(REFRESH_SLACK)));
        }
        let lead = renewal_lead(self.margin, issued.access_life);
        let token = self.set_current(
            gate,
            issued.access,
            now + issued.access_life,
            now + issued.access_life.saturating_sub(lead),
        );
        let how = if issued.refreshed { "yeastar: access token refreshed" } else { "yeastar: logged in" };
        tracing::info!(provider = %self.provider, generation = token.generation, fleet_generation, "{how}");
        token
    }

    fn set_current(
        &self,
        gate: &mut Gate,
        access: Secret<String>,
        expires_at: Instant,
        renew_at: Instant,
    ) -> Arc<Token> {
        gate.generation += 1;
        let token = Arc::new(Token { access, expires_at, renew_at, generation: gate.generation });
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::clone(&token));
        }
        token
    }

    /// Calls `get_token` or `refresh_token`.
    async fn call(
        &self,
        out: &Outbound,
        url: &Url,
        body: serde_json::Value,
        gate: &mut Gate,
    ) -> Result<Renewal, ProviderError> {
        let is_login = url == &self.get_token_url;
        let answer = out.send(out.client().post(url.clone()).json(&body)).await?;
        let Envelope { errcode, errmsg, rest } = parse_envelope(&answer)?;
        if errcode != 0 {
            // -1/-2 are the PBX's own failures, not a verdict on our credentials.
            if matches!(errcode, -1 | -2) {
                return Err(errcode_error(errcode, errmsg.as_deref()));
            }
            if !is_login {
                return Ok(Renewal::RefreshRefused);
            }
            let vendor = VendorDetail::new(Some(answer.status), Some(errcode.into()), errmsg.as_deref());
            tracing::error!(
                provider = %self.provider,
                errcode,
                errmsg = errmsg.as_deref().unwrap_or(""),
                "yeastar: the PBX rejected the gateway's client id/secret; not retrying (5 failed logins block the IP). Fix the credentials and restart."
            );
            gate.rejected = Some(vendor.clone());
            return Err(rejected_error(vendor));
        }
        let parsed: TokenAnswer = serde_json::from_value(serde_json::Value::Object(rest))
            .map_err(|_| ProviderError::bad_answer(answer.status, "a token answer of an unexpected shape"))?;
        let Some(access) = parsed.access_token.filter(|t| !t.is_empty()) else {
            return Err(ProviderError::bad_answer(answer.status, "a token answer without access_token"));
        };
        let refresh = parsed.refresh_token.filter(|t| !t.is_empty()).map(|refresh| {
            (Secret::new(refresh), Duration::from_secs(parsed.refresh_token_expire_time.unwrap_or(86_400)))
        });
        Ok(Renewal::Got(Issued {
            access: Secret::new(access),
            access_life: Duration::from_secs(parsed.access_token_expire_time.unwrap_or(1800)),
            refresh,
            refreshed: !is_login,
        }))
    }
}

impl FleetToken {
    /// The record of tokens just issued.
    fn new(issued: &Issued, margin: Duration, generation: u64) -> Self {
        let now = now_ms();
        let after = |d: Duration| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            access_token: issued.access.clone(),
            access_token_expires_at_ms: after(issued.access_life),
            renew_at_ms: after(issued.access_life.saturating_sub(renewal_lead(margin, issued.access_life))),
            refresh_token: issued.refresh.as_ref().map(|(token, _)| token.clone()),
            refresh_token_expires_at_ms: issued.refresh.as_ref().map(|(_, life)| after(*life)),
            generation,
        }
    }

    /// The JSON stored (with the tokens: `Secret`'s own serialization hides them).
    fn to_json(&self) -> String {
        json!({
            "access_token": self.access_token.expose(),
            "access_token_expires_at_ms": self.access_token_expires_at_ms,
            "renew_at_ms": self.renew_at_ms,
            "refresh_token": self.refresh_token.as_ref().map(Secret::expose),
            "refresh_token_expires_at_ms": self.refresh_token_expires_at_ms,
            "generation": self.generation,
        })
        .to_string()
    }

    /// Kept while its refresh token lives (else while its access token does).
    fn ttl(&self) -> Duration {
        let until = self.refresh_token_expires_at_ms.unwrap_or(self.access_token_expires_at_ms);
        Duration::from_millis(until.saturating_sub(now_ms())).max(Duration::from_secs(1))
    }

    /// Its refresh token and when to stop using it (by our clock), if still usable.
    fn refresh(&self) -> Option<(Secret<String>, Instant)> {
        let token = self.refresh_token.clone()?;
        let left = Duration::from_millis(self.refresh_token_expires_at_ms?.saturating_sub(now_ms()));
        let usable = left.checked_sub(REFRESH_SLACK)?;
        Some((token, Instant::now() + usable))
    }
}

/// How long before its expiry a token is renewed: `margin`, but never in the
/// first half of a short-lived token.
fn renewal_lead(margin: Duration, lifetime: Duration) -> Duration {
    margin.min(lifetime / 2)
}

fn rejected_error(vendor: VendorDetail) -> ProviderError {
    ProviderError::Rejected {
        message: "the PBX rejected the gateway's client id/secret; the gateway will not log in again \
                  until its configuration is fixed and it is restarted (5 failed logins block its IP)"
            .to_owned(),
        vendor,
    }
}
