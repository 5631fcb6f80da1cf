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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::auth::Role;
use fulcrum_tests::system::System;
use fulcrum_tests::token;
use saga::{SagaConfig, SagaProbe};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

const SKUS: usize = 20;
const CUSTOMERS: usize = 500;
const POLL: Duration = Duration::from_millis(5);
const GIVE_UP: Duration = Duration::from_secs(30);
const WARM_UP_SECONDS: f64 = 3.0;

/// An accepted order, as the tracker learns of it.
struct Placed {
    order_id: Uuid,
    index: usize,
    started: Instant,
    started_ms: f64,
    measured: bool,
}

enum Outcome {
    Confirmed,
    Cancelled,
    TimedOut,
}

struct Settled {
    placed: Placed,
    outcome: Outcome,
    at: Instant,
}

/// What the senders of one phase saw.
#[derive(Default)]
struct Sent {
    accepted: usize,
    rejected: BTreeMap<String, usize>,
    last_answer: Option<Instant>,
    spawn_lag: Vec<Duration>,
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

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

fn body(i: usize) -> Value {
    let sku = |n: usize| format!("SKU-{:02}", n % SKUS);
    let mut lines = vec![json!({"sku": sku(i), "quantity": 1})];
    if i % 2 == 1 {
        lines.push(json!({"sku": sku(i + 7), "quantity": 2}));
    }
    json!({
        "lines": lines,
        "shipping_address": {"name": "Bench", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa",
    })
}

/// Polls the order read model for every outstanding order; answers each
/// order's outcome once the senders are gone and nothing is outstanding.
async fn track(pool: PgPool, mut placed: mpsc::UnboundedReceiver<Placed>) -> Vec<Settled> {
    let mut outstanding: HashMap<Uuid, Placed> = HashMap::new();
    let mut settled = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while open || !outstanding.is_empty() {
        tick.tick().await;
        loop {
            match placed.try_recv() {
                Ok(p) => {
                    outstanding.insert(p.order_id, p);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if outstanding.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = outstanding.keys().copied().collect();
        let at = Instant::now();
        let rows = sqlx::query(
            "SELECT order_id, status FROM rm_orders.orders WHERE order_id = ANY($1) AND status <> 'placed'",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .unwrap();
        for row in rows {
            let id: Uuid = row.get(0);
            let status: String = row.get(1);
            let outcome = match status.as_str() {
                "cancelled" => Outcome::Cancelled,
                _ => Outcome::Confirmed,
            };
            let placed = outstanding.remove(&id).unwrap();
            settled.push(Settled {
                placed,
                outcome,
                at,
            });
        }
        let late: Vec<Uuid> = outstanding
            .values()
            .filter(|p| at.duration_since(p.started) > GIVE_UP)
            .map(|p| p.order_id)
            .collect();
        for id in late {
            let placed = outstanding.remove(&id).unwrap();
            settled.push(Settled {
                placed,
                outcome: Outcome::TimedOut,
                at,
            });
        }
    }
    settled
}

/// Places `rate` orders per second for `seconds`, open loop; every
/// accepted order goes to the tracker. Numbers orders from `first`.
async fn drive(
    system: &Arc<System>,
    tokens: &Arc<Vec<String>>,
    tracker: &mpsc::UnboundedSender<Placed>,
    (rate, seconds, first, measured): (f64, f64, usize, bool),
) -> Sent {
    let total = (rate * seconds).round() as usize;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    for i in first..first + total {
        let scheduled = tick.tick().await;
        let (system, tokens, tracker, sent) = (
            system.clone(),
            tokens.clone(),
            tracker.clone(),
            sent.clone(),
        );
        inflight.spawn(async move {
            let (started, started_ms) = (Instant::now(), epoch_ms());
            let url = format!("{}/api/v1/orders", system.app.base);
            let response = system
                .app
                .client
                .post(url)
                .bearer_auth(&tokens[i % CUSTOMERS])
                .json(&body(i))
                .send()
                .await;
            let answer = match response {
                Ok(r) if r.status() == 202 => r.json::<Value>().await.map_err(|e| e.to_string()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(format!("transport: {e}")),
            };
            let order_id = answer.and_then(|a| {
                a["order_id"]
                    .as_str()
                    .and_then(|id| id.parse::<Uuid>().ok())
                    .ok_or_else(|| "no order id".to_owned())
            });
            let mut sent = sent.lock().unwrap();
            sent.spawn_lag
                .push(started.duration_since(scheduled.into_std()));
            sent.last_answer = Some(Instant::now());
            match order_id {
                Ok(order_id) => {
                    sent.accepted += 1;
                    let placed = Placed {
                        order_id,
                        index: i - first,
                        started,
                        started_ms,
                        measured,
                    };
                    tracker.send(placed).unwrap();
                }
                Err(why) => *sent.rejected.entry(why).or_default() += 1,
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    Arc::into_inner(sent).unwrap().into_inner().unwrap()
}

/// Where the time of the confirmed orders went: for each event of an
/// order's correlation (label: type, step or fact, n-th occurrence), its
/// `recorded_at` after the POST started, and the gap since the order's
/// previous event; then the POST answer and the read model.
async fn breakdown(pool: &PgPool, confirmed: &[(&Placed, f64)]) {
    let streams: Vec<String> = confirmed
        .iter()
        .map(|(p, _)| format!("order-{}", p.order_id))
        .collect();
    let rows = sqlx::query(
        "SELECT p.stream_id, e.event_type, \
                COALESCE(e.data->'step'->>'name', e.data->'fact'->>'type', \
                         e.data->'data'->'step'->>'name', e.data->'data'->'fact'->>'type', '') AS detail, \
                EXTRACT(EPOCH FROM e.recorded_at)::float8 * 1000 AS at_ms \
         FROM events p JOIN events e ON e.metadata->>'correlation_id' = p.metadata->>'correlation_id' \
         WHERE p.event_type = 'OrderPlaced' AND p.stream_id = ANY($1) ORDER BY e.position",
    )
    .bind(&streams)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut timelines: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for row in rows {
        let (stream, kind, detail): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let label = if detail.is_empty() {
            kind
        } else {
            format!("{kind}:{detail}")
        };
        timelines
            .entry(stream)
            .or_default()
            .push((label, row.get(3)));
    }
    let mut offsets: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut stages: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (placed, seen_ms) in confirmed {
        let stream = format!("order-{}", placed.order_id);
        let mut timeline = timelines.remove(&stream).unwrap_or_default();
        timeline.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The critical path: up to OrderConfirmed, then the read model
        // (the saga observing OrderConfirmed runs beside the projector).
        let end = timeline.iter().position(|(l, _)| l == "OrderConfirmed");
        timeline.truncate(end.map_or(timeline.len(), |e| e + 1));
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        timeline.push((
            "(read model shows confirmed)".into(),
            placed.started_ms + seen_ms,
        ));
        timeline.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (mut previous, mut seen) = (placed.started_ms, HashMap::<String, usize>::new());
        for (label, at) in timeline {
            // A recheck re-sends an unanswered step: not on the path.
            let recheck = label.starts_with("SagaStepRechecked");
            let stage = if label == "OrderPlaced" {
                "1 HTTP POST -> OrderPlaced recorded"
            } else if label.starts_with("SagaStarted") || label.starts_with("SagaEventObserved") {
                "2 event recorded -> saga observes it (in-process, or relay + Kafka)"
            } else if label.starts_with("Saga") {
                "3 saga records the next step"
            } else if label.starts_with('(') {
                "5 OrderConfirmed -> read model (relay, Kafka, projector, poll)"
            } else {
                "4 step command recorded (command layer, gateway)"
            };
            let n = seen.entry(label.clone()).or_default();
            *n += 1;
            let label = if *n == 1 {
                label
            } else {
                format!("{label} #{n}")
            };
            let entry = offsets.entry(label).or_default();
            entry.0.push(at - placed.started_ms);
            entry.1.push(at - previous);
            if !recheck {
                *sums.entry(stage).or_default() += at - previous;
                previous = at;
            }
        }
        for (stage, sum) in sums {
            stages.entry(stage).or_default().push(sum);
        }
    }
    println!("  critical path by stage (per-order sums of the gaps, ms):");
    for (stage, sums) in stages {
        let sums = sorted(sums);
        println!(
            "  {stage:<72} p50 {:>7.1}  p99 {:>7.1}",
            pct(&sums, 0.5),
            pct(&sums, 0.99)
        );
    }
    let mut table: Vec<(String, usize, Vec<f64>, Vec<f64>)> = offsets
        .into_iter()
        .map(|(label, (at, gap))| (label, at.len(), sorted(at), sorted(gap)))
        .collect();
    table.sort_by(|a, b| pct(&a.2, 0.5).total_cmp(&pct(&b.2, 0.5)));
    println!("  where the time goes (ms after the POST started; gap = since the order's previous event):");
    println!(
        "  {:<48} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "event (recorded_at)", "orders", "at p50", "at p99", "gap p50", "gap p99"
    );
    for (label, n, at, gap) in table {
        println!(
            "  {label:<48} {n:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            pct(&at, 0.5),
            pct(&at, 0.99),
            pct(&gap, 0.5),
            pct(&gap, 0.99)
        );
    }
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
