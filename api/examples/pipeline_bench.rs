//! Commit-to-Kafka and commit-to-read-model lag under a sustained command rate.
//!
//! ```text
//! scripts/kafka.sh start
//! cargo run --release -p api --example pipeline_bench [-- RATE SECONDS]
//! ```
//!
//! Runs the relay and the four projectors in-process against the broker at
//! `KAFKA_BROKERS` (default 127.0.0.1:9092) over a fresh database, then
//! issues RATE commands per second (default 500) for SECONDS (default 20)
//! through the command layer, open loop (a command starts every 1/RATE s
//! whether or not earlier ones finished): 40% PlaceOrder, 30% ConfirmOrder
//! of a placed order, 30% stock receipts over 50 SKUs.
//!
//! Lags are measured per event from its `recorded_at`, stamped just before
//! its append, so they include the append itself:
//! - commit -> Kafka: until an independent consumer (assigned, not in a
//!   group) receives it;
//! - commit -> read model: until the projector transaction that applied it
//!   committed (every projection that consumes it counts once).
//!
//! The relay's own share is printed too: until it read the event from the
//! store, and until the broker acknowledged it.
//!
//! Knobs, for finding where the time goes: `KAFKA_FETCH_WAIT_MAX_MS`
//! (projectors and the independent consumer, default 10), `RELAY_LINGER_MS`
//! (default 5), `BENCH_PROJECTIONS=orders,sales` (run only these),
//! `BENCH_CONSUMER_PROPERTIES=key=value,...` (projector consumers),
//! `BENCH_PIPELINE_RUNTIME=1` (relay and projectors on a one-thread runtime
//! of their own).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use commands::{CommandContext, CommandHandler, ExecutorConfig, OrderRequest, RequestedLine};
use domain::inventory::InventoryCommand;
use domain::order::OrderCommand;
use domain::product::ProductCommand;
use domain::Address;
use eventstore::relay::RelayConfig;
use eventstore::testing::TestDb;
use projections::status::OnError;
use projections::worker::{ProjectorConfig, ProjectorProbe};
use projections::Projection;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

const SKUS: usize = 50;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// `KAFKA_FETCH_WAIT_MAX_MS` for the projectors and the independent
/// consumer, as `fulcrum serve` reads it (default 10).
fn fetch_wait_max_ms() -> u32 {
    std::env::var("KAFKA_FETCH_WAIT_MAX_MS")
        .map_or(10, |v| v.parse().expect("KAFKA_FETCH_WAIT_MAX_MS"))
}

fn ctx() -> CommandContext {
    CommandContext::new("bench", "pipeline-bench")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1e3
}

fn report(name: &str, mut lags: Vec<Duration>) {
    lags.sort();
    println!(
        "{name:<26} events {:>7}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
    );
}

fn sku(i: usize) -> String {
    format!("SKU-{i:03}")
}

