//! HTTP routes, one module per route group.

pub mod admin;
pub mod audit;
pub mod health;
pub mod inventory;
pub mod orders;
pub mod products;
pub mod queries;
pub mod sagas;
mod write;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::error::ApiError;
use crate::extract::{self, MAX_BODY_BYTES};
use crate::startup::AppState;

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/products", post(products::define).get(queries::products))
        .route("/inventory/{sku}", get(queries::stock))
        .route("/inventory/{sku}/receipts", post(inventory::receive))
        .route("/orders", post(orders::place).get(queries::orders))
        .route("/orders/{id}", get(queries::order))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/orders/{id}/ship", post(orders::ship))
        .route("/orders/{id}/deliver", post(orders::deliver))
        .route(
            "/audit/streams/{stream_id}/events",
            get(audit::stream_events),
        )
        .route(
            "/audit/streams/{stream_id}/verify",
            get(audit::verify_stream),
        )
        .route("/audit/streams/{stream_id}/state", get(audit::stream_state))
        .route("/audit/events", get(audit::events))
        .route("/audit/events/{event_id}/proof", get(audit::proof))
        .route(
            "/audit/correlations/{correlation_id}",
            get(audit::correlation),
        )
        .route("/audit/seals", get(audit::seals).post(audit::seal_now))
        .route("/admin/projections", get(admin::projections))
        .route("/admin/projections/{name}/rebuild", post(admin::rebuild))
        .route(
            "/admin/projections/{name}/dead-letters",
            get(admin::dead_letters),
        )
        .route("/admin/sagas", get(sagas::list))
        .route("/admin/sagas/{id}", get(sagas::detail))
        .route("/admin/sagas/{id}/retry", post(sagas::retry))
        .route("/admin/sagas/{id}/abort", post(sagas::abort))
        .route("/stats/sales", get(queries::sales))
        .fallback(not_found);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(extract::correlation))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not take that method".into())
}
