//! HTTP routes, one module per route group.

pub mod admin;
pub mod answer;
pub mod audit;
pub mod health;
pub mod inventory;
pub mod orders;
pub mod paging;
pub mod products;
pub mod queries;
pub mod sagas;
mod write;

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use aide::transform::TransformOperation as Op;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{middleware, Router};

use crate::error::ApiError;
use crate::extract::{self, MAX_BODY_BYTES};
use crate::openapi::{
    conflict, not_found as missing, path, query, timeout, unavailable, Contract, OrderPath,
    ProjectionPath, SagaPath, SkuPath,
};
use crate::startup::AppState;
use paging::{Limit, OrderListQuery, ReadQuery, SagaListQuery, SalesQuery};

/// Every route of the server: the contract's, `/openapi.json`, `/docs`,
/// `/schemas/...`, `/metrics` and the console (`/console`).
pub fn router(state: AppState) -> Router {
    let mut api = crate::openapi::base();
    let documented = contract().finish_api(&mut api);
    documented
        .merge(Contract::new().routes())
        .route("/metrics", get(crate::metrics::metrics))
        .merge(crate::console::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::trace::traced))
        .layer(middleware::from_fn(extract::correlation))
        .with_state(state)
}

/// The routes of the HTTP contract, each with its documentation: a route
/// registered here is in `/openapi.json` (its extractors and answer types
/// document parameters, bodies, answers and errors; the closure adds the
/// summary, roles, typed path and query, and route-specific errors).
pub fn contract() -> ApiRouter<AppState> {
    let routes = ApiRouter::new();
    let routes = health_routes(routes);
    let routes = catalogue_routes(routes);
    let routes = order_routes(routes);
    let routes = projection_routes(routes);
    let routes = saga_routes(routes);
    let routes = audit_stream_routes(routes);
    audit_trail_routes(routes)
}

/// The probes: liveness and readiness (no token).
fn health_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/healthz",
            get_with(health::healthz, |op| op.summary("Liveness (no token)")),
        )
        .api_route(
            "/readyz",
            get_with(health::readyz, |op| {
                op.summary("Readiness: the database answers and is migrated (no token)")
                    .with(unavailable)
            }),
        )
}

