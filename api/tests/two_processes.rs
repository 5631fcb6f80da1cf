//! Any number of processes with the default roles are safe (issue 12,
//! defect 7), checked with two real `fulcrum serve` processes, each with
//! every role (api, relay, projector, saga, sealer) on its own port, over
//! one database and one broker: without a failover Kafka holds every
//! event exactly once; when the process holding the relay is SIGKILLed,
//! the other takes over and Kafka holds every event at least once.
//!
//! What Kafka holds is read by consuming every partition from the start
//! and counting each `event_id` header, compared with the events table
//! (not by adding up high watermarks).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod processes;

use std::time::{Duration, Instant};

use eventstore::seal::SealKey;
use eventstore::testing::{Broker, TestDb};
use processes::{
    define_product, eventually, free_port, kafka_copies, order, orders_reach, product,
    projections_caught_up, read_models_equal_a_clean_fold, receipt, stored_event_ids, Deployment,
    KafkaLog, Server, UNSTOCKED,
};
use sqlx::PgPool;

/// A deployment over a fresh database and a broker of the test's own.
async fn deployment(db: &TestDb, broker: &Broker, key: &SealKey) -> Deployment {
    Deployment {
        database_url: db.url.clone(),
        brokers: broker.brokers.clone(),
        prefix: format!("ttwo{}", uuid::Uuid::new_v4().simple()),
        seal_key: key.to_pem().unwrap(),
    }
}

