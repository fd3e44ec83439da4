//! Yeastar's access token, shared by every request of one provider.
//!
//! - One token for all requests: `get_token` is called once, then the token is
//!   renewed with `refresh_token` (which also rotates the refresh token) when it
//!   comes within `token_refresh_margin` of its 30-minute expiry.
//! - Single flight: whoever needs a new token takes the gate; everyone else
//!   waiting on the gate finds the new token when they get it and does not log
//!   in again. Reading the current token takes no async lock.
//! - A rejected credential is never retried: 5 failed logins block the
//!   gateway's IP at the PBX, so after one rejection the provider fails fast
//!   until its configuration is fixed and the gateway restarted.

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

/// A live access token.
pub struct Token {
    access: Secret<String>,
    /// When the PBX will stop accepting it (by our clock).
    expires_at: Instant,
    /// When we start renewing it.
    renew_at: Instant,
    /// Distinguishes tokens, so a request that saw token N expire does not renew N+1.
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
    rejected: Option<VendorDetail>,
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
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    access_token_expire_time: Option<u64>,
    refresh_token: Option<String>,
    refresh_token_expire_time: Option<u64>,
}

enum Renewal {
    Got(Arc<Token>),
    /// The PBX refused the refresh token (expired or unknown): log in instead.
    RefreshRefused,
}

impl TokenManager {
    pub fn new(
        provider: Arc<str>,
        base: &Url,
        client_id: Secret<String>,
        client_secret: Secret<String>,
        margin: Duration,
    ) -> Result<Self, url::ParseError> {
        Ok(Self {
            provider,
            current: RwLock::new(None),
            gate: Mutex::new(Gate { refresh: None, generation: 0, rejected: None }),
            client_id,
            client_secret,
            margin,
            get_token_url: base.join("openapi/v1.0/get_token")?,
            refresh_token_url: base.join("openapi/v1.0/refresh_token")?,
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
        if let Some((refresh, refresh_expires)) = gate.refresh.take()
            && now < refresh_expires
        {
            let body = json!({ "refresh_token": refresh.expose() });
            match self.call(out, &self.refresh_token_url, body, &mut gate).await {
                Ok(Renewal::Got(token)) => {
                    tracing::info!(provider = %self.provider, generation = token.generation, "yeastar: access token refreshed");
                    return Ok(token);
                }
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
        match self.call(out, &self.get_token_url, body, &mut gate).await? {
            Renewal::Got(token) => {
                tracing::info!(provider = %self.provider, generation = token.generation, "yeastar: logged in");
                Ok(token)
            }
            Renewal::RefreshRefused => Err(rejected_error(gate.rejected.clone().unwrap_or_default())),
        }
    }

    /// Calls `get_token` or `refresh_token` and installs the answer.
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
        let now = Instant::now();
        let lifetime = Duration::from_secs(parsed.access_token_expire_time.unwrap_or(1800));
        // Renew `margin` ahead, but never in the first half of a short-lived token.
        let lead = self.margin.min(lifetime / 2);
        gate.generation += 1;
        if let Some(refresh) = parsed.refresh_token.filter(|t| !t.is_empty()) {
            let refresh_life = Duration::from_secs(parsed.refresh_token_expire_time.unwrap_or(86_400));
            gate.refresh = Some((Secret::new(refresh), now + refresh_life.saturating_sub(Duration::from_secs(60))));
        }
        let token = Arc::new(Token {
            access: Secret::new(access),
            expires_at: now + lifetime,
            renew_at: now + lifetime - lead,
            generation: gate.generation,
        });
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::clone(&token));
        }
        Ok(Renewal::Got(token))
    }
}

fn rejected_error(vendor: VendorDetail) -> ProviderError {
    ProviderError::Rejected {
        message: "the PBX rejected the gateway's client id/secret; the gateway will not log in again \
                  until its configuration is fixed and it is restarted (5 failed logins block its IP)"
            .to_owned(),
        vendor,
    }
}
