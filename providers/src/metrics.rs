//! Vendor-call metrics and spans, recorded around every [`Provider`](crate::Provider)
//! operation through the `metrics` facade (the gateway installs the recorder
//! and serves `/metrics`; without a recorder these are no-ops).
//!
//! Labels stay low-cardinality: the configured provider name, a static
//! operation and outcome, and the vendor's own error code only when it is a
//! short token (`10004`, `invalid_token`), otherwise its HTTP status, otherwise `none`.

use std::future::Future;

use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::ProviderError;

/// `sg_vendor_calls_total{provider, operation, outcome, vendor_code}`.
pub const VENDOR_CALLS: &str = "sg_vendor_calls_total";
/// `sg_vendor_call_duration_seconds{provider, operation}`.
pub const VENDOR_DURATION: &str = "sg_vendor_call_duration_seconds";

/// Longest vendor code kept as a label value.
const MAX_CODE_LEN: usize = 32;

/// Runs one vendor operation in a `vendor_call` span and records its outcome and latency.
pub(crate) async fn record<T>(
    provider: &std::sync::Arc<str>,
    vendor: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let span = tracing::info_span!(
        "vendor_call",
        otel.kind = "internal",
        provider = &**provider,
        vendor,
        operation,
        outcome = tracing::field::Empty,
        vendor_code = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let (outcome, code) = match &result {
        Ok(_) => ("ok", "none".to_owned()),
        Err(e) => (outcome(e), vendor_code(e)),
    };
    span.record("outcome", outcome);
    span.record("vendor_code", code.as_str());
    let name = metrics::SharedString::from(std::sync::Arc::clone(provider));
    metrics::counter!(VENDOR_CALLS, "provider" => name.clone(), "operation" => operation, "outcome" => outcome, "vendor_code" => code)
        .increment(1);
    metrics::histogram!(VENDOR_DURATION, "provider" => name, "operation" => operation).record(elapsed.as_secs_f64());
    result
}

/// The error's class, as in the gateway's error table.
pub const fn outcome(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::NotFound { .. } => "not_found",
        ProviderError::NotReady { .. } => "not_ready",
        ProviderError::Rejected { .. } => "rejected",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Overloaded { .. } => "overloaded",
        ProviderError::CircuitOpen { .. } => "circuit_open",
        ProviderError::Timeout { .. } => "timeout",
    }
}

/// The vendor's code if it is a short token, else its HTTP status, else `none`.
fn vendor_code(e: &ProviderError) -> String {
    let Some(vendor) = e.vendor() else { return "none".to_owned() };
    let token = match &vendor.code {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    match token {
        Some(t)
            if !t.is_empty()
                && t.len() <= MAX_CODE_LEN
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            t
        }
        Some(_) => "other".to_owned(),
        None => vendor.status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::VendorDetail;

    #[test]
    fn vendor_codes_stay_short_tokens() {
        let with = |code: Option<Value>, status: Option<u16>| ProviderError::Rejected {
            message: String::new(),
            vendor: VendorDetail::new(status, code, None),
        };
        assert_eq!(vendor_code(&with(Some(Value::from(10004)), Some(200))), "10004");
        assert_eq!(vendor_code(&with(Some(Value::from("invalid_token")), None)), "invalid_token");
        assert_eq!(vendor_code(&with(Some(Value::from("a sentence with spaces")), None)), "other");
        assert_eq!(vendor_code(&with(Some(Value::from("x".repeat(33))), None)), "other");
        assert_eq!(vendor_code(&with(None, Some(503))), "503");
        assert_eq!(vendor_code(&ProviderError::Timeout { after: Duration::from_secs(1) }), "none");
    }
}