/// The catalogue and stock: defining products, reading them, receiving
/// stock.
fn catalogue_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/products",
            post_with(products::define, |op| {
                op.summary("Define a product").with(conflict)
            })
            .get_with(queries::products, |op| {
                read(op.summary("The catalogue, by SKU")).with(query::<ReadQuery>)
            }),
        )
        .api_route(
            "/api/v1/inventory/{sku}",
            get_with(queries::stock, |op| {
                read(op.summary("A SKU's stock"))
                    .with(path::<SkuPath>)
                    .with(query::<ReadQuery>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/inventory/{sku}/receipts",
            post_with(inventory::receive, |op| {
                op.summary("Receive stock of a defined product")
                    .with(path::<SkuPath>)
                    .with(missing)
                    .with(conflict)
            }),
        )
}

/// Orders: placing, listing, reading, and the commands on one order;
/// the sales figures they add up to.
fn order_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/orders",
            post_with(orders::place, |op| {
                op.summary("Place an order (the saga does the rest)")
                    .with(conflict)
            })
            .get_with(queries::orders, |op| {
                read(op.summary("A page of orders, newest first (a customer's own)"))
                    .with(query::<OrderListQuery>)
            }),
        )
        .api_route(
            "/api/v1/orders/{id}",
            get_with(queries::order, |op| {
                read(op.summary("An order"))
                    .with(path::<OrderPath>)
                    .with(query::<ReadQuery>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/orders/{id}/cancel",
            post_with(orders::cancel, |op| {
                order_command(op.summary("Cancel an order (before it ships)"))
            }),
        )
        .api_route(
            "/api/v1/orders/{id}/ship",
            post_with(orders::ship, |op| {
                order_command(op.summary("Record that a confirmed order shipped"))
            }),
        )
        .api_route(
            "/api/v1/orders/{id}/deliver",
            post_with(orders::deliver, |op| {
                order_command(op.summary("Record that a shipped order was delivered"))
            }),
        )
        .api_route(
            "/api/v1/stats/sales",
            get_with(queries::sales, |op| {
                read(op.summary("Confirmed orders and revenue per day")).with(query::<SalesQuery>)
            }),
        )
}

/// The operators' view of the projections: positions, dead letters,
/// rebuilds.
fn projection_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/admin/projections",
            get_with(admin::projections, |op| {
                op.summary("Every projection's position, lag and status")
            }),
        )
        .api_route(
            "/api/v1/admin/projections/{name}/dead-letters",
            get_with(admin::dead_letters, |op| {
                op.summary("The events a projection could not apply, oldest first")
                    .with(path::<ProjectionPath>)
                    .with(query::<Limit>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/admin/projections/{name}/rebuild",
            post_with(admin::rebuild, |op| {
                op.summary("Rebuild a projection from the event store")
                    .with(path::<ProjectionPath>)
                    .with(missing)
                    .with(conflict)
            }),
        )
}

/// The operators' view of the order sagas: listing, reading, retrying,
/// aborting.
fn saga_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/admin/sagas",
            get_with(sagas::list, |op| {
                op.summary("Sagas, newest first")
                    .with(query::<SagaListQuery>)
            }),
        )
        .api_route(
            "/api/v1/admin/sagas/{id}",
            get_with(sagas::detail, |op| {
                op.summary("A saga's steps and history")
                    .with(path::<SagaPath>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/admin/sagas/{id}/retry",
            post_with(sagas::retry, |op| {
                op.summary("Retry a stuck saga's failing step")
                    .with(path::<SagaPath>)
                    .with(missing)
                    .with(conflict)
            }),
        )
        .api_route(
            "/api/v1/admin/sagas/{id}/abort",
            post_with(sagas::abort, |op| {
                op.summary("Abort a saga: it takes no further step")
                    .with(path::<SagaPath>)
                    .with(missing)
                    .with(conflict)
            }),
        )
}

/// The audit of one stream: its events, its hash chain, its past state.
fn audit_stream_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/audit/streams/{stream_id}/events",
            get_with(audit::stream_events, |op| {
                op.summary("A stream's every event, by version")
                    .with(path::<audit::StreamPath>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/audit/streams/{stream_id}/verify",
            get_with(audit::verify_stream, |op| {
                op.summary("Recompute a stream's hash chain")
                    .with(path::<audit::StreamPath>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/audit/streams/{stream_id}/state",
            get_with(audit::stream_state, |op| {
                op.summary("A stream's state at a version or a time (time travel)")
                    .with(path::<audit::StreamPath>)
                    .with(query::<audit::StateQuery>)
                    .with(missing)
                    .with(conflict)
            }),
        )
}

/// The audit trail across streams: search, inclusion proofs, everything
/// one request caused, seals.
fn audit_trail_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/api/v1/audit/events",
            get_with(audit::events, |op| {
                op.summary("Search the events in gap-free global order")
                    .with(query::<audit::SearchQuery>)
            }),
        )
        .api_route(
            "/api/v1/audit/events/{event_id}/proof",
            get_with(audit::proof, |op| {
                op.summary("An event's inclusion proof in the latest seal")
                    .with(path::<audit::EventPath>)
                    .with(missing)
                    .with(conflict)
            }),
        )
        .api_route(
            "/api/v1/audit/correlations/{correlation_id}",
            get_with(audit::correlation, |op| {
                op.summary("Everything one request caused, as a list or a causal tree")
                    .with(path::<audit::CorrelationPath>)
                    .with(query::<audit::CorrelationQuery>)
                    .with(missing)
            }),
        )
        .api_route(
            "/api/v1/audit/seals",
            get_with(audit::seals, |op| {
                op.summary("The seals, oldest first, and the public key")
                    .with(query::<audit::SealListQuery>)
            })
            .post_with(audit::seal_now, |op| {
                op.summary("Seal what is new now")
                    .with(conflict)
                    .with(unavailable)
            }),
        )
}

/// A read-model query: the 504 of `min_position`.
fn read(op: Op<'_>) -> Op<'_> {
    op.with(timeout)
}

/// A command on an existing order.
fn order_command(op: Op<'_>) -> Op<'_> {
    op.with(path::<OrderPath>).with(missing).with(conflict)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not take that method".into())
}
