//! What every log line written inside a request says about that request: its id, method and
//! route, the caller once authenticated, and the trace and span ids when traces are exported.
//!
//! They are kept as values on the request span (an extension in the span registry) and turned
//! into JSON only when a line is written, under the line's `request` key. Most requests write no
//! line at all, and the JSON log layer formats a span's fields into a string when the span is
//! made and again at each record, so fields on the span itself cost every request about 2.4 µs
//! of the 8 µs the shared HTTP stack takes (`cargo bench -p common --bench hot_path --
//! request_stack`): the single read's whole request span cost 1.17–1.21× its rate in the
//! benchmark (`RUST_LOG=warn` side by side). The span keeps its fields where something reads
//! them as it goes: the trace exporter, and the text log format (see `span_fields`).

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method};
use serde::{Serialize, Serializer};
use tracing::Span;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::{ExtensionsMut, LookupSpan, SpanRef};
use uuid::Uuid;

use crate::metrics::route_label;

/// Whether the request span carries its fields itself (see `span_fields`).
static SPAN_FIELDS: AtomicBool = AtomicBool::new(false);

/// Whether the request span must carry its fields as span fields too: when traces are exported
/// (they are the server span's attributes) and for the text log format (it prints span fields
/// before each line's message and has no other way to show them). Set once by
/// `telemetry::init`.
pub fn span_fields() -> bool {
    SPAN_FIELDS.load(Ordering::Relaxed)
}

/// Whether the request span must carry the trace and span ids too: only for the text log
/// format with traces exported (as attributes of the server span they would repeat its own ids).
static IDS_ON_SPAN: AtomicBool = AtomicBool::new(false);

pub fn ids_on_span() -> bool {
    IDS_ON_SPAN.load(Ordering::Relaxed)
}

/// Called once by `telemetry::init`, when traces are exported or logs are text.
pub(crate) fn keep_span_fields(text_logs: bool) {
    SPAN_FIELDS.store(true, Ordering::Relaxed);
    IDS_ON_SPAN.store(text_logs, Ordering::Relaxed);
}

/// One request's fields, as its log lines show them.
#[derive(Clone, Debug, Serialize)]
pub struct RequestFields {
    #[serde(serialize_with = "header_text")]
    pub request_id: HeaderValue,
    #[serde(rename = "http.request.method", serialize_with = "method_text")]
    pub method: Method,
    /// The route template (`/api/v1/tasks/{id}`), never the path with its ids; `None` when no
    /// route matched.
    #[serde(rename = "http.route", serialize_with = "route_text")]
    pub route: Option<MatchedPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

impl RequestFields {
    /// The route template, or `unmatched` (as the metrics label it).
    pub fn route_name(&self) -> &str {
        route_label(self.route.as_ref())
    }
}

fn header_text<S: Serializer>(value: &HeaderValue, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.to_str().unwrap_or(""))
}

fn route_text<S: Serializer>(
    route: &Option<MatchedPath>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(route_label(route.as_ref()))
}

fn method_text<S: Serializer>(method: &Method, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(method.as_str())
}

/// Keeps `fields` on `span`, for the lines written inside it and inside its children. Nothing
/// happens when the span is disabled (a `RUST_LOG` above `info`): no line will be written.
pub fn attach(span: &Span, fields: RequestFields) {
    in_registry(span, |extensions| extensions.insert(Kept(fields)));
}

/// Adds the authenticated caller to the fields `attach` kept on `span`.
pub fn set_caller(span: &Span, user_id: Uuid, session_id: Uuid) {
    in_registry(span, |extensions| {
        if let Some(Kept(fields)) = extensions.get_mut::<Kept>() {
            fields.user_id = Some(user_id);
            fields.session_id = Some(session_id);
        }
    });
}

/// Runs `change` on the span registry's extensions of `span`, if the span is enabled.
fn in_registry(span: &Span, change: impl FnOnce(&mut ExtensionsMut<'_>)) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            change(&mut span.extensions_mut());
        }
    });
}

/// The extension's type: private, so that no other code's extension is taken for it.
struct Kept(RequestFields);

/// The request fields of the innermost span of `scope` (leaf first) that has them.
pub fn innermost<'a, R>(scope: impl IntoIterator<Item = SpanRef<'a, R>>) -> Option<RequestFields>
where
    R: LookupSpan<'a> + 'a,
{
    scope.into_iter().find_map(|span| {
        span.extensions()
            .get::<Kept>()
            .map(|Kept(fields)| fields.clone())
    })
}
