//! Every request runs inside a trace: the client's W3C `traceparent`, or a
//! new one. Its commands record it in their events' metadata (see
//! [`eventstore::trace`]), the answer carries it back in `traceparent`,
//! and every log line inside the request carries its trace id and
//! correlation id (the span fields of `request`).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use eventstore::trace::{self, TraceParent};
use tracing::Instrument;

use crate::extract::CorrelationId;

/// The middleware: continues or starts the trace, and opens the span.
pub async fn traced(request: Request, next: Next) -> Response {
    let parent = request
        .headers()
        .get(trace::METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let correlation_id = request
        .extensions()
        .get::<CorrelationId>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        correlation_id = %correlation_id,
    );
    let trace = trace::enter(&span, parent);
    span.record("trace_id", trace.trace_id().as_str());
    span.record("span_id", trace.span_id().as_str());
    let work = async move {
        let response = next.run(request).await;
        tracing::debug!(status = %response.status(), "answered");
        response
    };
    let mut response = trace::scope(trace, work).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(trace::METADATA_KEY, value);
    }
    response
}
