//! The relay through broker outages: every event appended during a burst
//! reaches Kafka, each stream in version order, and the checkpoint never
//! moves past an event the broker did not acknowledge.
//!
//! The test runs its own Tansu broker on a free port with `scripts/kafka.sh`
//! and a private `KAFKA_RUN_DIR`, so stopping it disturbs no other test.
//! Needs Postgres (`DATABASE_URL`) and python3 (or an earlier
//! `scripts/kafka.sh install`).
//!
//! ## Why the broker keeps nothing across a restart here
//! Tansu 0.6 does not keep a log across a restart reliably: with `s3://`
//! storage on the local S3 server, a restarted broker reuses offsets it had
//! already given out, overwriting acknowledged batches (seen here: 1,600
//! acknowledged messages, about 650 readable afterwards, and duplicate
//! offsets). So the test's broker uses `memory://` storage, where a restart
//! is the harshest case there is: the broker comes back empty, without
//! topics, producer ids or messages. What reached Kafka is then what the
//! test's consumers read: one consumer per broker life, each from the
//! beginning of that life's log, collected across the outages.
//!
//! A broker that loses acknowledged messages would make even a correct relay
//! look as if it had skipped them, so before each stop the burst pauses until
//! the relay has published everything and the consumer has read it; the
//! writers start again once the broker is down, and go on through the outage.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::relay::{topic_for, Relay, RelayConfig, RelayStats, AGGREGATES};
use eventstore::testing::{eventually, Broker, TestDb};
use eventstore::{
    load_checkpoint, Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
};
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 3;
const WRITERS: usize = 8;
const PER_WRITER: usize = 200;

/// A message as a test consumer saw it: (broker life, topic, partition,
/// offset, stream id, version).
type Got = (usize, String, i32, i64, String, u64);

/// A consumer of every partition of the aggregates' topics from the
/// beginning of broker life `life`, collecting into a shared list.
struct Collector {
    done: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Collector {
    fn start(brokers: &str, prefix: &str, life: usize, into: Arc<Mutex<Vec<Got>>>) -> Collector {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("test-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "7000")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for aggregate in AGGREGATES {
            for partition in 0..PARTITIONS {
                assignment
                    .add_partition_offset(
                        &topic_for(prefix, aggregate),
                        partition,
                        Offset::Beginning,
                    )
                    .unwrap();
            }
        }
        consumer.assign(&assignment).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let next = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
                // Errors (while the broker is down) are expected.
                let Ok(Ok(message)) = next else { continue };
                let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                let stream = value["stream_id"].as_str().unwrap().to_owned();
                assert_eq!(message.key().unwrap(), stream.as_bytes());
                into.lock().unwrap().push((
                    life,
                    message.topic().to_owned(),
                    message.partition(),
                    message.offset(),
                    stream,
                    value["version"].as_u64().unwrap(),
                ));
            }
        });
        Collector { done, task }
    }

    async fn stop(self) {
        self.done.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
    }
}

fn covered(got: &[Got], expected: &[RecordedEvent]) -> bool {
    let have: HashSet<(&str, u64)> = got.iter().map(|g| (g.4.as_str(), g.5)).collect();
    expected
        .iter()
        .all(|e| have.contains(&(e.stream_id.as_str(), e.version)))
}

/// Every stored event arrived on its topic, each stream in one partition,
/// its first copies in version order (duplicates may follow). Broker lives
/// follow each other; within one, a stream's messages are in offset order.
fn check_delivery(stored: &[RecordedEvent], prefix: &str, got: &[Got]) {
    let mut in_kafka_order = got.to_vec();
    in_kafka_order.sort();
    let types: HashMap<&str, &str> = stored
        .iter()
        .map(|e| (e.stream_id.as_str(), e.stream_type.as_str()))
        .collect();
    let mut place: HashMap<&str, (&str, i32)> = HashMap::new();
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (_, topic, partition, _, stream, version) in &in_kafka_order {
        let ty = types
            .get(stream.as_str())
            .unwrap_or_else(|| panic!("unknown stream {stream}"));
        assert_eq!(*topic, topic_for(prefix, ty));
        let p = place.entry(stream).or_insert((topic, *partition));
        assert_eq!(
            *p,
            (topic.as_str(), *partition),
            "{stream} spans partitions"
        );
        let n = next.entry(stream).or_insert(1);
        if *version >= *n {
            assert_eq!(*version, *n, "{stream}: v{version} arrived before v{n}");
            *n += 1;
        }
    }
    for e in stored {
        assert!(
            next.get(e.stream_id.as_str()).copied().unwrap_or(1) > e.version,
            "{} v{} never reached Kafka",
            e.stream_id,
            e.version
        );
    }
}

