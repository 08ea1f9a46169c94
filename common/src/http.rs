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
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, OnResponse, TraceLayer};

use crate::Problem;
use crate::metrics::{HttpMetrics, track_http};
use crate::problem::PROBLEM_JSON;
use crate::request_fields::{self, RequestFields};

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

/// Wraps an API router in the shared stack, listed outermost first.
///
/// The layers are composed into one service and applied with one `Router::layer`: each
/// `Router::layer` call boxes its layer around every route, and a request then paid a clone of
/// each boxed service and an allocation for each boxed future, eleven times over
/// (`deploy/bench/RESULTS.md`, run 25).
pub fn api_stack(router: Router, args: &HttpArgs, metrics: HttpMetrics) -> anyhow::Result<Router> {
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let stack = ServiceBuilder::new()
        // Outside CORS, so that a preflight, which CORS answers itself, has a request id too.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .option_layer(cors(&args.cors_allowed_origins)?)
        // Where a layer needs the plain body type (CORS, axum's middleware), the body is boxed
        // into one: the only places a request pays for it.
        .map_response(IntoResponse::into_response)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status)
                // A 503 under overload is an expected answer, not an incident: one ERROR line per
                // shed request would cost CPU on the hot path and fill disks. Causes worth an
                // ERROR (a database fault, a panic) are logged where they happen.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(middleware::from_fn_with_state(metrics, track_http))
        .layer(middleware::map_response(problem_for_bare_errors))
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Ok(router.layer(stack))
}

fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            // tower-http panics on a wildcard in a list; credentials across origins rule it out.
            anyhow::ensure!(
                o != "*",
                "CORS_ALLOWED_ORIGINS: `*` is not allowed; list the origins"
            );
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
            // Every request header the API reads and every response header it sets: a browser
            // sends no other header across origins and shows its scripts no other (the tasks
            // API's conditional and idempotent requests would be unusable from a page).
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                REQUEST_ID,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                REQUEST_ID,
                header::LINK,
                header::RETRY_AFTER,
                header::ETAG,
                HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// The span every request runs in. Credentials are never recorded: only the route, method,
/// request id, and (once authenticated) the user and session ids.
///
/// Those are kept as values beside the span and written only on the lines that are logged
/// (`request_fields`); the span carries them as fields only where they are read as it runs,
/// for the trace exporter and the text log format.
fn request_span(request: &Request) -> tracing::Span {
    let mut fields = RequestFields {
        request_id: request
            .headers()
            .get(REQUEST_ID)
            .cloned()
            .unwrap_or(HeaderValue::from_static("")),
        method: request.method().clone(),
        route: request.extensions().get::<MatchedPath>().cloned(),
        user_id: None,
        session_id: None,
        trace_id: None,
        span_id: None,
    };
    let span = if request_fields::span_fields() {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{} {}", fields.method, fields.route_name()),
            otel.kind = "server",
            http.request.method = %fields.method,
            http.route = fields.route_name(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = fields.request_id.to_str().unwrap_or(""),
            user_id = tracing::field::Empty,
            session_id = tracing::field::Empty,
            // Recorded for the text log format only (`request_fields::ids_on_span`).
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("request")
    };
    crate::telemetry::link_to_remote_parent(&span, request.headers(), &mut fields);
    request_fields::attach(&span, fields);
    span
}

/// Records the status on the request span for the trace (a 5xx marks it as failed), then logs
/// the response as tower-http does by default (at debug, with the status in the line).
///
/// Without an exporter nothing reads the recorded status: the only lines still to come (the
/// response's below, and tower-http's failure line for a 5xx, both at debug) state the status
/// themselves, and the span ends next. Recording it anyway would cost the JSON log layer a fresh
/// copy of all the span's fields: with the caller's ids in two records, 7 % of a single read's
/// CPU (`deploy/bench/RESULTS.md`, run 25).
fn record_status(response: &Response, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    if crate::telemetry::exporting() {
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;
    use uuid::Uuid;

    use super::*;
    use crate::auth::{AuthUser, Authenticator};
    use crate::revocation::RevokedSessions;

    #[test]
    fn a_wildcard_origin_is_a_configuration_error_not_a_panic() {
        for origins in [
            vec!["*".to_owned()],
            vec!["https://a.example".into(), " * ".into()],
        ] {
            let error = cors(&origins).expect_err("refused");
            assert!(error.to_string().contains("`*` is not allowed"), "{error}");
        }
        assert!(cors(&["https://a.example".to_owned()]).unwrap().is_some());
    }

    /// The log lines written, one `Vec` for all.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn args() -> HttpArgs {
        HttpArgs {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            request_timeout_ms: 10_000,
            cors_allowed_origins: vec![],
            shutdown_delay_seconds: 0,
            shutdown_timeout_seconds: 1,
            http_header_read_timeout_ms: 10_000,
            http_keepalive_timeout_seconds: 75,
            http_max_connections: 16,
        }
    }

    /// A line logged inside an authenticated request carries the request id, route, method and
    /// the caller's user and session ids, kept beside the request span (`request_fields`).
    #[tokio::test]
    async fn log_lines_in_a_request_name_the_request_and_the_caller() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(crate::telemetry::json_lines(move || writer.clone()));
        let _default = tracing::subscriber::set_default(subscriber);

        let keys = crate::auth::tests::unit_test_ring();
        let (user_id, session_id) = (Uuid::new_v4(), Uuid::new_v4());
        let token = keys.sign_access(user_id, session_id, 60);
        let auth = Authenticator {
            keys: Arc::new(keys),
            revoked: RevokedSessions::polled(Duration::from_secs(300)),
        };
        auth.revoked.apply([]);
        let router = Router::new()
            .route(
                "/whoami",
                get(|_caller: AuthUser| async {
                    tracing::info!("handled");
                }),
            )
            .with_state(auth);
        let metrics = HttpMetrics::register(&prometheus::Registry::new()).unwrap();
        let app = api_stack(router, &args(), metrics).unwrap();

        let request = Request::get("/whoami")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(REQUEST_ID, "req-42")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        // Without a request id the stack makes one, before the span is made, and answers it.
        let request = Request::get("/whoami")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let made = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();

        let written = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let handled: Vec<serde_json::Value> = written
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|line: &serde_json::Value| line["message"] == "handled")
            .collect();
        assert_eq!(handled.len(), 2, "{written}");
        for (line, request_id) in handled.iter().zip(["req-42", made.as_str()]) {
            let request = &line["request"];
            assert_eq!(request["request_id"], request_id, "{line}");
            assert_eq!(request["user_id"], user_id.to_string(), "{line}");
            assert_eq!(request["session_id"], session_id.to_string(), "{line}");
            assert_eq!(request["http.route"], "/whoami", "{line}");
            assert_eq!(request["http.request.method"], "GET", "{line}");
            // Not exported and not logged as text: the span itself carries no field to format
            // (`request_fields`), and no trace ids are made up.
            assert_eq!(
                line["spans"],
                serde_json::json!([{"name": "request"}]),
                "{line}"
            );
            assert!(request.get("trace_id").is_none(), "{line}");
        }
        // A line outside any request has no request fields.
        tracing::info!("outside");
        let written = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let outside: serde_json::Value = written
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .find(|line: &serde_json::Value| line["message"] == "outside")
            .unwrap();
        assert!(outside.get("request").is_none(), "{outside}");
    }
}
