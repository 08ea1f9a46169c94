//! The HTTP stack every API router gets: request ids, a span per request, metrics by route
//! template, security headers, a timeout, a body limit, panics caught, and problem+json for
//! every error the framework itself produces (404, 405, 413, 415, timeouts).

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, OnResponse, TraceLayer};

use crate::Problem;
use crate::metrics::{HttpMetrics, UNMATCHED_ROUTE, track_http};
use crate::problem::PROBLEM_JSON;

/// Bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Address of the API listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /metrics); never route it publicly.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9000")]
    pub admin_addr: SocketAddr,
    /// A request still running after this long is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Comma-separated origins allowed by CORS; empty means no CORS headers at all.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_allowed_origins: Vec<String>,
    /// After SIGTERM: keep serving (while /readyz says 503) this long, so endpoints update.
    #[arg(long, env = "SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,
    /// After the delay: how long in-flight requests get to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 20)]
    pub shutdown_timeout_seconds: u64,
    /// A request's line and headers must arrive within this long of its first byte (of the
    /// accept, for a connection's first request), or the connection is closed. Both listeners.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_read_timeout_ms: u64,
    /// A kept-alive connection idle this long between requests is closed. Keep it longer than
    /// the proxy's upstream keep-alive timeout, or the proxy reuses closed connections (502s).
    #[arg(long, env = "HTTP_KEEPALIVE_TIMEOUT_SECONDS", default_value_t = 75,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_keepalive_timeout_seconds: u64,
    /// Open connections per listener (API and admin each); at the cap, new connections wait in
    /// the kernel's accept queue until one closes.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
}

impl HttpArgs {
    /// The limits every connection, on both listeners, is held to.
    pub fn connection_limits(&self) -> crate::listener::ConnectionLimits {
        crate::listener::ConnectionLimits {
            header_read_timeout: Duration::from_millis(self.http_header_read_timeout_ms),
            keepalive_timeout: Duration::from_secs(self.http_keepalive_timeout_seconds),
            max_connections: self.http_max_connections as usize,
        }
    }
}

/// Wraps an API router in the shared stack. Layers run outermost first as listed in the body,
/// read bottom-up.
pub fn api_stack(router: Router, args: &HttpArgs, metrics: HttpMetrics) -> anyhow::Result<Router> {
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let router = router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(middleware::map_response(problem_for_bare_errors))
        .layer(middleware::from_fn_with_state(metrics, track_http))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status)
                // A 503 under overload is an expected answer, not an incident: one ERROR line per
                // shed request would cost CPU on the hot path and fill disks. Causes worth an
                // ERROR (a database fault, a panic) are logged where they happen.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    Ok(match cors(&args.cors_allowed_origins)? {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("CORS_ALLOWED_ORIGINS: `{o}` is not a valid origin"))
        })
        .collect::<Result<_, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods(tower_http::cors::Any)
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([REQUEST_ID, header::LINK, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    ))
}

/// The span every request runs in. Credentials are never recorded: only the route, method,
/// request id, and (once authenticated) the user and session ids.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", request.method(), route),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id,
        user_id = tracing::field::Empty,
        session_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    crate::telemetry::link_to_remote_parent(&span, request.headers());
    span
}

/// Records the status on the request span (a 5xx marks the trace as failed), then logs the
/// response as tower-http does by default.
fn record_status(response: &Response, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    DefaultOnResponse::default().on_response(response, latency, span);
}

fn panic_problem(_panic: Box<dyn Any + Send + 'static>) -> Response {
    // The panic message may quote request data; the panic hook already logged it.
    tracing::error!("request handler panicked");
    Problem::internal().into_response()
}

/// Replaces a framework's plain or empty error body with problem+json, keeping its headers
/// (`Allow` on 405, for one).
async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the limit",
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long; retry shortly",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let mut problem = Problem::new(status, detail);
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER)
    {
        problem = problem.with_retry_after(1);
    }
    let fresh = problem.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in fresh.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, fresh.into_body())
}
