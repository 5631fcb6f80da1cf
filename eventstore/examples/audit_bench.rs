//! The audit side at scale: seal throughput (from scratch, and keeping up
//! with writers), `verify --seals` over the whole store, and the plan of
//! every audit search filter (EXPLAIN (ANALYZE, BUFFERS)).
//!
//! ```text
//! cargo run --release -p eventstore --example audit_bench [-- EVENTS]
//! ```
//!
//! Fills (and recreates) the database `fulcrum_audit_bench` on the server of
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`, TLS off)
//! with EVENTS events (default 1,000,000): streams of 10 events of the
//! order, payment and inventory kinds, 1,000 users, one correlation id per
//! stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use eventstore::audit::{explain_search, SearchFilter};
use eventstore::seal::{seal_all, seal_now, verify_seals, SealKey};
use eventstore::{db, Checkpoint, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const DB: &str = "fulcrum_audit_bench";
const PER_STREAM: usize = 10;
const WRITERS: usize = 8;
const TYPES: [(&str, &str); 10] = [
    ("order", "OrderPlaced"),
    ("order", "OrderConfirmed"),
    ("order", "OrderShipped"),
    ("order", "OrderDelivered"),
    ("payment", "PaymentAuthorized"),
    ("payment", "PaymentCaptured"),
    ("inventory", "StockReserved"),
    ("inventory", "StockCommitted"),
    ("order", "OrderCancelled"),
    ("payment", "PaymentRefunded"),
];

/// Appends `streams` streams of 10 events from `WRITERS` writers, numbered
/// from `first`; answers the events per second.
async fn fill(store: &EventStore, first: u64, streams: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + streams;
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        return;
                    }
                    // One kind per stream; its ten events cycle through the
                    // kind's types, with a rare one now and then.
                    let kind = ["order", "payment", "inventory"][(n % 3) as usize];
                    let kinds: Vec<&str> = TYPES
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, t)| *t)
                        .collect();
                    let events: Vec<NewEvent> = (0..PER_STREAM)
                        .map(|i| {
                            let event_type = if n % 100 == 0 && i == PER_STREAM - 1 {
                                "OrderCancelled"
                            } else {
                                kinds[i % kinds.len()]
                            };
                            NewEvent::new(
                                event_type,
                                1,
                                json!({
                                    "order_id": format!("{n:08}"),
                                    "sku": format!("SKU-{}", n % 500),
                                    "quantity": i + 1,
                                    "amount": 1250 * (i + 1),
                                    "currency": "EUR",
                                    "note": "an event of about the size a real one has",
                                }),
                            )
                        })
                        .collect();
                    let metadata = json!({
                        "correlation_id": format!("corr-{n}"),
                        "causation_id": format!("cmd-{n}"),
                        "user_id": format!("user-{}", n % 1000),
                        "command_id": format!("cmd-{n}"),
                    });
                    store
                        .append(
                            &format!("{kind}-{n}"),
                            ExpectedVersion::NoStream,
                            &events,
                            &metadata,
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    (streams as usize * PER_STREAM) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let admin = PgConnectOptions::from_str(&server)?.database("postgres");
    let mut conn = admin.connect().await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {DB}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(&server)?;
    url.set_path(DB);
    let pool = db::connect(url.as_str(), 20).await?;
    db::migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    let key = SealKey::ephemeral();
    println!(
        "audit_bench: {events} events, {} CPUs, {WRITERS} writers, {PER_STREAM} events per append\n",
        std::thread::available_parallelism()?
    );

    let streams = events / PER_STREAM as u64;
    let fill_rate = fill(&store, 0, streams).await;
    println!("store append rate while filling: {fill_rate:.0} events/s");
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    let middle = Utc::now();

    // Sealing from scratch: every event into one tree (waiting out the
    // gap-free horizon first).
    let started = Instant::now();
    let mut sealed = 0u64;
    while sealed < events {
        for seal in seal_all(&pool, &key).await? {
            sealed = seal.tree_size;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "seal from scratch: {sealed} events in {elapsed:.2} s = {:.0} events/s",
        sealed as f64 / elapsed
    );

    // Sealing while writers append: a seal every 100 ms, as the sealer
    // would with FULCRUM_SEAL_INTERVAL_MS=100.
    let writing = Arc::new(AtomicBool::new(true));
    let seal_time = Arc::new(AtomicU64::new(0));
    let sealer = {
        let (pool, key, writing, seal_time) = (
            pool.clone(),
            key.clone(),
            writing.clone(),
            seal_time.clone(),
        );
        tokio::spawn(async move {
            let mut seals = 0u64;
            while writing.load(Ordering::SeqCst) {
                let started = Instant::now();
                if seal_now(&pool, &key).await.unwrap().is_some() {
                    seals += 1;
                    seal_time.fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seals
        })
    };
    let extra = (streams / 10).max(1);
    let live_rate = fill(&store, streams, extra).await;
    writing.store(false, Ordering::SeqCst);
    let seals = sealer.await?;
    let behind_at_end: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (tx_id, position) >
           (SELECT up_to_tx_id, up_to_position FROM seals ORDER BY seal_id DESC LIMIT 1)",
    )
    .fetch_one(&pool)
    .await?;
    let busy = seal_time.load(Ordering::SeqCst) as f64 / 1e6;
    let added = extra * PER_STREAM as u64 - behind_at_end.max(0) as u64;
    println!(
        "sealing beside {WRITERS} writers ({live_rate:.0} events/s): {seals} seals, {added} events sealed in {busy:.2} s of sealing = {:.0} events/s; {behind_at_end} events unsealed when the writers stopped",
        added as f64 / busy.max(1e-9)
    );
    let total = events + extra * PER_STREAM as u64;
    let mut covered = 0;
    while covered < total {
        for seal in seal_all(&pool, &key).await? {
            covered = seal.tree_size;
        }
    }

    // verify --seals over everything.
    let started = Instant::now();
    let report = verify_seals(&pool, Some(key.public_key()), |_, _| {}).await?;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(report.valid, "{report:?}");
    println!(
        "verify --seals: {} events, {} seals in {elapsed:.2} s = {:.0} events/s\n",
        report.events_checked,
        report.seals_checked,
        report.events_checked as f64 / elapsed
    );

    // The plan of every search filter, on this store.
    let rare_user = "user-417".to_owned();
    let filters: Vec<(&str, SearchFilter)> = vec![
        (
            "event_type=OrderCancelled",
            SearchFilter {
                event_type: Some("OrderCancelled".into()),
                ..Default::default()
            },
        ),
        (
            "stream_type=payment",
            SearchFilter {
                stream_type: Some("payment".into()),
                ..Default::default()
            },
        ),
        (
            "stream_id=order-54321",
            SearchFilter {
                stream_id: Some("order-54321".into()),
                ..Default::default()
            },
        ),
        (
            "user_id=user-417",
            SearchFilter {
                user_id: Some(rare_user.clone()),
                ..Default::default()
            },
        ),
        (
            "correlation_id=corr-77777",
            SearchFilter {
                correlation_id: Some("corr-77777".into()),
                ..Default::default()
            },
        ),
        (
            "from=<after the fill>&to=<10 s later>",
            SearchFilter {
                from: Some(middle),
                to: Some(middle + chrono::Duration::seconds(10)),
                ..Default::default()
            },
        ),
        (
            "event_type=OrderCancelled&user_id=user-417",
            SearchFilter {
                event_type: Some("OrderCancelled".into()),
                user_id: Some(rare_user),
                ..Default::default()
            },
        ),
    ];
    for (name, filter) in filters {
        println!("EXPLAIN (ANALYZE, BUFFERS) of GET /api/v1/audit/events?{name}&limit=50");
        for line in explain_search(&pool, &filter, Checkpoint::START, 51).await? {
            println!("    {line}");
        }
        println!();
    }
    pool.close().await;
    Ok(())
}