async fn all_events(store: &EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Checkpoint::START;
    loop {
        let batch = store.read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            return all;
        };
        after = last.checkpoint();
        all.extend(batch);
    }
}

/// Every stored event once all `n` appended ones are readable: a
/// transaction elsewhere on the server (another test) can hold the gap-free
/// horizon back for a moment.
async fn all_readable(store: &EventStore, n: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = all_events(store).await;
        if all.len() >= n || Instant::now() > deadline {
            assert_eq!(all.len(), n, "readable events");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a condition that needs no waiting to check.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    eventually(timeout, what, || std::future::ready(cond())).await;
}

/// A running relay: its counters, its task, and the sender that stops it.
fn spawn_relay(
    store: &EventStore,
    config: &RelayConfig,
) -> (Arc<RelayStats>, JoinHandle<()>, oneshot::Sender<()>) {
    let relay = Relay::new(store.clone(), config.clone()).unwrap();
    let stats = relay.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stats, task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_kafka_in_stream_order_across_broker_outages() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("{:>7.1?} {what}", started.elapsed());
    let broker = Broker::own();
    broker.up().await;
    let db = TestDb::with_pool_size(16).await;
    let store = db.store();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut config = RelayConfig::new(&broker.brokers).with_topic_prefix(&prefix);
    config.partitions = PARTITIONS;
    config.batch_size = 100;
    // Short, so that an outage of a few seconds produces delivery errors
    // that the relay must retry, rather than messages waiting in librdkafka.
    config.message_timeout = Duration::from_secs(2);
    config.retry_backoff_max = Duration::from_millis(800);
    let (stats_a, relay_a, _stop_a) = spawn_relay(&store, &config);

    // The burst: 8 writers append 200 events each over 40 streams of five
    // aggregates. Each writer goes up to its allowance, which the test
    // raises quarter by quarter.
    let streams: Vec<String> = (0..40)
        .map(|i| {
            let ty = ["order", "product", "inventory", "payment", "shipment"][i % 5];
            format!("{ty}-{i}")
        })
        .collect();
    let allowance = Arc::new(AtomicUsize::new(0));
    let appended = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, streams) = (store.clone(), streams.clone());
            let (allowance, appended) = (allowance.clone(), appended.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while n < PER_WRITER {
                    if n >= allowance.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let stream = &streams[rand::thread_rng().gen_range(0..streams.len())];
                    let event = NewEvent::new("Burst", 1, json!({"writer": w, "n": n}));
                    let metadata = json!({"correlation_id": format!("w{w}")});
                    store
                        .append(stream, ExpectedVersion::Any, &[event], &metadata)
                        .await
                        .unwrap();
                    n += 1;
                    appended.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let quarter = PER_WRITER / 4;
    let appended_quarters = |q: usize| {
        let appended = appended.clone();
        move || appended.load(Ordering::SeqCst) >= q * WRITERS * quarter
    };
    let got: Arc<Mutex<Vec<Got>>> = Arc::new(Mutex::new(Vec::new()));
    let all_consumed = |stored: &[RecordedEvent]| covered(&got.lock().unwrap(), stored);

    // First quarter, broker up. The consumer starts once the relay has
    // created the topics.
    allowance.store(quarter, Ordering::SeqCst);
    wait_until("the relay publishes", Duration::from_secs(60), || {
        stats_a.acked() > 0
    })
    .await;
    let collector = Collector::start(&broker.brokers, &prefix, 0, got.clone());
    wait_until(
        "the first quarter is appended",
        Duration::from_secs(60),
        appended_quarters(1),
    )
    .await;
    let stored = all_readable(&store, appended.load(Ordering::SeqCst)).await;
    let head = stored.last().unwrap().checkpoint();
    wait_until("relay A publishes it", Duration::from_secs(60), || {
        stats_a.checkpoint() == head
    })
    .await;
    wait_until("the consumer reads it", Duration::from_secs(60), || {
        all_consumed(&stored)
    })
    .await;

    // Outage 1: the second quarter is appended while the broker is down.
    // The relay keeps failing and retrying, and delivers once it is back.
    phase("outage 1: stopping the broker");
    broker.down().await;
    collector.stop().await;
    phase("outage 1: the broker is down");
    allowance.store(2 * quarter, Ordering::SeqCst);
    let errors = stats_a.delivery_errors();
    wait_until("deliveries fail", Duration::from_secs(30), || {
        stats_a.delivery_errors() > errors
    })
    .await;
    wait_until(
        "the second quarter is appended",
        Duration::from_secs(60),
        appended_quarters(2),
    )
    .await;
    assert!(
        stats_a.checkpoint() == head,
        "the checkpoint moved while the broker was down"
    );
    let acked = stats_a.acked();
    broker.up().await;
    phase("outage 1: the broker is back");
    wait_until("relay A delivers again", Duration::from_secs(60), || {
        stats_a.acked() > acked
    })
    .await;
    let collector = Collector::start(&broker.brokers, &prefix, 1, got.clone());
    let stored = all_readable(&store, appended.load(Ordering::SeqCst)).await;
    let head = stored.last().unwrap().checkpoint();
    wait_until("relay A catches up", Duration::from_secs(60), || {
        stats_a.checkpoint() == head
    })
    .await;
    wait_until("the consumer reads it all", Duration::from_secs(60), || {
        all_consumed(&stored)
    })
    .await;
    assert!(stats_a.retries() > 0);
    phase("outage 1: caught up");

    // Outage 2: the third quarter is appended while the broker is down,
    // and relay A dies while it cannot deliver. Relay B starts from the
    // saved checkpoint once the broker is back: had A's checkpoint moved
    // past an event the broker did not acknowledge, B would never send it.
    phase("outage 2: stopping the broker");
    broker.down().await;
    collector.stop().await;
    phase("outage 2: the broker is down");
    allowance.store(3 * quarter, Ordering::SeqCst);
    let errors = stats_a.delivery_errors();
    wait_until("deliveries fail again", Duration::from_secs(30), || {
        stats_a.delivery_errors() > errors
    })
    .await;
    wait_until(
        "the third quarter is appended",
        Duration::from_secs(60),
        appended_quarters(3),
    )
    .await;
    relay_a.abort();
    let _ = relay_a.await;
    let crashed_at = load_checkpoint(&db.pool, "relay").await.unwrap();
    assert_eq!(
        crashed_at, head,
        "the checkpoint moved while the broker was down"
    );
    broker.up().await;
    phase("outage 2: the broker is back, relay A was killed");
    let (stats_b, relay_b, stop_b) = spawn_relay(&store, &config);

    // The last quarter, broker up; then everything must have reached Kafka.
    allowance.store(PER_WRITER, Ordering::SeqCst);
    wait_until("relay B delivers", Duration::from_secs(60), || {
        stats_b.acked() > 0
    })
    .await;
    let collector = Collector::start(&broker.brokers, &prefix, 2, got.clone());
    for w in writers {
        w.await.unwrap();
    }
    let stored = all_readable(&store, appended.load(Ordering::SeqCst)).await;
    assert_eq!(stored.len(), WRITERS * PER_WRITER);
    let last = stored.last().unwrap().checkpoint();
    assert!(crashed_at < last);
    wait_until("relay B catches up", Duration::from_secs(60), || {
        stats_b.checkpoint() == last
    })
    .await;
    wait_until(
        "the consumer has every event",
        Duration::from_secs(60),
        || all_consumed(&stored),
    )
    .await;
    stop_b.send(()).unwrap();
    relay_b.await.unwrap();
    collector.stop().await;

    let got = got.lock().unwrap().clone();
    check_delivery(&stored, &prefix, &got);
    assert_eq!(load_checkpoint(&db.pool, "relay").await.unwrap(), last);
    assert_eq!(stats_a.out_of_order() + stats_b.out_of_order(), 0);
    phase(&format!(
        "{} events, {} messages consumed; relay A: {} acked, {} delivery errors, {} retries; \
         relay B: {} acked, {} delivery errors",
        stored.len(),
        got.len(),
        stats_a.acked(),
        stats_a.delivery_errors(),
        stats_a.retries(),
        stats_b.acked(),
        stats_b.delivery_errors(),
    ));
}
