//! Tracing set-up and the request-logging layer.

use std::any::Any;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tracing_subscriber::EnvFilter;

use crate::error::{ApiError, InternalError};

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
