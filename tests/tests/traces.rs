//! One trace spans HTTP → append → Kafka → read model → saga commands: a
//! `traceparent` sent on a command appears in its events' metadata, in the
//! Kafka headers, in the JSON log lines of the projector that applied them,
//! and in the events of the commands the saga sent for the order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::auth::Role;
use fulcrum_tests::system::{brokers, System};
use fulcrum_tests::token;
use serde_json::{json, Value};
use uuid::Uuid;

/// Log lines written by the process, for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// JSON logs into `captured`, as `FULCRUM_LOG_FORMAT=json` writes them.
fn capture_json_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,projections=debug")
        .with_writer(move || writer.clone())
        .init();
    captured
}

#[tokio::test]
async fn a_trace_id_sent_on_a_command_follows_its_events_through_the_pipeline() {
    let logs = capture_json_logs();
    let system = System::start(1).await;
    system.app.given_product("TRC-1", 700, 5).await;
    let trace_id = Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let body = json!({
        "lines": [{"sku": "TRC-1", "quantity": 1}],
        "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa",
    });

    let response = system
        .app
        .client
        .post(format!("{}/api/v1/orders", system.app.base))
        .bearer_auth(token("alice", Role::Customer))
        .header("traceparent", &traceparent)
        .header("x-correlation-id", "trace-test-1")
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(answered.contains(&trace_id), "{answered}");
    let placed: Value = response.json().await.unwrap();
    let order_id: Uuid = placed["order_id"].as_str().unwrap().parse().unwrap();
    system.order_reaches(order_id, "confirmed").await;

    // In the metadata of its events.
    let stream = format!("order-{order_id}");
    let events = stream_events(&system, &stream).await;
    let placed_event = &events[0];
    assert_eq!(placed_event["event_type"], "OrderPlaced");
    let recorded = placed_event["metadata"]["traceparent"].as_str().unwrap();
    assert!(
        recorded.starts_with(&format!("00-{trace_id}-")),
        "{recorded}"
    );

    // In the Kafka headers.
    let topic = format!("{}.order.events", system.prefix);
    let message = first_message_for(&topic, &stream).await;
    let header = header(&message, "traceparent").expect("a traceparent header");
    assert!(header.contains(&trace_id), "{header}");

    // In the log lines of the projector that applied them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = logs.lines().into_iter().any(|line| {
            let span = &line["span"];
            line["fields"]["message"] == "applied"
                && span["name"] == "projection_event"
                && span["projection"] == "orders"
                && span["trace_id"] == trace_id.as_str()
                && span["correlation_id"] == "trace-test-1"
        });
        if applied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no projector log line carries the trace id"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // And the saga's commands continue the trace (the reservation it sent
    // for the order's line).
    let stock = stream_events(&system, "inventory-TRC-1").await;
    let reserved = stock
        .iter()
        .find(|e| e["event_type"] == "StockReserved")
        .expect("a reservation");
    let continued = reserved["metadata"]["traceparent"].as_str().unwrap_or("");
    assert!(continued.contains(&trace_id), "{reserved:#}");
}

async fn stream_events(system: &System, stream: &str) -> Vec<Value> {
    let operator = token("olga", Role::Operator);
    let path = format!("/api/v1/audit/streams/{stream}/events");
    let answer: Value = system
        .app
        .get(&path, Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    answer["events"].as_array().cloned().unwrap_or_default()
}

fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    eventstore::kafka::headers::get(message, name)
}

/// The first message of `topic` (all partitions, from the beginning) whose
/// key is `key`.
async fn first_message_for(topic: &str, key: &str) -> rdkafka::message::OwnedMessage {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}.trace-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let partitions = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no message for {key} on {topic}"))
            .unwrap();
        if message.key() == Some(key.as_bytes()) {
            return message.detach();
        }
    }
}
