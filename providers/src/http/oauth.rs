//! OAuth 2.0 client credentials (RFC 6749 §4.4) for `type: http` providers:
//! one access token for every request of the provider, renewed before its
//! `expires_in` runs out, one renewal at a time (the others wait for it and use
//! its token). A token endpoint that refuses the client is not asked again for
//! [`REJECTED_FOR`]: requests fail at once instead of hammering it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use gateway_config::Secret;
use http::HeaderValue;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::error::{ProviderError, VendorDetail};
use crate::outbound::Outbound;

/// How long a refused client is not tried again.
pub const REJECTED_FOR: Duration = Duration::from_secs(30);

/// A token without `expires_in` is renewed after this.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The client's credentials and its current token.
pub struct ClientCredentials {
    token_url: Url,
    client_id: Secret<String>,
    client_secret: Secret<String>,
    scope: Option<String>,
    current: Mutex<State>,
    /// Held while a renewal runs: one at a time.
    renewing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// The endpoint refused the client: not asked again until then.
    rejected_until: Option<Instant>,
    /// Tokens obtained so far (the renewal count, for logs and tests).
    issued: u64,
}

#[derive(Clone)]
struct Token {
    header: HeaderValue,
    renew_at: Instant,
}

impl ClientCredentials {
    pub fn new(
        token_url: Url,
        client_id: Secret<String>,
        client_secret: Secret<String>,
        scope: Option<String>,
    ) -> Self {
        Self {
            token_url,
            client_id,
            client_secret,
            scope,
            current: Mutex::new(State::default()),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `Authorization` value to send: the current token, or a new one.
    pub async fn authorization(&self, out: &Outbound) -> Result<HeaderValue, ProviderError> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        let _renewing = self.renewing.lock().await;
        // Another request may have renewed it while this one waited.
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        if self.state().rejected_until.is_some_and(|until| Instant::now() < until) {
            return Err(refused(None));
        }
        let token = self.fetch(out).await?;
        let header = token.header.clone();
        let mut state = self.state();
        state.token = Some(token);
        state.issued += 1;
        tracing::info!(tokens_issued = state.issued, "obtained an OAuth 2.0 access token for the provider");
        Ok(header)
    }

    /// Forgets `used` if it is still the current token (the vendor refused it):
    /// the next request renews.
    pub fn invalidate(&self, used: &HeaderValue) {
        let mut state = self.state();
        if state.token.as_ref().is_some_and(|t| t.header == *used) {
            state.token = None;
        }
    }

    /// Whether the token endpoint refuses the client now.
    pub fn is_rejected(&self) -> bool {
        self.state().rejected_until.is_some_and(|until| Instant::now() < until)
    }

    fn valid(&self) -> Option<HeaderValue> {
        let state = self.state();
        state.token.as_ref().filter(|t| Instant::now() < t.renew_at).map(|t| t.header.clone())
    }

    async fn fetch(&self, out: &Outbound) -> Result<Token, ProviderError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        // RFC 6749 §2.3.1: client credentials by HTTP Basic.
        let request = out
            .client()
            .post(self.token_url.clone())
            .basic_auth(self.client_id.expose(), Some(self.client_secret.expose()))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        let sent_at = Instant::now();
        let answer = out.send(request).await?;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        match answer.status {
            200..=299 => {}
            // invalid_client, unauthorized_client, invalid_grant, invalid_scope: the client is refused.
            400 | 401 | 403 => {
                self.state().rejected_until = Some(Instant::now() + REJECTED_FOR);
                let code = json.as_ref().and_then(|j| j.get("error")).cloned();
                let message = json.as_ref().and_then(|j| j.get("error_description")).and_then(Value::as_str);
                let error = code.as_ref().and_then(serde_json::Value::as_str).unwrap_or_default();
                tracing::warn!(
                    status = answer.status,
                    error,
                    "the OAuth 2.0 token endpoint refused the gateway's client; not asking again for {}s",
                    REJECTED_FOR.as_secs()
                );
                return Err(refused(Some(VendorDetail::new(Some(answer.status), code, message))));
            }
            429 | 500..=599 => {
                return Err(ProviderError::Unavailable {
                    message: "the provider's OAuth 2.0 token endpoint is unavailable".into(),
                    retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
                    vendor: VendorDetail::new(Some(answer.status), None, None),
                });
            }
            other => return Err(ProviderError::bad_answer(other, "a token endpoint answer it could not use")),
        }
        let json = json.ok_or_else(|| ProviderError::bad_answer(answer.status, "a token answer that is not JSON"))?;
        let access = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::bad_answer(answer.status, "a token answer without access_token"))?;
        let token_type = json.get("token_type").and_then(Value::as_str).unwrap_or("Bearer");
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(ProviderError::bad_answer(answer.status, "a token that is not a bearer token"));
        }
        let lifetime = json.get("expires_in").and_then(Value::as_u64).map_or(DEFAULT_LIFETIME, Duration::from_secs);
        // Renewed ahead of its end: a tenth of its life early (at most a minute), so a
        // request never carries a token that expires on the way.
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let mut header = HeaderValue::try_from(format!("Bearer {access}"))
            .map_err(|_| ProviderError::bad_answer(answer.status, "a token that is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(Token { header, renew_at: sent_at + lifetime.saturating_sub(margin) })
    }
}

fn refused(vendor: Option<VendorDetail>) -> ProviderError {
    ProviderError::Rejected {
        message: "the provider's OAuth 2.0 token endpoint refused the gateway's client credentials".into(),
        vendor: vendor.unwrap_or_default(),
    }
}
