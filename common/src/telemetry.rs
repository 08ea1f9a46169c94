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
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether spans are exported; when not, the per-request context extraction is skipped.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The target of the database client spans: each statement's (`db.tasks.get`, …), the pool's
/// wait and the `BEGIN`. They are made only for a reader: the trace exporter, a filter with span
/// directives, or a `RUST_LOG` that names this target (`info,db.client=info`); see
/// `LogFilter::without_db_spans`. A dot keeps it apart from every crate's module path, which a
/// target filter would match by prefix.
pub const DB_SPANS: &str = "db.client";

/// The client span of one statement run inline (the store functions use
/// `#[tracing::instrument(target = "db.client", …)]`). It records no parameters, so no email,
/// hash or token reaches a trace.
#[macro_export]
macro_rules! db_span {
    ($name:literal, $operation:literal) => {
        ::tracing::info_span!(
            target: $crate::telemetry::DB_SPANS,
            $name,
            db.system = "postgresql",
            db.operation.name = $operation,
            otel.kind = "client"
        )
    };
}

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
            // The test harness reports a failing test by its panic message: keep Rust's hook.
            let _ = std::panic::take_hook();
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

/// The log filter of `RUST_LOG`, in the cheaper of the two forms that can hold it.
#[derive(Debug)]
enum LogFilter {
    /// Targets and levels only (`info,sqlx=warn`): a fixed table, consulted when a span or an
    /// event is made and never again.
    Static(Box<Targets>),
    /// Span and field directives (`[db.tasks.list]=debug`) need `EnvFilter`, which keeps a map
    /// of the spans that match, behind a lock, and reads it at every enter and exit of every
    /// span. sqlx enters and exits the statement's span for each row it hands on, so on a page
    /// of 100 tasks that map cost 7–8 % of task-service's CPU (RESULTS.md, run 22); only a filter
    /// that needs it pays it.
    PerSpan(Box<EnvFilter>),
}

/// `RUST_LOG` (`info` when unset or blank), or why it was refused and `info` taken instead.
fn log_filter(directives: Option<&str>) -> (LogFilter, Option<String>) {
    let info = || LogFilter::Static(Box::new(Targets::new().with_default(tracing::Level::INFO)));
    // Spaces and empty directives are dropped: `Targets` would read `""` as "every target".
    let directives = directives
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    if directives.is_empty() {
        return (info(), None);
    }
    // `[` opens a span or field directive, which only `EnvFilter` understands (`Targets` would
    // take `[span]` for a target's name and never match it). Quotes kept from an env file
    // (`RUST_LOG="info"`) would likewise make a target that matches nothing: refused instead.
    let parsed = if directives.contains(['"', '\'']) {
        Err("quotes are not part of a log filter".to_owned())
    } else if directives.contains('[') {
        EnvFilter::try_new(&directives)
            .map(|env_filter| LogFilter::PerSpan(Box::new(env_filter)))
            .map_err(|error| error.to_string())
    } else {
        directives
            .parse::<Targets>()
            .map(|targets| LogFilter::Static(Box::new(targets)))
            .map_err(|error| error.to_string())
    };
    match parsed {
        Ok(filter) => (filter, None),
        Err(error) => (info(), Some(error)),
    }
}

/// The filter `init` installs: `RUST_LOG`'s, and without the database spans unless traces are
/// exported.
fn configured_filter(directives: Option<&str>, exporting: bool) -> (LogFilter, Option<String>) {
    let (filter, refused) = log_filter(directives);
    let filter = if exporting {
        filter
    } else {
        filter.without_db_spans()
    };
    (filter, refused)
}

impl LogFilter {
    /// Without a trace exporter nothing reads the database client spans: a log line inside one
    /// carries the request's span all the same (and sqlx's own lines name the statement), yet
    /// making, entering and closing them cost 1–5 % of task-service's CPU per request (RESULTS.md,
    /// run 27). The static filter leaves them out where they are made, unless `RUST_LOG` names
    /// their target (or a prefix of it). A filter with span directives keeps them: a directive
    /// such as `[db.tasks.list]=debug` needs its span to exist.
    fn without_db_spans(self) -> Self {
        match self {
            Self::Static(targets)
                if !targets
                    .iter()
                    .any(|(target, _)| DB_SPANS.starts_with(target)) =>
            {
                Self::Static(Box::new(
                    targets.with_target(DB_SPANS, tracing::level_filters::LevelFilter::OFF),
                ))
            }
            other => other,
        }
    }

    fn layer(self) -> Box<dyn Layer<Registry> + Send + Sync> {
        match self {
            Self::Static(targets) => (*targets).boxed(),
            Self::PerSpan(env_filter) => (*env_filter).boxed(),
        }
    }
}

