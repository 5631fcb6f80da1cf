//! How fast a projection rebuilds from the event store.
//!
//! ```text
//! cargo run --release -p projections --example rebuild_bench [-- EVENTS]
//! ```
//!
//! Generates a realistic mixed history of at least EVENTS events (default
//! 1,000,000; the generator of the projection tests, seed 42, 1,000
//! products) into the database `fulcrum_bench_rebuild_<EVENTS>_42` on the
//! server of `DATABASE_URL` (its database name is ignored; default the local
//! server). The generated database is KEPT and reused by later runs with the
//! same EVENTS (generating a million events takes minutes); set
//! `BENCH_FRESH=1` to generate it again, and drop it yourself when done
//! (`DROP DATABASE fulcrum_bench_rebuild_1000000_42`).
//!
//! Then, for each projection, runs `Rebuild` (bulk build into a fresh
//! schema, catch-up, swap) `BENCH_RUNS` times (default 3) and prints the
//! median: events read, seconds of `Rebuild::run`, events/s, and the split
//! of the time into the bulk phase (read + fold, which overlap: reading runs
//! ahead on its own task) and the rest (COPY of the rows, catch-up and
//! swap). Then all four
//! rebuilds at once (skipped when `BENCH_PROJECTIONS=orders,sales` picks
//! projections). For reference it first times `EventStore::read_all` over
//! the whole store alone (batches of 10,000, every column, no fold).
//!
//! The goal is at least 50,000 events/s per projection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/projections/history.rs"]
mod history;

use std::str::FromStr;
use std::time::{Duration, Instant};

use eventstore::{Checkpoint, EventStore};
use projections::{Projection, Rebuild, RebuildError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use history::History;

const SEED: u64 = 42;
const SKUS: usize = 1_000;

/// Connects to `fulcrum_bench_rebuild_<events>_<seed>`, generating the
/// history into it first unless an earlier run completed it.
async fn database(events: usize) -> anyhow::Result<PgPool> {
    let server = PgConnectOptions::from_str(&eventstore::testing::server_url())?;
    let name = format!("fulcrum_bench_rebuild_{events}_{SEED}");
    let fresh = std::env::var("BENCH_FRESH").is_ok_and(|v| v == "1");
    let mut admin = PgConnection::connect_with(&server.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    let options = server.database(&name);
    let connect = || {
        PgPoolOptions::new()
            .max_connections(24)
            .connect_with(options.clone())
    };
    if exists && !fresh {
        let pool = connect().await?;
        let done: Option<i64> = sqlx::query_scalar("SELECT events FROM bench_history")
            .fetch_optional(&pool)
            .await
            .unwrap_or(None);
        if let Some(done) = done {
            println!("reusing database {name} ({done} events)");
            admin.close().await?;
            return Ok(pool);
        }
        pool.close().await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let pool = connect().await?;
    eventstore::db::migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    println!("generating at least {events} events into {name} ...");
    let started = Instant::now();
    let mut history = History::new(SKUS, SEED);
    while history.events < events {
        history.generate(&store, 1_000, 250).await?;
        eprint!(
            "\r  {} events, {} orders, {:.0} events/s   ",
            history.events,
            history.orders,
            history.events as f64 / started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    sqlx::query("CREATE TABLE bench_history (events bigint NOT NULL, orders bigint NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO bench_history VALUES ($1, $2)")
        .bind(history.events as i64)
        .bind(history.orders as i64)
        .execute(&pool)
        .await?;
    println!(
        "generated {} events ({} orders) in {:.1} s",
        history.events,
        history.orders,
        started.elapsed().as_secs_f64()
    );
    Ok(pool)
}

/// One rebuild: events read, total time, time of the bulk read + fold.
struct Run {
    events: u64,
    total: Duration,
    bulk: Duration,
}

async fn rebuild(store: &EventStore, projection: Projection) -> anyhow::Result<Run> {
    let mut bulk = Duration::ZERO;
    // The previous run's lock is released when the server notices its
    // connection closed, a moment after that run returned.
    let mut tries = 0;
    let rebuild = loop {
        match Rebuild::start(store, projection).await {
            Err(RebuildError::Busy(_)) if tries < 500 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            started => break started?,
        }
    };
    let started = Instant::now();
    let report = rebuild.run(|progress| bulk = progress.elapsed).await?;
    Ok(Run {
        events: report.events,
        total: started.elapsed(),
        bulk,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = match std::env::args().nth(1) {
        Some(arg) => arg.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    // BENCH_PROJECTIONS=orders,sales limits the runs (and skips "all four").
    let only = std::env::var("BENCH_PROJECTIONS").ok();
    let chosen: Vec<Projection> = match &only {
        Some(names) => names
            .split(',')
            .map(|n| Projection::parse(n.trim()).ok_or_else(|| anyhow::anyhow!("projection {n}?")))
            .collect::<Result<_, _>>()?,
        None => Projection::ALL.to_vec(),
    };
    let pool = database(events).await?;
    let store = EventStore::new(pool.clone());

    // For reference: the store's general reader alone (every column of every
    // event, no read-ahead); the bulk phase reads only what its fold needs.
    let started = Instant::now();
    let mut after = Checkpoint::START;
    let mut read = 0usize;
    loop {
        let batch = store.read_all(after, 10_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.checkpoint();
        read += batch.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\nread_all alone: {read} events in {secs:.2} s = {:.0} events/s",
        read as f64 / secs
    );

    println!("\nrebuild, median of {runs} run(s):");
    println!(
        "{:<10} {:>9} {:>8} {:>11} {:>13} {:>16}",
        "projection", "events", "s", "events/s", "read+fold s", "copy+swap s"
    );
    for projection in chosen {
        let mut all = Vec::new();
        for _ in 0..runs {
            all.push(rebuild(&store, projection).await?);
        }
        let events = all[0].events;
        let total = median(all.iter().map(|r| r.total.as_secs_f64()).collect());
        let bulk = median(all.iter().map(|r| r.bulk.as_secs_f64()).collect());
        let rest = median(
            all.iter()
                .map(|r| (r.total - r.bulk).as_secs_f64())
                .collect(),
        );
        println!(
            "{:<10} {events:>9} {total:>8.2} {:>11.0} {bulk:>13.2} {rest:>16.2}",
            projection.name(),
            events as f64 / total,
        );
    }

    if only.is_some() {
        return Ok(());
    }
    let mut walls = Vec::new();
    let mut read = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let results = futures::future::join_all(Projection::ALL.map(|p| rebuild(&store, p))).await;
        walls.push(started.elapsed().as_secs_f64());
        read = 0;
        for result in results {
            read += result?.events;
        }
    }
    let wall = median(walls);
    println!(
        "{:<10} {read:>9} {wall:>8.2} {:>11.0}   (all four at once; {:.0} store events/s)",
        "all four",
        read as f64 / wall,
        read as f64 / 4.0 / wall
    );
    Ok(())
}