fn order(order_id: Uuid, sku: String) -> OrderRequest {
    OrderRequest {
        order_id,
        customer_id: "bench".into(),
        lines: vec![RequestedLine { sku, quantity: 1 }],
        shipping_address: Address {
            name: "Bench".into(),
            line1: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        payment_method: "tok_visa".into(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args.get(1).map_or(500, |a| a.parse().expect("RATE"));
    let seconds: u64 = args.get(2).map_or(20, |a| a.parse().expect("SECONDS"));
    let db = TestDb::with_pool_size(30).await;
    let store = db.store();
    let handler = CommandHandler::new(store.clone(), ExecutorConfig::default());
    let prefix = format!("bench{}", Uuid::new_v4().simple());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut relay_config = RelayConfig::new(brokers()).with_topic_prefix(&prefix);
    if let Ok(linger) = std::env::var("RELAY_LINGER_MS") {
        relay_config.linger = Duration::from_millis(linger.parse().expect("RELAY_LINGER_MS"));
    }
    let relay = eventstore::relay::Relay::new(store.clone(), relay_config).unwrap();
    let relay_stats = relay.stats();
    // BENCH_PIPELINE_RUNTIME=1: the relay and projectors on a runtime of
    // their own (one worker thread), so the command load's tasks do not
    // queue ahead of them.
    let own_runtime = std::env::var("BENCH_PIPELINE_RUNTIME").is_ok_and(|v| v == "1");
    let pipeline_runtime = own_runtime.then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    let spawner = pipeline_runtime
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone());
    let relay = spawner.spawn(relay.run(stopped()));
    let mut probes = Vec::new();
    let mut projectors = Vec::new();
    let only = std::env::var("BENCH_PROJECTIONS").ok();
    for projection in Projection::ALL {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == projection.name()))
        {
            continue;
        }
        let mut config = ProjectorConfig::new(brokers());
        config.kafka.topic_prefix.clone_from(&prefix);
        config.on_error = OnError::Halt;
        config.kafka.fetch_wait_max_ms = fetch_wait_max_ms();
        // BENCH_CONSUMER_PROPERTIES="key=value,key=value" for the projectors.
        if let Ok(properties) = std::env::var("BENCH_CONSUMER_PROPERTIES") {
            config.kafka.properties = properties
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        let probe = Arc::new(ProjectorProbe::default());
        probes.push((projection, probe.clone()));
        projectors.push(spawner.spawn(projections::worker::run(
            store.clone(),
            projection,
            config,
            probe,
            stopped(),
        )));
    }

    // Catalogue and stock, then wait until every projector has joined and applied it.
    for i in 0..SKUS {
        let define = ProductCommand::DefineProduct {
            sku: sku(i),
            name: format!("Product {i}"),
            unit_price: 100 + i as i64,
            currency: "EUR".into(),
        };
        handler
            .products
            .execute(&sku(i), define, ctx(), Value::Null)
            .await
            .unwrap();
        let receive = InventoryCommand::ReceiveStock {
            sku: sku(i),
            quantity: 1_000_000,
        };
        handler
            .inventory
            .execute(&sku(i), receive, ctx(), Value::Null)
            .await
            .unwrap();
    }
    let warm = Uuid::new_v4();
    handler
        .place_order(order(warm, sku(0)), ctx())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = projections::status::list(store.pool()).await.unwrap();
        if list
            .iter()
            .all(|p| p.lag == 0 || !probes.iter().any(|(running, _)| running.name() == p.name))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projectors did not catch up: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The independent consumer: every partition of every topic, from the end.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{prefix}.bench"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_max_ms().to_string())
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for aggregate in ["order", "inventory", "catalog"] {
        let topic = eventstore::relay::topic_for(&prefix, aggregate);
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment
                    .add_partition_offset(t.name(), p.id(), Offset::End)
                    .unwrap();
            }
        }
    }
    consumer.assign(&assignment).unwrap();
    let kafka_lags = Arc::new(Mutex::new(Vec::new()));
    let collector = {
        let kafka_lags = kafka_lags.clone();
        let stop = stopped();
        tokio::spawn(async move {
            let mut stop = std::pin::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    message = consumer.recv() => {
                        let Ok(message) = message else { continue };
                        let Some(payload) = message.payload() else { continue };
                        let Ok(envelope) = serde_json::from_slice::<Value>(payload) else { continue };
                        let Some(recorded) = envelope["recorded_at"].as_str() else { continue };
                        let Ok(recorded) = recorded.parse::<DateTime<Utc>>() else { continue };
                        if let Ok(lag) = (Utc::now() - recorded).to_std() {
                            kafka_lags.lock().await.push(lag);
                        }
                    }
                }
            }
        })
    };
    for (_, probe) in &probes {
        probe.record_lags();
    }
    relay_stats.record_lags();

    // The load: open loop at `rate` commands per second; the first 3 s warm
    // up (the independent consumer's first fetches, caches) and are not counted.
    println!("{rate} commands/s for {seconds} s after a 3 s warm-up (relay + 4 projectors in-process, broker {})", brokers());
    let placed = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    drive(&handler, &placed, rate, 3).await;
    kafka_lags.lock().await.clear();
    relay_stats.take_lags();
    for (_, probe) in &probes {
        probe.take_lags();
    }
    let started = Instant::now();
    let (issued, failed) = drive(&handler, &placed, rate, seconds).await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "issued {issued} commands in {elapsed:.1} s ({:.0}/s), {failed} failed",
        issued as f64 / elapsed,
    );

    // Drain, then report.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = projections::status::list(store.pool()).await.unwrap();
        if list
            .iter()
            .all(|p| p.lag == 0 || !probes.iter().any(|(running, _)| running.name() == p.name))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projectors did not catch up: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    collector.await.unwrap();
    let relayed = relay_stats.take_lags();
    report("commit -> relay read", relayed.read);
    report("commit -> relay acked", relayed.acked);
    report(
        "commit -> Kafka",
        std::mem::take(&mut *kafka_lags.lock().await),
    );
    let mut all = Vec::new();
    for (projection, probe) in &probes {
        let lags = probe.take_lags();
        all.extend(lags.iter().copied());
        report(&format!("commit -> rm {projection}"), lags);
    }
    report("commit -> read model (all)", all);
    relay.await.unwrap().unwrap();
    for projector in projectors {
        projector.await.unwrap().unwrap();
    }
    if let Some(runtime) = pipeline_runtime {
        runtime.shutdown_background();
    }
}

/// Issues `rate` commands per second for `seconds`, open loop: 40% PlaceOrder,
/// 30% ConfirmOrder of a placed order, 30% stock receipts. Answers (issued, failed).
async fn drive(
    handler: &CommandHandler,
    placed: &Arc<Mutex<Vec<Uuid>>>,
    rate: u64,
    seconds: u64,
) -> (u64, u64) {
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for i in 0..total {
        tick.tick().await;
        let handler = handler.clone();
        let placed = placed.clone();
        let errors = errors.clone();
        inflight.spawn(async move {
            let outcome = match i % 10 {
                0..=3 => {
                    let id = Uuid::new_v4();
                    let placing = order(id, sku(i as usize % SKUS));
                    let r = handler.place_order(placing, ctx()).await.map(|_| ());
                    if r.is_ok() {
                        placed.lock().await.push(id);
                    }
                    r
                }
                4..=6 => {
                    let id = placed.lock().await.pop();
                    match id {
                        Some(id) => handler
                            .orders
                            .execute(
                                &id.to_string(),
                                OrderCommand::ConfirmOrder,
                                ctx(),
                                Value::Null,
                            )
                            .await
                            .map(|_| ()),
                        None => Ok(()),
                    }
                }
                _ => {
                    let s = sku(i as usize % SKUS);
                    let receive = InventoryCommand::ReceiveStock {
                        sku: s.clone(),
                        quantity: 1,
                    };
                    handler
                        .inventory
                        .execute(&s, receive, ctx(), Value::Null)
                        .await
                        .map(|_| ())
                }
            };
            if outcome.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    (total, errors.load(Ordering::Relaxed))
}
