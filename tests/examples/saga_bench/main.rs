//! The order saga end to end under a sustained order rate: from just
//! before `POST /api/v1/orders` until the order read model shows the
//! order `confirmed`.
//!
//! ```text
//! scripts/kafka.sh status   # start it if nothing listens on 127.0.0.1:9092
//! cargo run --release -p fulcrum-tests --example saga_bench -- RATE SECONDS [RATE SECONDS ...]
//! ```
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
use fulcrum_tests::token;
use saga::{SagaConfig, SagaProbe};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;

mod breakdown;
mod load;

use breakdown::breakdown;
use load::{drive, track, Outcome, Placed, Settled};

const SKUS: usize = 20;
const CUSTOMERS: usize = 500;
const POLL: Duration = Duration::from_millis(5);
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

/// One (rate, seconds) run over a fresh system; answers its summary row.
async fn run(rate: f64, seconds: f64) -> String {
    let mut system = System::start(0).await;
    let probe = Arc::new(SagaProbe::default());
    // The orchestrator of `fulcrum serve` (default timings), not the test
    // systems' short step checks and sweeps.
    system.start_orchestrator_with(probe.clone(), SagaConfig::new(system.saga_config().kafka));
    let system = Arc::new(system);
    for i in 0..SKUS {
        system
            .app
            .given_product(&format!("SKU-{i:02}"), 100 + i as i64, 10_000_000)
            .await;
    }
    let first = system
        .place("bench-first", &[("SKU-00", 1)], "tok_visa", "DE")
        .await;
    system.order_reaches(first, "confirmed").await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..CUSTOMERS)
            .map(|c| token(&format!("customer-{c:03}"), Role::Customer))
            .collect(),
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&system.app.db.url)
        .await
        .unwrap();
    let now: String = sqlx::query_scalar("SELECT to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ')")
        .fetch_one(&pool)
        .await
        .unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n== {rate} orders/s for {seconds} s, {now}, load average {}",
        load.trim()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let tracker = tokio::spawn(track(pool.clone(), rx));
    let warm = drive(&system, &tokens, &tx, (rate, WARM_UP_SECONDS, 0, false)).await;
    let (changes, steps) = (probe.changes.get(), probe.steps.get());
    let (failures, observed) = (probe.failures.get(), probe.observed.get());
    let started = Instant::now();
    let cpu_start = eventstore::testing::machine_cpu_seconds();
    let sent = drive(&system, &tokens, &tx, (rate, seconds, 1_000_000, true)).await;
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
    let delta = |counter: &eventstore::metrics::prometheus_client::metrics::counter::Counter,
                 before: u64| { counter.get() - before };
    println!(
        "saga probe (measured run + tail of warm-up): changes {} ({:.1}/order), steps {} ({:.1}/order), step failures {}, messages observed {}",
        delta(&probe.changes, changes), delta(&probe.changes, changes) as f64 / orders,
        delta(&probe.steps, steps), delta(&probe.steps, steps) as f64 / orders,
        delta(&probe.failures, failures), delta(&probe.observed, observed)
    );
    let with_latency: Vec<(&Placed, f64)> =
        confirmed.iter().map(|s| (&s.placed, latency(s))).collect();
    breakdown(&pool, &with_latency).await;
    pool.close().await;
    format!(
        "{rate:>7.0} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {errors:>6} {:>8} {:>9} {cpu_per_order:>7.1}",
        placed_per_s, confirmed_per_s, pct(&all, 0.5), pct(&all, 0.9), pct(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN), early, late,
        if every_settled { "yes" } else { "NO" }, if sustained { "yes" } else { "no" }
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("RATE SECONDS ..."))
        .collect();
    let pairs: Vec<(f64, f64)> = if args.is_empty() {
        vec![(20.0, 20.0)]
    } else {
        assert!(
            args.len().is_multiple_of(2),
            "usage: saga_bench RATE SECONDS [RATE SECONDS ...]"
        );
        args.chunks(2).map(|c| (c[0], c[1])).collect()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("saga bench: POST /api/v1/orders -> rm_orders.orders shows confirmed (polled every {} ms, one task)", POLL.as_millis());
    println!(
        "machine: {cores} cores; broker {}; whole system in this process",
        fulcrum_tests::system::brokers()
    );
    let mut rows = Vec::new();
    for (rate, seconds) in pairs {
        rows.push(run(rate, seconds).await);
        // Let the stopped system's tasks wind down before the next one.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("\n offered  placed confirm     p50     p90     p99      max  p50 1st  p50 3rd errors  settled sustained     cpu");
    println!(" per s    per s   per s      ms      ms      ms       ms  third ms third ms                     ms/order");
    for row in rows {
        println!("{row}");
    }
}
