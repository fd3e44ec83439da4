//! Vendor-call metrics and spans, recorded around every [`Provider`](crate::Provider)
//! operation through the `metrics` facade (the gateway installs the recorder
//! and serves `/metrics`; without a recorder these are no-ops).
//!
//! Labels stay low-cardinality: the configured provider name, a static
//! operation and outcome, and `vendor_code` from a fixed set per vendor
//! ([`VendorCodes`], declared by each adapter): the vendor's own error code if
//! the adapter knows it (Yeastar `10004`), else `other`; without a code its
//! HTTP status if the adapter knows it, else `other`; `none` when the vendor
//! said neither (success, timeout, no answer). A vendor sending a new code
//! every time adds no series.

use std::future::Future;

use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::ProviderError;

/// `sg_vendor_calls_total{provider, operation, outcome, vendor_code}`.
pub const VENDOR_CALLS: &str = "sg_vendor_calls_total";
/// `sg_vendor_call_duration_seconds{provider, operation}`.
pub const VENDOR_DURATION: &str = "sg_vendor_call_duration_seconds";

/// The codes one vendor's adapter knows: with `other` and `none` the only
/// values its `vendor_code` label takes.
#[derive(Debug)]
pub struct VendorCodes {
    /// The vendor's own error codes (Yeastar errcodes, ElevateAI's `code`).
    pub codes: &'static [&'static str],
    /// The HTTP statuses its adapter tells apart.
    pub statuses: &'static [&'static str],
}

/// HTTP statuses every adapter tells apart: success, the 5xx of a failing
/// vendor, throttling.
pub const COMMON_STATUSES: [&str; 6] = ["200", "429", "500", "502", "503", "504"];

/// Runs one vendor operation in a `vendor_call` span and records its outcome and latency.
pub(crate) async fn record<T>(
    provider: &std::sync::Arc<str>,
    vendor: &'static str,
    codes: &'static VendorCodes,
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
        Ok(_) => ("ok", "none"),
        Err(e) => (outcome(e), vendor_code(codes, e)),
    };
    span.record("outcome", outcome);
    span.record("vendor_code", code);
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

/// The `vendor_code` label of a failed call: always one of `known`'s, `other` or `none`.
fn vendor_code(known: &VendorCodes, e: &ProviderError) -> &'static str {
    let Some(vendor) = e.vendor() else { return "none" };
    let code = match &vendor.code {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Null) | None => None,
        Some(_) => Some(String::new()),
    };
    match (code, vendor.status) {
        (Some(code), _) => known.codes.iter().copied().find(|k| *k == code).unwrap_or("other"),
        (None, Some(status)) => {
            let status = status.to_string();
            known.statuses.iter().copied().find(|k| *k == status).unwrap_or("other")
        }
        (None, None) => "none",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::VendorDetail;

    const KNOWN: VendorCodes = VendorCodes { codes: &["10004", "-2", "invalid_token"], statuses: &["404", "503"] };

    fn with(code: Option<Value>, status: Option<u16>) -> ProviderError {
        ProviderError::Rejected { message: String::new(), vendor: VendorDetail::new(status, code, None) }
    }

    #[test]
    fn vendor_codes_are_the_known_ones_or_other() {
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from(10004)), Some(200))), "10004");
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from(-2)), Some(200))), "-2");
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from("10004")), Some(200))), "10004", "as a string too");
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from("invalid_token")), None)), "invalid_token");
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from(10005)), Some(200))), "other");
        assert_eq!(vendor_code(&KNOWN, &with(Some(Value::from("a sentence with spaces")), None)), "other");
        assert_eq!(vendor_code(&KNOWN, &with(Some(serde_json::json!({"nested": 1})), None)), "other");
        assert_eq!(vendor_code(&KNOWN, &with(None, Some(503))), "503");
        assert_eq!(vendor_code(&KNOWN, &with(None, Some(418))), "other");
        assert_eq!(vendor_code(&KNOWN, &with(None, None)), "none");
        assert_eq!(vendor_code(&KNOWN, &ProviderError::Timeout { after: Duration::from_secs(1) }), "none");
    }

    #[test]
    fn a_thousand_distinct_unknown_codes_make_one_label_value() {
        let values: std::collections::BTreeSet<&str> = (0..1000)
            .flat_map(|i| {
                [
                    vendor_code(&KNOWN, &with(Some(Value::from(900_000 + i)), Some(200))),
                    vendor_code(&KNOWN, &with(Some(Value::from(format!("E{i}"))), None)),
                    vendor_code(&KNOWN, &with(None, Some(u16::try_from(100 + i % 500).unwrap()))),
                ]
            })
            .collect();
        assert_eq!(values.into_iter().collect::<Vec<_>>(), ["404", "503", "other"]);
    }
}
