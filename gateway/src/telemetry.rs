//! Logs and traces.
//!
//! Logs: tracing-subscriber to stdout, human-readable by default, JSON with
//! `LOG_FORMAT=json`; levels from `RUST_LOG` (default `info`).
//!
//! Traces, only with `telemetry.otlp_endpoint`: an OpenTelemetry layer beside
//! the log layer turns the `info`-level spans (whatever `RUST_LOG` says) into
//! OpenTelemetry spans, batched by a background thread and posted as OTLP/HTTP
//! protobuf to `<otlp_endpoint>/v1/traces`. W3C trace context is then read
//! from callers (`traceparent`, `tracestate`; see `middleware::trace`) and sent
//! to vendors (`providers::outbound`). New traces are sampled at
//! `telemetry.sample_ratio`; a caller's `traceparent` decides for its own.
//!
//! Without `otlp_endpoint` the subscriber is the log layer alone: no
//! OpenTelemetry layer, propagator or exporter thread, and the request path
//! pays one relaxed atomic load ([`providers::outbound::trace_context_enabled`]).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway_config::TelemetryConfig;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use url::Url;

/// At most one warning this often while spans cannot be exported.
const EXPORT_WARN_EVERY: Duration = Duration::from_secs(60);

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`init_with`] installed. Dropping it (or [`Telemetry::shutdown`]) exports
/// the spans still buffered: keep it until the server has stopped.
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered (at most [`SHUTDOWN_TIMEOUT`]) and stops
    /// the exporter. Blocks: call it outside the async runtime.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(error = %e, "spans still buffered at exit may not have been exported");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber for logs alone (the subcommands that do not
/// serve, tools). Safe to call more than once (later calls change nothing).
pub fn init() {
    init_logs_only();
}

/// Installs the global subscriber: logs, plus span export if `config` has an
/// `otlp_endpoint`. Safe to call more than once (later calls change nothing).
/// If the exporter cannot be built, that is logged and the gateway runs
/// without it.
pub fn init_with(config: &TelemetryConfig) -> Telemetry {
    let Some(endpoint) = &config.otlp_endpoint else {
        init_logs_only();
        return Telemetry { provider: None };
    };
    let provider = match tracer_provider(config, endpoint) {
        Ok(provider) => provider,
        Err(e) => {
            init_logs_only();
            tracing::error!(error = %e, "cannot export spans over OTLP; running without tracing");
            return Telemetry { provider: None };
        }
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("summary-gateway"))
        // Thread ids mean little on a work-stealing runtime; nothing here reads
        // the OpenTelemetry context from thread-locals (the outbound injection
        // takes it from the span), so entering a span need not attach it.
        .with_threads(false)
        .with_context_activation(false)
        // Spans and events at info and above are exported whatever RUST_LOG says.
        .with_filter(LevelFilter::INFO);
    // The same log lines as without tracing: the filter that was global is the log layer's own.
    let json = json_logs();
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(json.then(|| {
            fmt_layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(env_filter())
        }))
        .with((!json).then(|| fmt_layer().with_filter(env_filter())))
        .try_init();
    if installed.is_err() {
        // Another subscriber was there first (tests): it would never see our spans.
        drop(provider.shutdown());
        return Telemetry { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    providers::outbound::enable_trace_context();
    tracing::info!(
        otlp_endpoint = %redacted(endpoint),
        sample_ratio = config.sample_ratio,
        service_name = %config.service_name,
        "exporting spans over OTLP/HTTP"
    );
    Telemetry { provider: Some(provider) }
}

/// The log layer alone, its filter the global one.
fn init_logs_only() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let result = if json_logs() {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
    drop(result);
}

fn fmt_layer<S>() -> tracing_subscriber::fmt::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_target(false).with_ansi(std::io::stdout().is_terminal())
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

fn json_logs() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"))
}

/// The SDK pipeline: parent-based ratio sampler, resource, batch exporter over OTLP/HTTP.
fn tracer_provider(config: &TelemetryConfig, endpoint: &Url) -> Result<SdkTracerProvider, String> {
    // The exporter's blocking reqwest client needs rustls' crypto provider (https collectors).
    providers::outbound::install_crypto_provider();
    let traces = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces.as_str())
        .build()
        .map_err(|e| e.to_string())?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        // The batch processor runs its own thread: ending a span is a
        // non-blocking send into a bounded queue (a full queue drops the span).
        .with_batch_exporter(LoggedExporter::new(exporter, &traces))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(resource)
        .build())
}

/// `<endpoint>/v1/traces`, keeping any path prefix the endpoint has.
fn traces_url(endpoint: &Url) -> Url {
    let mut url = endpoint.clone();
    let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The endpoint without credentials or query, for log lines.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// The OTLP exporter, with its failures logged at most once per
/// [`EXPORT_WARN_EVERY`] (the SDK itself is built without internal logs).
#[derive(Debug)]
struct LoggedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    /// The collector URL as error messages print it, and how it is logged instead.
    url: (String, String),
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    /// Batches lost since the last warning.
    since_warning: u64,
    warned_at: Option<Instant>,
    /// Whether the last export failed (the next success is logged).
    failing: bool,
}

impl LoggedExporter {
    fn new(inner: opentelemetry_otlp::SpanExporter, traces: &Url) -> Self {
        Self { inner, url: (traces.to_string(), redacted(traces)), failures: Mutex::default() }
    }

    fn note(&self, result: &OTelSdkResult, spans: usize) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => {
                if failures.failing {
                    failures.failing = false;
                    tracing::info!("span export to the OTLP collector works again");
                }
            }
            Err(e) => {
                failures.failing = true;
                failures.since_warning += 1;
                let error = e.to_string().replace(&self.url.0, &self.url.1);
                if failures.warned_at.is_none_or(|at| at.elapsed() >= EXPORT_WARN_EVERY) {
                    tracing::warn!(
                        %error,
                        spans,
                        failed_batches = failures.since_warning,
                        "cannot export spans to the OTLP collector; they are dropped"
                    );
                    failures.warned_at = Some(Instant::now());
                    failures.since_warning = 0;
                } else {
                    tracing::debug!(%error, spans, "span export failed again");
                }
            }
        }
    }
}

impl SpanExporter for LoggedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.note(&result, spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The resource (service.name, ...) reaches the exporter this way.
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_v1_traces_under_the_endpoint() {
        let url = |s: &str| traces_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(url("https://gw.example/otel/"), "https://gw.example/otel/v1/traces");
        assert_eq!(redacted(&Url::parse("https://u:p@c.example/x?k=v").unwrap()), "https://c.example/x");
    }
}
