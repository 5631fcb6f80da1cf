//! Append throughput and latency, beside pgbench's one-INSERT ceiling
//! measured in the same run with the same client counts and connection
//! settings.
//!
//! ```text
//! cargo run --release -p eventstore --example append_bench [-- SECONDS]
//! ```
//!
//! Uses (and recreates) the database `fulcrum_bench` on the server of
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`, TLS off).
//! Needs `pgbench` on the PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use eventstore::{db, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The allocator the `fulcrum` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DB: &str = "fulcrum_bench";

#[derive(Clone, Copy)]
enum Shape {
    NewStream,
    HotStream,
    Batch(usize),
}

struct Outcome {
    appends_per_s: f64,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let url = recreate_database(&server).await?;
    let pool = db::connect(&url, 40).await?;
    db::migrate(&pool).await?;
    sqlx::query("CREATE TABLE pgbench_events (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let store = EventStore::new(pool.clone());

    println!(
        "append_bench: {seconds} s per row, {} CPUs\n",
        std::thread::available_parallelism()?
    );
    println!("| workload | writers | appends/s | events/s | p50 ms | p99 ms | errors | pgbench INSERT tps | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for writers in [1, 8, 32] {
        let ceiling = pgbench(&url, writers, seconds)?;
        for (name, shape) in [
            ("new stream per append", Shape::NewStream),
            ("one hot stream", Shape::HotStream),
        ] {
            let o = run(&store, writers, shape, Duration::from_secs(seconds)).await;
            println!(
                "| {name} | {writers} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {ceiling:.0} | {:.2}x |",
                o.appends_per_s, o.events_per_s, o.p50_ms, o.p99_ms, o.errors, o.appends_per_s / ceiling
            );
        }
    }
    for writers in [1, 8] {
        // The bulk ceiling: 100 rows made by the server itself per
        // transaction, so no client encodes, sends or parses anything.
        let rows_per_s = pgbench_script(&url, writers, seconds, BULK_INSERT)? * 100.0;
        let o = run(
            &store,
            writers,
            Shape::Batch(100),
            Duration::from_secs(seconds),
        )
        .await;
        println!(
            "| 100 events per append | {writers} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {rows_per_s:.0} rows/s | {:.2}x |",
            o.appends_per_s, o.events_per_s, o.p50_ms, o.p99_ms, o.errors, o.events_per_s / rows_per_s
        );
    }
    Ok(())
}

async fn recreate_database(server: &str) -> anyhow::Result<String> {
    let base = PgConnectOptions::from_str(server)?;
    let mut admin = base.clone().database("postgres").connect().await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {DB}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let mut url = url::Url::parse(server)?;
    url.set_path(DB);
    Ok(url.to_string())
}

async fn run(store: &EventStore, writers: usize, shape: Shape, duration: Duration) -> Outcome {
    let hot = format!("hot-{}", uuid::Uuid::new_v4().simple());
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let hot = hot.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut events = 0usize;
                let meta = json!({"correlation_id": "bench", "user_id": "bench"});
                while Instant::now() < deadline {
                    let (stream, batch) = match shape {
                        Shape::NewStream => (format!("bench-{}", uuid::Uuid::new_v4()), 1),
                        Shape::HotStream => (hot.clone(), 1),
                        Shape::Batch(n) => (format!("bench-{}", uuid::Uuid::new_v4()), n),
                    };
                    let evs: Vec<NewEvent> = (0..batch)
                        .map(|i| {
                            NewEvent::new(
                                "BenchEvent",
                                1,
                                json!({"writer": w, "i": i, "sku": "SKU-1", "quantity": 3}),
                            )
                        })
                        .collect();
                    let t = Instant::now();
                    match store
                        .append(&stream, ExpectedVersion::Any, &evs, &meta)
                        .await
                    {
                        Ok(_) => {
                            latencies.push(t.elapsed());
                            events += batch;
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, events, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut events = 0;
    let mut errors = 0;
    for t in tasks {
        let (l, e, err) = t.await.expect("writer panicked");
        latencies.extend(l);
        events += e;
        errors += err;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Outcome {
        appends_per_s: latencies.len() as f64 / elapsed,
        events_per_s: events as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

/// One autocommit INSERT of one event row into a table shaped like
/// `events` (same columns, defaults and indexes).
const ONE_INSERT: &str = "INSERT INTO pgbench_events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata, recorded_at, hash) \
     VALUES ('bench-' || gen_random_uuid(), 'bench', 1, gen_random_uuid(), 'BenchEvent', 1, \
     '{\"i\": 0, \"sku\": \"SKU-1\", \"quantity\": 3, \"writer\": 0}', '{\"user_id\": \"bench\", \"correlation_id\": \"bench\"}', now(), '\\x00');\n";

/// One autocommit INSERT of 100 rows of one new stream, made by the server
/// (`generate_series`), into the same table: what Postgres itself can
/// ingest with `events`' indexes, the ceiling of any bulk path.
const BULK_INSERT: &str = "INSERT INTO pgbench_events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata, recorded_at, hash) \
     SELECT s, 'bench', g, gen_random_uuid(), 'BenchEvent', 1, \
     jsonb_build_object('writer', 0, 'i', g, 'sku', 'SKU-1', 'quantity', 3), '{\"user_id\": \"bench\", \"correlation_id\": \"bench\"}', now(), \
     '\\x0000000000000000000000000000000000000000000000000000000000000000' \
     FROM (SELECT 'bench-' || gen_random_uuid() AS s) AS x, generate_series(1, 100) AS g;\n";

/// pgbench's rate for [`ONE_INSERT`].
fn pgbench(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    pgbench_script(url, clients, seconds, ONE_INSERT)
}

/// pgbench's transactions per second running `sql` with `clients`.
fn pgbench_script(url: &str, clients: usize, seconds: u64, sql: &str) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("fulcrum_pgbench_{}.sql", std::process::id()));
    std::fs::write(&script, sql)?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("running pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pgbench gave no tps: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(tps)
}
