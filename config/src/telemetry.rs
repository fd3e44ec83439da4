//! `telemetry:` — traces exported over OTLP (off by default). Metrics are
//! always served at `/metrics`; logs go to stdout (`RUST_LOG`, `LOG_FORMAT`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::ConfigError;

/// Distributed tracing. Without `otlp_endpoint` no span leaves the process and
/// no OpenTelemetry machinery is installed (no cost). Metrics are always served
/// at `/metrics`; logs go to stdout (`RUST_LOG`, `LOG_FORMAT=json`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP (protobuf) collector base URL, e.g. `http://otel-collector:4318`;
    /// spans are posted to `<otlp_endpoint>/v1/traces`. Omit to export nothing.
    pub otlp_endpoint: Option<Url>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded (0.0–1.0). A caller's `traceparent` decides
    /// for its own requests (parent-based sampling).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "summary-gateway".to_owned(), sample_ratio: 1.0 }
    }
}

impl TelemetryConfig {
    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        if let Some(url) = &self.otlp_endpoint
            && !matches!(url.scheme(), "http" | "https")
        {
            errors.push(ConfigError::new("telemetry.otlp_endpoint", "must be an http:// or https:// URL (OTLP/HTTP)"));
        }
        if self.service_name.trim().is_empty() {
            errors.push(ConfigError::new("telemetry.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            errors.push(ConfigError::new("telemetry.sample_ratio", "must be between 0.0 and 1.0"));
        }
    }
}
