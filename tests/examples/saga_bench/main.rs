//! The order saga end to end under a sustained order rate: from just
//! before `POST /api/v1/orders` until the order read model shows the
//! order `confirmed`.
//!
//! ```text
//! scripts/kafka.sh status   # start it if nothing listens on 127.0.0.1:9092
//! cargo run --release -p fulcrum-tests --example saga_bench -- RATE SECONDS [RATE SECONDS ...]
//! JWT_SECRET=... [DATABASE_URL=...] cargo run --release -p fulcrum-tests --example saga_bench -- \
//!     --url http://127.0.0.1:8080 RATE SECONDS [RATE SECONDS ...]
//! ```
//!
//! With `--url` it drives a separate `fulcrum serve` (every role, or a
//! deployment behind that address) instead: the same load over HTTP, each
//! outstanding order looked at with `GET /api/v1/orders/{id}` every 10 ms
//! (a staff token; its cost is part of the machine's CPU), SKUs of the
//! run's own (`BENCH<time>-NN`, the server keeps its products), tokens
//! signed with the server's `JWT_SECRET`. With `DATABASE_URL` (the
//! server's) the run's events are read back for the breakdown below; the
//! saga's counters exist only in-process.
//!
//! For each (RATE, SECONDS) pair (default `20 20`) it starts the whole
//! system in-process ([`System`]: HTTP server, relay, four projectors, one
//! saga orchestrator, the sandbox gateway and its webhook) over a fresh
//! database and topic prefix (the orchestrator with `SagaConfig::new`'s
//! default timings, as `fulcrum serve` runs it), defines 20 SKUs with ample stock, waits until
//! one order goes through, places orders for 3 s of warm-up (not counted),
//! then places RATE orders per second for SECONDS, open loop: an order
//! starts every 1/RATE s in its own task whether or not earlier ones
//! finished. Orders have one or two lines, pay with `tok_visa`, ship to DE,
//! and come from 500 distinct customers.
//!
//! Confirmation is seen by one task for all outstanding orders, which
//! polls `rm_orders.orders` every 5 ms on a connection of its own; an
//! order counts as confirmed at the start of the first poll that saw it,
//! so latencies are over-stated by at most the poll interval plus one
//! query, never under-stated. Errors (counted apart from latencies): a
//! non-202 answer, an order cancelled, an order not confirmed within 30 s.
//!
//! "Sustained" means: every order confirmed, no errors, confirmed/s at
//! least 95% of the offered rate, and the p50 of the last third of the run
//! no more than 1.5x (+20 ms) the p50 of the first third (no growing
//! backlog). After each rate the event store of the run is read back to
//! show where the time goes: per event of an order's correlation, its
//! `recorded_at` (stamped just before its append) relative to the POST.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use fulcrum_tests::system::System;
use saga::{SagaConfig, SagaProbe};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::mpsc;

mod breakdown;
mod load;

use breakdown::breakdown;
use load::{drive, track, Outcome, Placed, Settled, Target, Watch};

const SKUS: usize = 20;
const CUSTOMERS: usize = 500;
const GIVE_UP: Duration = Duration::from_secs(30);
const WARM_UP_SECONDS: f64 = 3.0;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// A separate `fulcrum serve` to drive (`--url`).
struct Server {
    /// Its base URL.
    url: String,
    /// Its `JWT_SECRET`.
    secret: String,
    /// Its `DATABASE_URL`, to read the run's events back (optional).
    database_url: Option<String>,
}

/// What one run drives and observes.
struct Setup {
    target: Arc<Target>,
    watch: Arc<Watch>,
    /// The in-process orchestrator's counters.
    probe: Option<Arc<SagaProbe>>,
    /// The database to read the run's events back from.
    pool: Option<PgPool>,
    /// Keeps the in-process system running until the run ends.
    _system: Option<Arc<System>>,
}

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

/// The whole system in this process, over a fresh database and topic
/// prefix, watched through its database.
async fn in_process() -> Setup {
    let mut system = System::start(0).await;
    let probe = Arc::new(SagaProbe::default());
    // The orchestrator of `fulcrum serve` (default timings), not the test
    // systems' short step checks and sweeps.
    system.start_orchestrator_with(probe.clone(), SagaConfig::new(system.saga_config().kafka));
    let pool = connect(&system.app.db.url).await;
    let target = Target {
        base: system.app.base.clone(),
        client: system.app.client.clone(),
        secret: fulcrum_tests::SECRET.to_owned(),
        sku_prefix: "SKU".into(),
    };
    Setup {
        target: Arc::new(target),
        watch: Arc::new(Watch::Database(pool.clone())),
        probe: Some(probe),
        pool: Some(pool),
        _system: Some(Arc::new(system)),
    }
}

