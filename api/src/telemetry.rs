//! Tracing set-up and the request-logging layer.

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tracing_subscriber::EnvFilter;

use crate::error::InternalError;

/// Installs a subscriber that logs to stderr, filtered by `RUST_LOG`
/// (default `info`). `FULCRUM_LOG_FORMAT=json` switches to JSON lines.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("FULCRUM_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already installed (tests) is fine.
    let _ = result;
}

/// Wraps the router in a span per request and logs server errors inside it.
pub fn layer(router: Router) -> Router {
    router
        .layer(middleware::from_fn(log_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(InternalError(error)) = response.extensions().get::<InternalError>() {
        tracing::error!(%error, status = %response.status(), "request failed");
    }
    response
}
