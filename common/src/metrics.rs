//! Prometheus metrics: one registry per application, the HTTP metrics every service has, and the
//! text exposition served on the admin port.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label for requests that matched no route: raw paths would make the label set unbounded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A request's route as metrics and logs name it: its template, or `UNMATCHED_ROUTE`.
pub fn route_label(route: Option<&MatchedPath>) -> &str {
    route.map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// Label for any method outside RFC 9110's nine: a client can make up methods without end, and
/// each one would otherwise add a counter and a whole histogram.
pub const OTHER_METHOD: &str = "other";

/// Latency buckets from 1 ms (a cached read) to 10 s (a bcrypt queue at its limit).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["route", "method", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_server_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Time from request received to response headers ready, by route template, method and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        let in_flight = IntGauge::new(
            "http_server_requests_in_flight",
            "HTTP requests being handled now.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            requests,
            duration,
            in_flight,
        })
    }
}

/// Middleware: counts and times every request under its route template.
pub async fn track_http(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>()).to_owned();
    let method = method_label(request.method());
    metrics.in_flight.inc();
    let _in_flight = scopeguard(|| metrics.in_flight.dec());
    let response = next.run(request).await;
    let status = response.status();
    let labels = [route.as_str(), method, status.as_str()];
    metrics.requests.with_label_values(&labels).inc();
    metrics
        .duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard methods by name, anything else as [`OTHER_METHOD`].
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER_METHOD,
    }
}

/// Runs `f` on drop, so a request whose client went away still leaves the in-flight gauge.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Registers `build_info{service,version} 1`.
pub fn register_build_info(
    registry: &Registry,
    service: &str,
    version: &str,
) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new("build_info", "The running build: always 1."),
        &["service", "version"],
    )?;
    info.with_label_values(&[service, version]).set(1);
    registry.register(Box::new(info))
}

/// Registers the process's CPU time, resident memory and open file descriptors (`process_*`), the
/// standard names dashboards read. Only Linux has the /proc they come from; elsewhere, nothing.
pub fn register_process(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
    Ok(())
}

/// The registry's text exposition.
pub fn render(registry: &Registry) -> Response {
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                prometheus::TEXT_FORMAT.to_owned(),
            )],
            buffer,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics encoding failed");
            crate::Problem::internal().into_response()
        }
    }
}

/// A counter family labelled by `outcome`, for the services' business events.
pub fn outcome_counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<IntCounterVec> {
    let counter = IntCounterVec::new(Opts::new(name, help), &["outcome"])?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_the_rest_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["XFOO", "get", "PROPFIND"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), OTHER_METHOD, "{made_up}");
        }
    }
}