/// Installs the global subscriber. Call once per process, from `main`.
pub fn init(service: &'static str, args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let provider = match &args.otel_exporter_otlp_endpoint {
        Some(endpoint) if !endpoint.trim().is_empty() => {
            check_endpoint(endpoint)?;
            Some(tracer_provider(service, &args.otel_exporter_otlp_protocol)?)
        }
        _ => None,
    };
    let (filter, refused) = configured_filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        provider.is_some(),
    );
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let registry = tracing_subscriber::registry()
        .with(filter.layer())
        .with(otel);
    if provider.is_some() || args.log_format == "text" {
        crate::request_fields::keep_span_fields(args.log_format == "text");
    }
    if args.log_format == "text" {
        // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .try_init()?;
    } else {
        registry.with(json_lines(std::io::stdout)).try_init()?;
    }
    log_panics();
    if let Some(error) = refused {
        tracing::warn!(%error, "RUST_LOG is not a valid log filter; logging at info");
    }
    Ok(Telemetry { provider })
}

/// The JSON log layer: one object per line, the event's fields at the top level, the request's
/// fields (`request_fields`) as `request`, and every open span as `spans` (the request span
/// first: with traces exported, the database spans follow).
pub fn json_lines<S, W>(writer: W) -> json_subscriber::fmt::Layer<S, W>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    let mut layer = json_subscriber::fmt::layer()
        .with_writer(writer)
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true);
    layer
        .inner_layer_mut()
        .add_dynamic_field("request", |event, context| {
            crate::request_fields::innermost(context.event_scope(event)?)
        });
    layer
}

/// The exporters are built without TLS (neither tonic's nor reqwest's): an `https://` endpoint
/// would start, then fail every export, and every span would be lost without a word at start.
fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !endpoint.trim().to_ascii_lowercase().starts_with("https://"),
        "OTEL_EXPORTER_OTLP_ENDPOINT: https is not supported (the exporter has no TLS); send to an OpenTelemetry Collector over http, in the cluster or as a sidecar, and let it forward over TLS"
    );
    Ok(())
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
    let resource = resource(service);
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

/// The resource the spans name: `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) when the environment sets one, as the OpenTelemetry specification
/// asks (the SDK's detectors read both), and the binary's own name otherwise.
fn resource(service: &'static str) -> Resource {
    let version = KeyValue::new("service.version", env!("CARGO_PKG_VERSION"));
    let detected = Resource::builder().with_attribute(version.clone()).build();
    if named_by_environment(&detected) {
        return detected;
    }
    Resource::builder()
        .with_service_name(service)
        .with_attribute(version)
        .build()
}

/// Whether the detected resource has a name of the environment's rather than the SDK's
/// `unknown_service…` placeholder.
fn named_by_environment(resource: &Resource) -> bool {
    resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"))
}

/// Makes a panic one error line of the log, in the log's format and with the request's fields,
/// instead of Rust's multi-line text on stderr, which a log pipeline splits into lines of no
/// level. The message and where it happened are kept; set `RUST_BACKTRACE=1` for a backtrace.
pub fn log_panics() {
    thread_local! {
        static LOGGING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    // A panic while logging a panic (in the log's writer, say) goes to the hook before this
    // one, Rust's own, rather than into this one again.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if LOGGING.with(|logging| logging.replace(true)) {
            previous(info);
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".to_owned());
        let location = info
            .location()
            .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()));
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        let thread = std::thread::current();
        tracing::error!(
            panic = %message,
            location = location.as_deref(),
            thread = thread.name().unwrap_or("unnamed"),
            backtrace = backtrace.as_deref(),
            "panicked"
        );
        LOGGING.with(|logging| logging.set(false));
    }));
}