/// The backend pid of the session holding the relay's lock, if any.
async fn relay_lock_holder(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND ((classid::bigint << 32) | objid::bigint)
                = hashtextextended('fulcrum.single-active.relay', 0)",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_every_role_put_each_event_on_kafka_exactly_once() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let key = SealKey::ephemeral();
    let deployment = deployment(&db, &broker, &key).await;
    let servers = [
        Server::ready(&deployment, free_port()).await,
        Server::ready(&deployment, free_port()).await,
    ];
    let client = reqwest::Client::new();

    // A bounded load through both processes: products, receipts, and paid
    // orders, whose sagas run in either process (the sandbox gateway's
    // books are in Postgres, so either may capture what the other
    // authorised).
    for n in 0..12 {
        let base = &servers[n % 2].base;
        let sku = format!("SKU-{}", n % 4);
        if n < 4 {
            product(&client, base, &sku).await;
        } else {
            receipt(&client, base, &sku, 50).await;
        }
        order(&client, base, &format!("customer-{n}"), &sku).await;
    }
    orders_reach(&db.pool, 12, "confirmed", Duration::from_secs(90)).await;
    projections_caught_up(&db.pool, Duration::from_secs(60)).await;
    // Each order's payment was captured once, in full.
    let captures: Vec<(String, i64)> = sqlx::query_as(
        "SELECT idempotency_key, amount FROM sandbox_movements WHERE operation = 'capture'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(captures.len(), 12, "{captures:?}");
    assert!(
        captures.iter().all(|(_, amount)| *amount == 100),
        "{captures:?}"
    );

    let stored = stored_event_ids(&db.pool).await;
    let (brokers, prefix) = (deployment.brokers.clone(), deployment.prefix.clone());
    let expected = stored.clone();
    let (log, behind) = tokio::task::spawn_blocking(move || {
        let mut log = KafkaLog::open(&brokers, &prefix);
        log.read_until_all(&expected, Duration::from_secs(60));
        log.read_to_end(Duration::from_secs(30));
        let behind = log.watermarks_behind_what_was_read();
        (log, behind)
    })
    .await
    .unwrap();
    let twice: Vec<_> = log.copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events are on Kafka more than once ({} messages for {} events): {twice:?}",
        twice.len(),
        log.messages(),
        stored.len()
    );
    // Sagas may have appended more since `stored` was read; every message
    // must still be a stored event.
    let now_stored = stored_event_ids(&db.pool).await;
    let unknown: Vec<_> = log
        .copies
        .keys()
        .filter(|id| !now_stored.contains(*id))
        .collect();
    assert!(
        unknown.is_empty(),
        "Kafka holds events the store does not: {unknown:?}"
    );
    println!(
        "two processes: {} events stored, {} messages consumed; partitions whose reported high watermark is below what was read: {behind:?}; read {:?}",
        stored.len(),
        log.messages(),
        log.read
    );
    for (topic, partitions) in &log.partitions {
        assert_eq!(*partitions, 3, "{topic} has {partitions} partitions");
    }

    read_models_equal_a_clean_fold(&db.pool).await;
    // The two sealers took turns on one chain of seals, which verifies.
    let report = eventstore::seal::verify_seals(&db.pool, Some(key.public_key()), |_, _| {})
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
    let [first, second] = servers;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_relay_holder_is_killed_the_other_process_takes_over() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let key = SealKey::ephemeral();
    let deployment = deployment(&db, &broker, &key).await;
    // The first process holds the relay's lock before the second starts.
    let mut holder = Server::ready(&deployment, free_port()).await;
    let pool = &db.pool;
    eventually(
        Duration::from_secs(30),
        "the first relay to lock",
        move || async move { relay_lock_holder(pool).await.is_some() },
    )
    .await;
    let locked_by = relay_lock_holder(&db.pool).await;
    let standby = Server::ready(&deployment, free_port()).await;
    let client = reqwest::Client::new();

    // Writes through both, then the holder is killed mid-load.
    define_product(&client, &holder.base, UNSTOCKED, 100).await;
    for n in 0..8 {
        let base = if n % 2 == 0 {
            &holder.base
        } else {
            &standby.base
        };
        let sku = format!("SKU-{}", n % 4);
        if n < 4 {
            product(&client, base, &sku).await;
        } else {
            receipt(&client, base, &sku, 50).await;
        }
        order(&client, base, &format!("customer-{n}"), UNSTOCKED).await;
    }
    let killed = Instant::now();
    holder.kill();
    let position = receipt(&client, &standby.base, "SKU-0", 50).await;
    let written_after_kill: String =
        sqlx::query_scalar("SELECT event_id::text FROM events WHERE position = $1")
            .bind(position)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    eventually(
        Duration::from_secs(30),
        "the standby to take the relay's lock",
        move || async move {
            matches!(relay_lock_holder(pool).await, Some(pid) if Some(pid) != locked_by)
        },
    )
    .await;
    let locked_after = killed.elapsed();
    let (brokers, prefix) = (deployment.brokers.clone(), deployment.prefix.clone());
    let delivered_after = tokio::task::spawn_blocking(move || {
        let mut log = KafkaLog::open(&brokers, &prefix);
        log.read_until_all(
            &[written_after_kill].into_iter().collect(),
            Duration::from_secs(30),
        );
        killed.elapsed()
    })
    .await
    .unwrap();
    for n in 8..12 {
        let sku = format!("SKU-{}", n % 4);
        receipt(&client, &standby.base, &sku, 50).await;
        order(&client, &standby.base, &format!("customer-{n}"), UNSTOCKED).await;
    }
    orders_reach(&db.pool, 12, "cancelled", Duration::from_secs(90)).await;
    projections_caught_up(&db.pool, Duration::from_secs(60)).await;
    read_models_equal_a_clean_fold(&db.pool).await;

    let stored = stored_event_ids(&db.pool).await;
    let (messages, duplicates) = kafka_copies(
        &deployment.brokers,
        &deployment.prefix,
        stored,
        Duration::from_secs(60),
    )
    .await;
    standby.stop().await;
    println!(
        "FIGURES relay failover: the standby held the relay's lock {} ms after SIGKILL of the holder, \
         and an event written right after the kill was on Kafka {} ms after it; \
         Kafka: {messages} messages, {duplicates} events twice or more",
        locked_after.as_millis(),
        delivered_after.as_millis()
    );
}
