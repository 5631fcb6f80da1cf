//! `/metrics`: Prometheus text from the one process-wide registry, and the
//! series move with traffic through the whole pipeline (commands, the
//! relay, the projectors, the saga).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fulcrum_tests::system::System;

/// The scraped samples, by name and labels.
struct Scrape(Vec<prometheus_parse::Sample>, String);

impl Scrape {
    async fn of(system: &System) -> Scrape {
        let response = system.app.get("/metrics", None).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        Scrape(scrape.samples, text)
    }

    /// Every series name in the text (histograms' `_bucket`, `_sum` and
    /// `_count` included).
    fn names(&self) -> std::collections::BTreeSet<String> {
        self.1
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }

    /// The value of `name` whose labels include `labels` (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .sum()
    }
}

#[tokio::test]
async fn the_named_series_move_with_an_order_through_the_pipeline() {
    let system = System::start(1).await;
    system.app.given_product("MET-1", 500, 10).await;
    let before = Scrape::of(&system).await;

    let order = system
        .place("alice", &[("MET-1", 2)], "tok_visa", "DE")
        .await;
    system.order_reaches(order, "confirmed").await;
    let after = Scrape::of(&system).await;

    let place = [("command", "place_order"), ("outcome", "ok")];
    let moved = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            after.value(name, labels) > before.value(name, labels),
            "{name}{labels:?} did not move: {} -> {}",
            before.value(name, labels),
            after.value(name, labels)
        );
    };
    moved("fulcrum_commands_total", &place);
    moved(
        "fulcrum_command_duration_seconds_count",
        &[("command", "place_order")],
    );
    moved(
        "fulcrum_http_requests_total",
        &[
            ("route", "/api/v1/orders"),
            ("method", "POST"),
            ("status", "202"),
        ],
    );
    moved("fulcrum_appends_total", &[("outcome", "ok")]);
    moved("fulcrum_relay_published_total", &[]);
    moved(
        "fulcrum_projection_batches_total",
        &[("projection", "orders")],
    );
    moved(
        "fulcrum_projection_events_applied_total",
        &[("projection", "orders")],
    );
    // A component's own reading and the registry's are one series: the
    // scrape lies between two readings taken around it.
    let metrics = &system.app.state.metrics;
    let orders = metrics.projector(projections::Projection::Orders);
    let (relay_before, applied_before) = (metrics.relay().acked(), orders.applied.get());
    let scrape = Scrape::of(&system).await;
    let (relay_after, applied_after) = (metrics.relay().acked(), orders.applied.get());
    let scraped = scrape.value("fulcrum_relay_published_total", &[]);
    assert!(
        relay_before as f64 <= scraped && scraped <= relay_after as f64,
        "the relay read {relay_before}..{relay_after}, /metrics {scraped}"
    );
    let scraped = scrape.value(
        "fulcrum_projection_events_applied_total",
        &[("projection", "orders")],
    );
    assert!(
        applied_before as f64 <= scraped && scraped <= applied_after as f64,
        "the orders projector read {applied_before}..{applied_after}, /metrics {scraped}"
    );
    assert!(relay_before > 0 && applied_before > 0);
    assert!(after.value("fulcrum_projection_position", &[("projection", "orders")]) > 0.0);
    assert!(after.value("fulcrum_sagas", &[]) >= 1.0);
    assert!(after.value("fulcrum_db_pool_max_connections", &[]) > 0.0);
    dashboard_queries_name_exposed_series(&after);
    for series in [
        "fulcrum_relay_lag_events",
        "fulcrum_relay_lag_seconds",
        "fulcrum_projection_lag_events",
        "fulcrum_projection_status",
        "fulcrum_projection_dead_letters",
        "fulcrum_db_pool_connections",
    ] {
        assert!(
            after.0.iter().any(|s| s.metric == series),
            "/metrics lacks {series}"
        );
    }
}

/// Every query of deploy/grafana/fulcrum.json names only series that
/// `/metrics` exposes.
fn dashboard_queries_name_exposed_series(scrape: &Scrape) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/fulcrum.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exposed = scrape.names();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("fulcrum_"))
                .collect();
            assert!(!names.is_empty(), "{expr} names no Fulcrum series");
            for name in names {
                assert!(
                    exposed.contains(name),
                    "the dashboard queries {name}, which /metrics lacks"
                );
            }
        }
    }
    assert!(queries >= 10, "the dashboard has {queries} queries");
}
