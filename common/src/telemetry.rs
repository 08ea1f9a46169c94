//! Logs and traces: JSON log lines filtered by `RUST_LOG`, and OTLP trace export only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (otherwise no OpenTelemetry layer exists at all).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether spans are exported; when not, the per-request context extraction is skipped.
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(clap::Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// OTLP endpoint for traces; unset means no tracing export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otel_exporter_otlp_protocol: String,
    /// `json` (one JSON object per line) or `text` (for a terminal).
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

impl TelemetryArgs {
    /// No trace export, logs in `log_format`: for tests and the local runner.
    pub fn local(log_format: &str) -> Self {
        Self {
            otel_exporter_otlp_endpoint: None,
            otel_exporter_otlp_protocol: "grpc".into(),
            log_format: log_format.into(),
        }
    }
}

/// For test binaries: text logs when `TEST_LOG` is set, otherwise none; installed once.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = init("test", &TelemetryArgs::local("text"));
        }
    });
}

/// Keeps the exporter alive; `shutdown` flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber. Call once per process, from `main`.
pub fn init(service: &'static str, args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match &args.otel_exporter_otlp_endpoint {
        Some(endpoint) if !endpoint.trim().is_empty() => {
            Some(tracer_provider(service, &args.otel_exporter_otlp_protocol)?)
        }
        _ => None,
    };
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if args.log_format == "text" {
        // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .try_init()?;
    } else {
        registry
            .with(
                json_subscriber::fmt::layer()
                    .flatten_event(true)
                    .with_current_span(true)
                    // The request span (with the trace and span ids) stays on the lines of events
                    // inside its child spans too (the DB calls), as `spans[0]`.
                    .with_span_list(true),
            )
            .try_init()?;
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(service: &'static str, protocol: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match protocol {
        "grpc" => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?,
        "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?,
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL must be `grpc` or `http/protobuf`, not `{other}`"
        ),
    };
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG itself.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(provider)
}

/// Makes an incoming W3C `traceparent` the parent of `span`, and records the trace and span ids
/// on it so every log line in the request carries them.
pub fn link_to_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
