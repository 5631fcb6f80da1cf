//! Any number of processes with the default roles are safe (issue 12,
//! defect 7): two `Application`s, each with every role (api, relay,
//! projector, saga, sealer), on one database and one broker, put every
//! event on Kafka exactly once, and their seals form one valid chain.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use api::auth::Role;
use api::config::ServeConfig;
use api::Application;
use clap::Parser;
use eventstore::kafka::topics;
use eventstore::testing::TestDb;
use fulcrum_tests::system::brokers;
use fulcrum_tests::{token, SECRET};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    config: ServeConfig,
}

/// A `fulcrum serve` with the default roles, in this process.
struct Process {
    base: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Process {
    async fn start(database_url: &str, prefix: &str, seal_key: &str) -> Process {
        let serve = Serve::try_parse_from([
            "serve",
            "--database-url",
            database_url,
            "--database-max-connections",
            "15",
            "--addr",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--kafka-brokers",
            &brokers(),
            "--topic-prefix",
            prefix,
            "--roles",
            "api,relay,projector,saga,sealer",
            &format!("--seal-key={seal_key}"),
            "--seal-interval-ms",
            "100",
        ])
        .unwrap();
        let app = Application::build(serve.config).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(app.run_until(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        Process { base, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

/// Messages on every partition of every topic of `prefix`: the sum of
/// the high watermarks (nothing is ever deleted from these topics).
fn messages_on_kafka(prefix: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let mut total = 0;
    for aggregate in topics::AGGREGATES {
        let topic = topics::topic_for(prefix, aggregate);
        for partition in 0..topics::DEFAULT_PARTITIONS {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
            {
                total += high.max(0);
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_every_role_publish_each_event_once() {
    let db = TestDb::new().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    // One deployment, one seal key.
    let key = eventstore::seal::SealKey::ephemeral();
    let pem = key.to_pem().unwrap();
    let processes = [
        Process::start(&db.url, &prefix, &pem).await,
        Process::start(&db.url, &prefix, &pem).await,
    ];
    let client = reqwest::Client::new();
    let operator = token("olga", Role::Operator);
    for n in 0..20 {
        let base = &processes[n % 2].base;
        let sku = format!("SKU-{n}");
        let defined = client
            .post(format!("{base}/api/v1/products"))
            .bearer_auth(&operator)
            .json(&json!({"sku": sku, "name": "Widget", "unit_price": 100, "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(defined.status(), 201);
        let received = client
            .post(format!("{base}/api/v1/inventory/{sku}/receipts"))
            .bearer_auth(&operator)
            .json(&json!({"quantity": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(received.status(), 201);
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 40);

    // Wait until Kafka has every event, then stop both processes (their
    // relays finish what they were sending) and count.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let prefix = prefix.clone();
        let published = tokio::task::spawn_blocking(move || messages_on_kafka(&prefix))
            .await
            .unwrap();
        if published >= events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {published} of {events} events reached Kafka within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [first, second] = processes;
    first.stop().await;
    second.stop().await;
    let published = tokio::task::spawn_blocking(move || messages_on_kafka(&prefix))
        .await
        .unwrap();
    assert_eq!(
        published, events,
        "every event on Kafka exactly once ({published} messages for {events} events)"
    );
    // The two sealers took turns on one chain of seals, which verifies.
    let report = eventstore::seal::verify_seals(&db.pool, Some(key.public_key()), |_, _| {})
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
}
