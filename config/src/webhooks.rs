//! `webhooks:` — deliveries to callers' `callback_url`.

use serde::{Deserialize, Serialize};

/// Outgoing webhooks.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Accept callback URLs that resolve to loopback, private, link-local or
    /// metadata addresses. Off by default: such URLs get 422 `invalid_callback_url`.
    pub allow_private_networks: bool,
}
