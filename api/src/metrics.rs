//! Prometheus metrics: one registry for the whole process (the `metrics`
//! facade, rendered by `metrics-exporter-prometheus`), fed by the HTTP
//! layer here, the event store, the relay and the projectors where things
//! happen, and by gauges read from the database when `/metrics` is scraped
//! (projection positions and lag, relay lag in events, sagas by status,
//! the connection pool).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::startup::AppState;

/// Latency buckets (seconds) of every `*_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide registry, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => {
                // Series that may stay at zero for long exist from the start,
                // so that dashboards and alerts see 0 rather than nothing.
                metrics::counter!("fulcrum_relay_publish_errors_total").increment(0);
                metrics::counter!("fulcrum_relay_published_total").increment(0);
                handle
            }
            Err(error) => {
                // Another recorder owns the process: render an empty registry.
                tracing::warn!(%error, "metrics: a recorder is already installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// Counts every routed request by route, method and status, with its
/// latency; a write route also counts as a command by outcome.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let status_label = status.as_str().to_owned();
    metrics::counter!("fulcrum_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status_label)
        .increment(1);
    metrics::histogram!("fulcrum_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(elapsed);
    if let Some(command) = command_of(&method, &route) {
        let outcome = match status.as_u16() {
            200..=299 => "ok",
            409 => "conflict",
            500..=599 => "error",
            _ => "rejected",
        };
        metrics::counter!("fulcrum_commands_total", "command" => command, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("fulcrum_command_duration_seconds", "command" => command)
            .record(elapsed);
    }
    response
}

/// The command a write route carries out.
fn command_of(method: &str, route: &str) -> Option<&'static str> {
    if method != "POST" {
        return None;
    }
    Some(match route {
        "/api/v1/products" => "define_product",
        "/api/v1/inventory/{sku}/receipts" => "receive_stock",
        "/api/v1/orders" => "place_order",
        "/api/v1/orders/{id}/cancel" => "cancel_order",
        "/api/v1/orders/{id}/ship" => "ship_order",
        "/api/v1/orders/{id}/deliver" => "deliver_order",
        "/api/v1/admin/sagas/{id}/retry" => "retry_saga",
        "/api/v1/admin/sagas/{id}/abort" => "abort_saga",
        "/api/v1/admin/projections/{name}/rebuild" => "rebuild_projection",
        _ => return None,
    })
}

/// `GET /metrics` (no token): Prometheus text. Reads the gauges the
/// database holds first; a failed read leaves those gauges as they were.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Err(error) = read_gauges(&state).await {
        tracing::warn!(%error, "metrics: reading the gauges from the database");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}

async fn read_gauges(state: &AppState) -> anyhow::Result<()> {
    let pool = state.store.pool();
    let idle = pool.num_idle() as f64;
    metrics::gauge!("fulcrum_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("fulcrum_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size()) - idle);
    metrics::gauge!("fulcrum_db_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
    for p in projections::status::list(pool).await? {
        let name = p.name.clone();
        metrics::gauge!("fulcrum_projection_position", "projection" => name.clone())
            .set(p.position as f64);
        metrics::gauge!("fulcrum_projection_lag_events", "projection" => name.clone())
            .set(p.lag as f64);
        metrics::gauge!("fulcrum_projection_dead_letters", "projection" => name.clone())
            .set(p.dead_letters as f64);
        for status in ["running", "rebuilding", "halted"] {
            let now = f64::from(u8::from(p.status.as_str() == status));
            metrics::gauge!("fulcrum_projection_status", "projection" => name.clone(), "status" => status)
                .set(now);
        }
    }
    let (head, relayed): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT coalesce(max(position), 0) FROM events), \
                (SELECT position FROM checkpoints WHERE name = 'relay')",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("fulcrum_event_store_head_position").set(head as f64);
    if let Some(relayed) = relayed {
        metrics::gauge!("fulcrum_relay_lag_events").set((head - relayed).max(0) as f64);
    }
    let sagas: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM saga_instances GROUP BY status")
            .fetch_all(pool)
            .await?;
    for status in domain::SagaStatus::ALL {
        let count = sagas
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("fulcrum_sagas", "status" => status.as_str()).set(count as f64);
    }
    Ok(())
}
