//! Prometheus metrics: one registry per process
//! ([`prometheus_client::registry::Registry`]), holding the series every
//! component counts on directly (see [`eventstore::metrics`]): the HTTP
//! layer here, the event store's appends, the relay, the projectors and the
//! saga, plus gauges read from the database when `/metrics` is scraped
//! (projection positions and lag, relay lag in events, sagas by status, the
//! connection pool).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventstore::metrics::{latency_family, seconds, FloatGauge, LatencyFamily};
use eventstore::relay::RelayStats;
use eventstore::EventStore;
use projections::worker::{ProjectorMetrics, ProjectorProbe};
use projections::Projection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use saga::SagaProbe;

use crate::startup::AppState;

/// The content type of `/metrics` (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A process's registry and the series of its roles. Build one per process
/// (tests build one per system) before starting the roles, hand each role
/// its series ([`Metrics::relay`], [`Metrics::projector`],
/// [`Metrics::saga`]), and serve it at `/metrics`.
pub struct Metrics {
    registry: Registry,
    relay: Arc<RelayStats>,
    projectors: ProjectorMetrics,
    saga: Arc<SagaProbe>,
    http: HttpSeries,
    gauges: DatabaseGauges,
}

/// What [`track`] counts.
struct HttpSeries {
    requests: Family<RouteStatus, Counter>,
    request_seconds: LatencyFamily<Route>,
    commands: Family<CommandOutcome, Counter>,
    command_seconds: LatencyFamily<Command>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandOutcome {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Command {
    command: &'static str,
}

/// Gauges set from the database on each scrape.
#[derive(Default)]
struct DatabaseGauges {
    pool: Family<PoolState, Gauge>,
    pool_max: Gauge,
    projection_position: Family<ProjectionName, Gauge>,
    projection_lag: Family<ProjectionName, Gauge>,
    projection_dead_letters: Family<ProjectionName, Gauge>,
    projection_status: Family<ProjectionStatus, Gauge>,
    head: Gauge,
    relay_lag_events: Gauge,
    sagas: Family<SagaStatus, Gauge>,
    scrape_errors: Counter,
    scrape_seconds: FloatGauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionName {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionStatus {
    projection: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaStatus {
    status: &'static str,
}

impl Metrics {
    /// A registry holding `store`'s series and fresh series for the HTTP
    /// layer, the relay, the projectors, the saga and the database gauges.
    pub fn new(store: &EventStore) -> Metrics {
        let mut registry = Registry::default();
        store.metrics().register(&mut registry);
        let relay = Arc::new(RelayStats::default());
        relay.register(&mut registry);
        let projectors = ProjectorMetrics::default();
        projectors.register(&mut registry);
        let saga = Arc::new(SagaProbe::default());
        saga.register(&mut registry);
        let http = HttpSeries {
            requests: Family::default(),
            request_seconds: latency_family(),
            commands: Family::default(),
            command_seconds: latency_family(),
        };
        registry.register(
            "fulcrum_http_requests",
            "HTTP requests by route, method and status",
            http.requests.clone(),
        );
        registry.register(
            "fulcrum_http_request_duration_seconds",
            "HTTP request latency by route and method",
            http.request_seconds.clone(),
        );
        registry.register(
            "fulcrum_commands",
            "Commands by type and outcome (ok, conflict, rejected, error)",
            http.commands.clone(),
        );
        registry.register(
            "fulcrum_command_duration_seconds",
            "Command latency by type, as its HTTP request took",
            http.command_seconds.clone(),
        );
        let gauges = DatabaseGauges::default();
        gauges.register(&mut registry);
        Metrics {
            registry,
            relay,
            projectors,
            saga,
            http,
            gauges,
        }
    }

    /// The relay's series (share them with every relay the process runs).
    pub fn relay(&self) -> Arc<RelayStats> {
        self.relay.clone()
    }

    /// A probe counting on `projection`'s series.
    pub fn projector(&self, projection: Projection) -> Arc<ProjectorProbe> {
        Arc::new(self.projectors.probe(projection))
    }

    /// The saga orchestrator's series.
    pub fn saga(&self) -> Arc<SagaProbe> {
        self.saga.clone()
    }

    /// The registry in OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "metrics: encoding the registry");
        }
        text
    }
}

/// Counts every routed request by route, method and status, with its
/// latency; a write route also counts as a command by outcome.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let command = command_of(&method, &route);
    let response = next.run(request).await;
    let elapsed = seconds(started.elapsed());
    let status = response.status();
    let http = &state.metrics.http;
    http.requests
        .get_or_create(&RouteStatus {
            route: route.clone(),
            method: method.clone(),
            status: status.as_str().to_owned(),
        })
        .inc();
    http.request_seconds
        .get_or_create(&Route { route, method })
        .observe(elapsed);
    if let Some(command) = command {
        let outcome = match status.as_u16() {
            200..=299 => "ok",
            409 => "conflict",
            500..=599 => "error",
            _ => "rejected",
        };
        http.commands
            .get_or_create(&CommandOutcome { command, outcome })
            .inc();
        http.command_seconds
            .get_or_create(&Command { command })
            .observe(elapsed);
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

/// `GET /metrics` (no token): OpenMetrics text. Reads the gauges the
/// database holds first; a failed read leaves those gauges as they were
/// and counts `fulcrum_metrics_scrape_errors_total`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let gauges = &state.metrics.gauges;
    let started = Instant::now();
    if let Err(error) = gauges.read(&state.store).await {
        gauges.scrape_errors.inc();
        tracing::warn!(%error, "metrics: reading the gauges from the database");
    }
    gauges.scrape_seconds.set(seconds(started.elapsed()));
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

impl DatabaseGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "fulcrum_db_pool_connections",
            "Pooled database connections by state (idle, in_use)",
            self.pool.clone(),
        );
        registry.register(
            "fulcrum_db_pool_max_connections",
            "The pool's connection limit",
            self.pool_max.clone(),
        );
        registry.register(
            "fulcrum_projection_position",
            "Global position of the last event a projection applied",
            self.projection_position.clone(),
        );
        registry.register(
            "fulcrum_projection_lag_events",
            "Events appended but not yet applied, by projection",
            self.projection_lag.clone(),
        );
        registry.register(
            "fulcrum_projection_dead_letters",
            "Dead letters stored for a projection",
            self.projection_dead_letters.clone(),
        );
        registry.register(
            "fulcrum_projection_status",
            "1 for a projection's current status (running, rebuilding, halted), else 0",
            self.projection_status.clone(),
        );
        registry.register(
            "fulcrum_event_store_head_position",
            "Global position of the newest event",
            self.head.clone(),
        );
        registry.register(
            "fulcrum_relay_lag_events",
            "Events appended but not yet published by the relay",
            self.relay_lag_events.clone(),
        );
        registry.register("fulcrum_sagas", "Order sagas by status", self.sagas.clone());
        registry.register(
            "fulcrum_metrics_scrape_errors",
            "Scrapes whose database gauges could not be read",
            self.scrape_errors.clone(),
        );
        registry.register(
            "fulcrum_metrics_scrape_duration_seconds",
            "How long reading the database gauges took at the last scrape",
            self.scrape_seconds.clone(),
        );
    }

    async fn read(&self, store: &EventStore) -> anyhow::Result<()> {
        let pool = store.pool();
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.pool
            .get_or_create(&PoolState { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolState { state: "in_use" })
            .set(i64::from(pool.size()) - idle);
        self.pool_max
            .set(i64::from(pool.options().get_max_connections()));
        for p in projections::status::list(pool).await? {
            let projection = ProjectionName {
                projection: p.name.clone(),
            };
            self.projection_position
                .get_or_create(&projection)
                .set(p.position);
            self.projection_lag.get_or_create(&projection).set(p.lag);
            self.projection_dead_letters
                .get_or_create(&projection)
                .set(p.dead_letters);
            for status in ["running", "rebuilding", "halted"] {
                self.projection_status
                    .get_or_create(&ProjectionStatus {
                        projection: p.name.clone(),
                        status,
                    })
                    .set(i64::from(p.status.as_str() == status));
            }
        }
        let (head, relayed): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT coalesce(max(position), 0) FROM events), \
                    (SELECT position FROM checkpoints WHERE name = 'relay')",
        )
        .fetch_one(pool)
        .await?;
        self.head.set(head);
        if let Some(relayed) = relayed {
            self.relay_lag_events.set((head - relayed).max(0));
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
            self.sagas
                .get_or_create(&SagaStatus {
                    status: status.as_str(),
                })
                .set(count);
        }
        Ok(())
    }
}