/// Whether spans go to an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` set).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes an incoming W3C `traceparent` the parent of `span`, and puts the trace and span ids in
/// the request's `fields`, so every log line in the request carries them.
pub fn link_to_remote_parent(
    span: &tracing::Span,
    headers: &HeaderMap,
    fields: &mut crate::request_fields::RequestFields,
) {
    if !exporting() {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    if ids.is_valid() {
        fields.trace_id = Some(ids.trace_id().to_string());
        fields.span_id = Some(ids.span_id().to_string());
        if crate::request_fields::ids_on_span() {
            span.record("trace_id", fields.trace_id.as_deref());
            span.record("span_id", fields.span_id.as_deref());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn spans_are_named_by_the_environment_when_it_names_the_service() {
        let service_name = |resource: &Resource| {
            resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|name| name.as_str().into_owned())
        };
        let named = Resource::builder_empty()
            .with_service_name("todo-tasks")
            .build();
        assert!(named_by_environment(&named));
        let unnamed = Resource::builder_empty()
            .with_service_name("unknown_service:task-service")
            .build();
        assert!(!named_by_environment(&unnamed));
        // What this process's environment gives: a name of its own, or the binary's.
        let expected = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "task-service".to_owned());
        if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            assert_eq!(
                service_name(&resource("task-service")).as_deref(),
                Some(expected.as_str())
            );
        }
    }

    /// Runs `check` with `filter` as the thread's subscriber.
    fn under<T>(filter: LogFilter, check: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(filter.layer());
        tracing::subscriber::with_default(subscriber, check)
    }

    #[test]
    fn an_https_trace_endpoint_is_refused_at_start() {
        let error = check_endpoint("HTTPS://collector.example:4317").unwrap_err();
        assert!(
            error.to_string().contains("https is not supported"),
            "{error}"
        );
        assert!(check_endpoint("http://otel-collector.observability:4317").is_ok());
    }

    #[test]
    fn unset_or_blank_logs_at_info() {
        for directives in [None, Some(""), Some("  "), Some(" , ")] {
            let (filter, refused) = log_filter(directives);
            assert!(matches!(filter, LogFilter::Static(_)), "{directives:?}");
            assert_eq!(refused, None);
            let (info, debug) = under(filter, || {
                (
                    tracing::enabled!(Level::INFO),
                    tracing::enabled!(Level::DEBUG),
                )
            });
            assert!(info && !debug, "{directives:?}: info {info}, debug {debug}");
        }
    }

    #[test]
    fn targets_and_levels_get_the_static_filter() {
        let (filter, refused) = log_filter(Some("warn, sqlx=debug ,"));
        assert!(matches!(filter, LogFilter::Static(_)), "{filter:?}");
        assert_eq!(refused, None);
        let (service_info, service_warn, sqlx_debug, sqlx_trace) = under(filter, || {
            (
                tracing::enabled!(target: "task_service", Level::INFO),
                tracing::enabled!(target: "task_service", Level::WARN),
                tracing::enabled!(target: "sqlx::query", Level::DEBUG),
                tracing::enabled!(target: "sqlx::query", Level::TRACE),
            )
        });
        assert!(!service_info && service_warn && sqlx_debug && !sqlx_trace);
    }

    #[test]
    fn span_directives_get_env_filter_and_apply_inside_the_span() {
        let (filter, refused) = log_filter(Some("warn,[db.tasks.list]=debug"));
        assert!(matches!(filter, LogFilter::PerSpan(_)), "{filter:?}");
        assert_eq!(refused, None);
        let (outside, inside) = under(filter, || {
            let outside = tracing::enabled!(Level::DEBUG);
            let span = tracing::info_span!("db.tasks.list");
            let _entered = span.enter();
            (outside, tracing::enabled!(Level::DEBUG))
        });
        assert!(!outside && inside, "outside {outside}, inside {inside}");
    }

    /// Which spans are made under `filter`: a statement's, the pool wait's inside a request,
    /// and the request's.
    fn spans_made(filter: LogFilter) -> (bool, bool, bool) {
        under(filter, || {
            let request = tracing::info_span!("request");
            let _in_request = request.enter();
            let statement = crate::db_span!("db.tasks.list", "SELECT");
            let pool_wait = crate::db::child_span("db.pool.acquire");
            (
                !statement.is_disabled(),
                !pool_wait.is_disabled(),
                !request.is_disabled(),
            )
        })
    }

    #[test]
    fn without_an_exporter_db_spans_are_made_only_when_named() {
        // (RUST_LOG, statement span made, pool-wait span made, request span made)
        for (directives, made) in [
            (None, (false, false, true)),
            (Some("trace"), (false, false, true)),
            (Some("info,sqlx=debug"), (false, false, true)),
            (Some("info,db.client=info"), (true, true, true)),
            (Some("info,db=debug"), (true, true, true)),
            // A span directive needs its span: the filter that reads them keeps them (those
            // its own rules allow: here only the list's statement).
            (Some("warn,[db.tasks.list]=debug"), (true, false, false)),
        ] {
            let (filter, refused) = configured_filter(directives, false);
            assert_eq!(refused, None);
            assert_eq!(spans_made(filter), made, "{directives:?}");
        }
        // With an exporter the filter is used as it is.
        let (filter, _) = configured_filter(None, true);
        assert_eq!(spans_made(filter), (true, true, true));
    }

    #[test]
    fn an_invalid_filter_is_refused_for_info() {
        for directives in [
            "sqlx=loud",
            "[db.tasks.list]=loud",
            "info,=warn=debug",
            "\"debug\"",
            "'debug'",
        ] {
            let (filter, refused) = log_filter(Some(directives));
            assert!(refused.is_some(), "{directives} was accepted");
            let (info, debug) = under(filter, || {
                (
                    tracing::enabled!(Level::INFO),
                    tracing::enabled!(Level::DEBUG),
                )
            });
            assert!(info && !debug, "{directives}: info {info}, debug {debug}");
        }
    }
}
