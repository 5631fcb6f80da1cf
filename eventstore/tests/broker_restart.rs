//! A broker restart never takes the process down (issue 12, defect 1).
//!
//! librdkafka 2.12.1 crashed (SIGSEGV in `rd_kafka_metadata_cache_find`
//! with a NULL topic name) about 0.1 s after a restarted Tansu answered a
//! consumer's fetch: Tansu gives topics a zero topic id, so librdkafka
//! fetches by name (Fetch v12), and a partition answer carrying the
//! `CurrentLeader` tag then builds a metadata update with neither a topic
//! id nor a name. This test restarts a private broker the way an operator
//! does (SIGTERM, SIGKILL half a second later, start again) many times
//! while a consumer group member and a producer run in this process; the
//! test binary surviving is the assertion, plus the consumer receiving
//! again after every restart.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::kafka::{topics, ConsumerSettings, EventConsumer};
use eventstore::testing::Broker;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const RESTARTS: usize = 5;
/// Consumer groups in the process (a `fulcrum serve` runs five).
const CONSUMERS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_survives_repeated_hard_broker_restarts() {
    let broker = Broker::own();
    broker.up().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut settings = ConsumerSettings::new(broker.brokers.clone());
    settings.topic_prefix = prefix.clone();
    settings.session_timeout_ms = 6000;
    let topic = settings.topic("order");
    // Every aggregate's topic, as a `fulcrum serve` process's consumers
    // have them; only one is written to. After a restart the empty broker
    // does not know the quiet ones (nothing here creates them again, as
    // nothing in Fulcrum did until its next start), and the consumers'
    // fetches for them meet "unknown topic" answers.
    let all: Vec<String> = topics::AGGREGATES
        .iter()
        .map(|aggregate| settings.topic(aggregate))
        .collect();
    let received = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for group in 0..CONSUMERS {
        let consumer =
            EventConsumer::subscribe(&settings, &settings.group_id(&format!("g{group}")), &all)
                .await
                .unwrap();
        let received = received.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    batch = consumer.recv_batch(100) => {
                        received.fetch_add(batch.len(), Ordering::Relaxed);
                        consumer.commit(&batch);
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("message.timeout.ms", "2000")
        .create()
        .unwrap();
    let writer = {
        let stop = stop.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("order-{}", n % 7);
                let payload = n.to_string();
                let _ = producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_millis(100),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    wait_for_more(&received, 0, "before the first restart").await;
    for restart in 1..=RESTARTS {
        broker.kill(Duration::from_millis(500)).await;
        // The broker stays away as long as in the report (3 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        broker.up().await;
        // The written topic comes back as start-up code makes it:
        // created, never auto-created by a client.
        recreate(&broker.brokers, &topic, settings.partitions).await;
        let before = received.load(Ordering::Relaxed);
        wait_for_more(&received, before, &format!("after restart {restart}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
}

/// Creates `topic` on the restarted (empty) broker, retrying until it answers.
async fn recreate(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let made = topics::create_topics(
            &admin,
            &[topic.to_owned()],
            partitions,
            1,
            Duration::from_secs(5),
        )
        .await;
        if made.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "cannot create {topic}: {made:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the consumer has received more than `before` messages.
async fn wait_for_more(received: &AtomicUsize, before: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) <= before {
        assert!(
            Instant::now() < deadline,
            "the consumer received nothing {when} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