/// A separate server, watched with `GET /api/v1/orders/{id}`; SKUs of
/// this run's own.
async fn remote(server: &Server) -> Setup {
    let target = Target {
        base: server.url.trim_end_matches('/').to_owned(),
        client: reqwest::Client::new(),
        secret: server.secret.clone(),
        sku_prefix: format!("BENCH{}", chrono::Utc::now().format("%H%M%S%3f")),
    };
    let token = target.token("bench-staff", Role::Operator);
    let pool = match &server.database_url {
        Some(url) => Some(connect(url).await),
        None => None,
    };
    Setup {
        watch: Arc::new(Watch::Http {
            target: target.clone(),
            token,
        }),
        target: Arc::new(target),
        probe: None,
        pool,
        _system: None,
    }
}

/// One (rate, seconds) run; answers its summary row.
async fn run(rate: f64, seconds: f64, server: Option<&Server>) -> String {
    let setup = match server {
        Some(server) => remote(server).await,
        None => in_process().await,
    };
    let (target, watch) = (setup.target.clone(), setup.watch.clone());
    for i in 0..SKUS {
        target.give_product(i, 100 + i as i64, 10_000_000).await;
    }
    target.first_order(&watch).await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..CUSTOMERS)
            .map(|c| target.token(&format!("customer-{c:03}"), Role::Customer))
            .collect(),
    );
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n== {rate} orders/s for {seconds} s, {now}, load average {}",
        load.trim()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let tracker = tokio::spawn(track(watch.clone(), rx));
    let warm = drive(&target, &tokens, &tx, (rate, WARM_UP_SECONDS, 0, false)).await;
    let counted = setup.probe.as_ref().map(|probe| {
        (
            probe.changes.get(),
            probe.steps.get(),
            probe.failures.get(),
            probe.observed.get(),
        )
    });
    let started = Instant::now();
    let cpu_start = eventstore::testing::machine_cpu_seconds();
    let sent = drive(&target, &tokens, &tx, (rate, seconds, 1_000_000, true)).await;
    drop(tx);
    let settled = tracker.await.unwrap();
    let cpu = eventstore::testing::machine_cpu_seconds() - cpu_start;

    let measured: Vec<&Settled> = settled.iter().filter(|s| s.placed.measured).collect();
    let latency = |s: &Settled| s.at.duration_since(s.placed.started).as_secs_f64() * 1e3;
    let confirmed: Vec<&Settled> = measured
        .iter()
        .copied()
        .filter(|s| matches!(s.outcome, Outcome::Confirmed))
        .collect();
    let cancelled = measured
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Cancelled))
        .count();
    let timed_out = measured
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::TimedOut))
        .count();
    let rejected: usize = sent.rejected.values().sum();
    let warm_errors = warm.rejected.values().sum::<usize>()
        + settled
            .iter()
            .filter(|s| !s.placed.measured && !matches!(s.outcome, Outcome::Confirmed))
            .count();
    let all = sorted(confirmed.iter().map(|s| latency(s)).collect());
    let third = |range: std::ops::Range<f64>| {
        let total = rate * seconds;
        sorted(
            confirmed
                .iter()
                .filter(|s| range.contains(&(s.placed.index as f64 / total)))
                .map(|s| latency(s))
                .collect(),
        )
    };
    let (early, late) = (
        pct(&third(0.0..1.0 / 3.0), 0.5),
        pct(&third(2.0 / 3.0..1.0), 0.5),
    );
    let placed_per_s = sent.accepted as f64
        / sent
            .last_answer
            .map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
    let last_confirmed = confirmed.iter().map(|s| s.at).max();
    let confirmed_per_s = confirmed.len() as f64
        / last_confirmed.map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
    let errors = rejected + cancelled + timed_out;
    let every_settled = errors == 0 && confirmed.len() == (rate * seconds).round() as usize;
    let sustained = every_settled && confirmed_per_s >= 0.95 * rate && late <= early * 1.5 + 20.0;
    let lag = sorted(
        sent.spawn_lag
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    println!(
        "placed {} of {} ({placed_per_s:.1}/s), confirmed {} ({confirmed_per_s:.1}/s), cancelled {cancelled}, not confirmed in 30 s {timed_out}, rejected {rejected} {:?}",
        sent.accepted, (rate * seconds).round(), confirmed.len(), sent.rejected
    );
    println!(
        "latency ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; p50 first third {early:.1}, last third {late:.1}",
        pct(&all, 0.5), pct(&all, 0.9), pct(&all, 0.99), all.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "sender: task start after its tick p99 {:.1} ms, max {:.1} ms; warm-up errors {warm_errors}",
        pct(&lag, 0.99), lag.last().copied().unwrap_or(f64::NAN)
    );
    let orders = measured.len().max(1) as f64;
    // Everything the machine ran (this process, Postgres, the broker),
    // from the first measured order until the last settled.
    let cpu_per_order = cpu * 1e3 / confirmed.len().max(1) as f64;
    println!(
        "machine CPU: {cpu:.1} s for {} confirmed orders = {cpu_per_order:.1} ms per order",
        confirmed.len()
    );
    if let (Some(probe), Some((changes, steps, failures, observed))) = (&setup.probe, counted) {
        let (changes, steps) = (probe.changes.get() - changes, probe.steps.get() - steps);
        println!(
            "saga probe (measured run + tail of warm-up): changes {changes} ({:.1}/order), steps {steps} ({:.1}/order), step failures {}, messages observed {}",
            changes as f64 / orders,
            steps as f64 / orders,
            probe.failures.get() - failures,
            probe.observed.get() - observed
        );
    }
    if let Some(pool) = &setup.pool {
        let with_latency: Vec<(&Placed, f64)> =
            confirmed.iter().map(|s| (&s.placed, latency(s))).collect();
        breakdown(pool, &with_latency).await;
        pool.close().await;
    }
    format!(
        "{rate:>7.0} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {errors:>6} {:>8} {:>9} {cpu_per_order:>7.1}",
        placed_per_s, confirmed_per_s, pct(&all, 0.5), pct(&all, 0.9), pct(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN), early, late,
        if every_settled { "yes" } else { "NO" }, if sustained { "yes" } else { "no" }
    )
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let server = match args.iter().position(|a| a == "--url") {
        Some(at) => {
            let url = args.get(at + 1).cloned().expect("--url URL");
            args.drain(at..at + 2);
            Some(Server {
                url,
                secret: std::env::var("JWT_SECRET")
                    .expect("--url needs JWT_SECRET: the server's token secret"),
                database_url: std::env::var("DATABASE_URL").ok(),
            })
        }
        None => None,
    };
    let args: Vec<f64> = args
        .iter()
        .map(|a| a.parse().expect("[--url URL] RATE SECONDS ..."))
        .collect();
    let pairs: Vec<(f64, f64)> = if args.is_empty() {
        vec![(20.0, 20.0)]
    } else {
        assert!(
            args.len().is_multiple_of(2),
            "usage: saga_bench [--url URL] RATE SECONDS [RATE SECONDS ...]"
        );
        args.chunks(2).map(|c| (c[0], c[1])).collect()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match &server {
        Some(server) => println!(
            "saga bench: POST {0}/api/v1/orders -> GET {0}/api/v1/orders/{{id}} shows confirmed (every 10 ms per order); events read back: {1}",
            server.url,
            if server.database_url.is_some() { "from DATABASE_URL" } else { "no (DATABASE_URL unset)" }
        ),
        None => println!(
            "saga bench: POST /api/v1/orders -> rm_orders.orders shows confirmed (polled every 5 ms, one task)"
        ),
    }
    println!(
        "machine: {cores} cores; {}",
        match &server {
            Some(_) => "the server and everything it uses run apart from this process".to_owned(),
            None => format!(
                "broker {}; whole system in this process",
                fulcrum_tests::system::brokers()
            ),
        }
    );
    let mut rows = Vec::new();
    for (rate, seconds) in pairs {
        rows.push(run(rate, seconds, server.as_ref()).await);
        // Let the stopped system's tasks wind down before the next one.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("\n offered  placed confirm     p50     p90     p99      max  p50 1st  p50 3rd errors  settled sustained     cpu");
    println!(" per s    per s   per s      ms      ms      ms       ms  third ms third ms                     ms/order");
    for row in rows {
        println!("{row}");
    }
}
