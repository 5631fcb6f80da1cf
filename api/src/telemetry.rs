//! Tracing set-up and the request-logging layer.

use std::any::Any;
use std::sync::OnceLock;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower_http::catch_panic::CatchPanicLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::{ApiError, InternalError};

/// The span exporter, when one runs (kept to flush it at exit).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs a subscriber that logs to stderr, filtered by `RUST_LOG`
/// (default `info`). `FULCRUM_LOG_FORMAT=json` switches to JSON lines (each
/// with the fields of its spans: a request's or a consumed event's trace
/// and correlation ids). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are
/// also exported over OTLP (HTTP/protobuf, the standard `OTEL_*` variables
/// apply); without it nothing is exported.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if std::env::var("FULCRUM_LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let spans = otlp_tracer().map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
    // A subscriber already installed (tests) is fine.
    let _ = result;
}

/// Flushes and stops the span exporter, if one runs.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            eprintln!("flushing the OTLP span exporter: {error}");
        }
    }
}

/// An OTLP tracer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn otlp_tracer() -> Option<opentelemetry_sdk::trace::SdkTracer> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    if endpoint.trim().is_empty() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: no span export ({error})");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("fulcrum")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("fulcrum");
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

/// Wraps the router in a span per request and logs server errors inside
/// it. A handler that panics answers a problem+json 500 (logged like any
/// other) instead of a dropped connection.
pub fn layer(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(log_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    ApiError::Internal(anyhow::anyhow!("the handler panicked: {message}")).into_response()
}

async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(InternalError(error)) = response.extensions().get::<InternalError>() {
        tracing::error!(%error, status = %response.status(), "request failed");
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_problem_json_500() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = layer(Router::new().route("/boom", get(boom)));
        let request = Request::builder().uri("/boom").body(Body::empty());
        let response = app.oneshot(request.expect("a request")).await;
        let response = response.expect("an answer");
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}
