//! Support for fault-injection tests with real `fulcrum serve` processes:
//! the built binary started on a port of its own over a shared database
//! and broker ([`Server`]), SIGKILLed and restarted; what Kafka holds, read
//! by consuming the topics ([`KafkaLog`]); and the checks every such test
//! makes (the store, a clean fold of the read models).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::auth::{mint_hs256, Role};
use eventstore::kafka::topics::{topic_for, AGGREGATES};
pub use eventstore::testing::{eventually, free_port};
use projections::Projection;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use sqlx::PgPool;

/// The HS256 secret the servers run with.
pub const SECRET: &str = "a-fault-injection-test-secret-long-enough";

/// A valid token for `sub` with `role`.
pub fn token(sub: &str, role: Role) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        sub,
        role,
        Duration::from_secs(600),
        "fulcrum",
        "fulcrum-api",
    )
    .unwrap()
}

/// A product that is defined but never stocked: an order for it is
/// cancelled (`out_of_stock`) by its saga without the payment gateway,
/// whose sandbox keeps its books in the memory of one process.
pub const UNSTOCKED: &str = "SKU-NONE";

/// An order of `quantity` of `sku`, paid with an approving sandbox token.
pub fn order_body(sku: &str, quantity: i64) -> Value {
    json!({
        "lines": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa"
    })
}

/// What every `fulcrum serve` of one deployment shares.
#[derive(Clone)]
pub struct Deployment {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `KAFKA_BROKERS`.
    pub brokers: String,
    /// `FULCRUM_TOPIC_PREFIX`.
    pub prefix: String,
    /// `FULCRUM_SEAL_KEY` (PEM).
    pub seal_key: String,
}

/// A `fulcrum serve` child process with every default role, on its own
/// port; killed (SIGKILL) when dropped.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `fulcrum serve` for `deployment` on `port` (not waiting for it).
    pub fn start(deployment: &Deployment, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .arg("serve")
            .env("DATABASE_URL", &deployment.database_url)
            .env("DATABASE_MAX_CONNECTIONS", "15")
            .env("FULCRUM_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", SECRET)
            .env("KAFKA_BROKERS", &deployment.brokers)
            .env("FULCRUM_TOPIC_PREFIX", &deployment.prefix)
            .env("FULCRUM_SEAL_KEY", &deployment.seal_key)
            .env("FULCRUM_SEAL_INTERVAL_MS", "500")
            // Clients of these tests send more than the default allows
            // from one address; rate limits have their own tests.
            .env("FULCRUM_RATE_LIMIT", "0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the fulcrum binary");
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            child: Some(child),
        }
    }

    /// [`Server::start`], then waits until `/readyz` answers 200.
    pub async fn ready(deployment: &Deployment, port: u16) -> Server {
        let server = Server::start(deployment, port);
        server.wait_ready().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits (at most 60 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit.
    pub async fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        let status = status.expect("fulcrum serve did not stop within 30 s of SIGTERM");
        assert!(status.success(), "fulcrum serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every event id in the store.
pub async fn stored_event_ids(pool: &PgPool) -> HashSet<String> {
    sqlx::query_scalar::<_, String>("SELECT event_id::text FROM events")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// What the topics of one prefix hold, read by consuming every partition
/// from the beginning (no consumer group): how often each event id was
/// published.
pub struct KafkaLog {
    /// One consumer per topic (an end-of-partition event names only the
    /// partition).
    consumers: Vec<(String, BaseConsumer)>,
    /// Messages per event id (the `event_id` header).
    pub copies: HashMap<String, u32>,
    /// Messages per topic.
    pub per_topic: BTreeMap<String, usize>,
    /// Partitions per topic, from the broker's metadata.
    pub partitions: BTreeMap<String, usize>,
    /// Per partition: messages read and the next offset after the last one.
    pub read: BTreeMap<(String, i32), (usize, i64)>,
    /// Partitions whose end the consumer reached (no message since).
    at_end: HashSet<(String, i32)>,
}

impl KafkaLog {
    /// A reader of the topics of `prefix` on `brokers`. The topics must
    /// exist (the relay creates them at start).
    pub fn open(brokers: &str, prefix: &str) -> KafkaLog {
        let mut consumers = Vec::new();
        let mut partitions = BTreeMap::new();
        for aggregate in AGGREGATES {
            let topic = topic_for(prefix, aggregate);
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", format!("{prefix}.test-reader"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("allow.auto.create.topics", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .unwrap();
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .unwrap();
            let count = metadata.topics()[0].partitions().len();
            assert!(count > 0, "topic {topic} does not exist");
            let mut list = TopicPartitionList::new();
            for partition in 0..count {
                list.add_partition_offset(&topic, partition as i32, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&list).unwrap();
            partitions.insert(topic.clone(), count);
            consumers.push((topic, consumer));
        }
        KafkaLog {
            consumers,
            copies: HashMap::new(),
            per_topic: BTreeMap::new(),
            partitions,
            read: BTreeMap::new(),
            at_end: HashSet::new(),
        }
    }

    /// Reads what arrives within `wait`; returns how many messages.
    pub fn poll(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut read = 0;
        while Instant::now() < deadline {
            for (topic, consumer) in &self.consumers {
                let Some(message) = consumer.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let message = match message {
                    Ok(message) => message,
                    Err(KafkaError::PartitionEOF(partition)) => {
                        self.at_end.insert((topic.clone(), partition));
                        continue;
                    }
                    Err(error) => panic!("reading {topic}: {error}"),
                };
                let place = (topic.clone(), message.partition());
                self.at_end.remove(&place);
                let entry = self.read.entry(place).or_default();
                entry.0 += 1;
                entry.1 = message.offset() + 1;
                let event_id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("a message without an event_id header");
                *self.copies.entry(event_id).or_default() += 1;
                *self.per_topic.entry(topic.clone()).or_default() += 1;
                read += 1;
            }
        }
        read
    }

    /// Messages read so far.
    pub fn messages(&self) -> usize {
        self.copies.values().map(|n| *n as usize).sum()
    }

    /// Reads until every id of `expected` was seen (at most `limit`);
    /// panics naming how many are missing.
    pub fn read_until_all(&mut self, expected: &HashSet<String>, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let missing = expected
                .iter()
                .filter(|id| !self.copies.contains_key(*id))
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} stored events never reached Kafka ({} messages read)",
                expected.len(),
                self.messages()
            );
            self.poll(Duration::from_millis(100));
        }
    }

    /// Reads until the consumer reached the end of every partition (the
    /// end the broker's fetch answers name), so that a duplicate already
    /// on Kafka is counted; at most `limit`.
    pub fn read_to_end(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let all = self.partitions.values().sum::<usize>();
        loop {
            self.poll(Duration::from_millis(100));
            let ended = self
                .partitions
                .iter()
                .flat_map(|(topic, n)| (0..*n as i32).map(move |p| (topic.clone(), p)))
                .filter(|place| self.at_end.contains(place))
                .count();
            if ended == all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Kafka could not be read to its end"
            );
        }
    }

    /// The partitions whose high watermark, as the broker reports it now
    /// (ListOffsets), is below the offset after the last message read
    /// from them: (topic, partition, reported high, next offset read).
    pub fn watermarks_behind_what_was_read(&self) -> Vec<(String, i32, i64, i64)> {
        let mut behind = Vec::new();
        for ((topic, partition), (_, next)) in &self.read {
            let (_, consumer) = self.consumers.iter().find(|(t, _)| t == topic).unwrap();
            let (_, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .unwrap();
            if high < *next {
                behind.push((topic.clone(), *partition, high, *next));
            }
        }
        behind
    }
}

/// Waits until every projection has applied every event of the store
/// (lag 0), at most `limit`.
pub async fn projections_caught_up(pool: &PgPool, limit: Duration) {
    eventually(limit, "the projections to catch up", move || async move {
        let info = projections::status::list(pool).await.unwrap();
        info.iter().all(|i| i.lag == 0)
    })
    .await;
}

/// Waits until the relay's checkpoint reached the store's last event: every
/// event is on Kafka again. The read models alone do not say so: the local
/// feed brings a process's own writes into them without Kafka.
pub async fn relay_caught_up(pool: &PgPool, limit: Duration) {
    eventually(
        limit,
        "the relay to deliver every event",
        move || async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT COALESCE((SELECT position FROM checkpoints WHERE name = $1), 0)
                 >= COALESCE((SELECT max(position) FROM events), 0)",
            )
            .bind(eventstore::relay::DEFAULT_CHECKPOINT_NAME)
            .fetch_one(pool)
            .await
            .unwrap()
        },
    )
    .await;
}

/// Every row of the tables of `projection` in `schema`, as JSON, sorted.
async fn dump(pool: &PgPool, projection: Projection, schema: &str) -> Value {
    let tables: &[&str] = match projection {
        Projection::Orders => &["orders", "stream_positions"],
        Projection::Inventory => &["inventory", "stream_positions"],
        Projection::Catalog => &["products", "stream_positions"],
        Projection::Sales => &["sales_orders", "sales_days", "stream_positions"],
    };
    let mut out = serde_json::Map::new();
    for table in tables {
        let rows: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM \"{schema}\".\"{table}\" t ORDER BY to_jsonb(t)::text"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        out.insert((*table).to_owned(), Value::Array(rows));
    }
    Value::Object(out)
}

/// Asserts that every live read model equals a clean fold of the whole
/// store into a fresh schema.
/// Reads the deployment's topics until every event of `stored` is there
/// (at most `limit`); answers the messages read and how many events were
/// there more than once.
pub async fn kafka_copies(
    brokers: &str,
    prefix: &str,
    stored: HashSet<String>,
    limit: Duration,
) -> (usize, usize) {
    let (brokers, prefix) = (brokers.to_owned(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut log = KafkaLog::open(&brokers, &prefix);
        log.read_until_all(&stored, limit);
        let duplicates = log.copies.values().filter(|n| **n > 1).count();
        (log.messages(), duplicates)
    })
    .await
    .unwrap()
}

pub async fn read_models_equal_a_clean_fold(pool: &PgPool) {
    let store = eventstore::EventStore::new(pool.clone());
    for projection in Projection::ALL {
        let schema = format!("check_{}", projection.name());
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("SELECT fulcrum_create_read_model($1, $2)")
            .bind(projection.name())
            .bind(&schema)
            .execute(pool)
            .await
            .unwrap();
        projections::build(
            &store,
            projection,
            &schema,
            eventstore::Checkpoint::START,
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(
            dump(pool, projection, &projection.live_schema()).await,
            dump(pool, projection, &schema).await,
            "the live {projection} read model differs from a clean fold"
        );
    }
}

/// Waits until all `expected` orders in the orders read model are
/// confirmed or cancelled (their sagas ended), at most `limit`; answers the
/// count by status.
pub async fn orders_settle(
    pool: &PgPool,
    expected: usize,
    limit: Duration,
) -> BTreeMap<String, i64> {
    let what = format!("the {expected} orders did not all settle");
    wait_for_order_counts(pool, limit, &what, |counts| {
        let settled = counts.get("confirmed").copied().unwrap_or(0)
            + counts.get("cancelled").copied().unwrap_or(0);
        settled == expected as i64
    })
    .await
}

/// Polls the orders read model's count by status until `done` holds, at
/// most `limit` (then fails, saying `what`); answers the last counts.
async fn wait_for_order_counts(
    pool: &PgPool,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> BTreeMap<String, i64> {
    let schema = Projection::Orders.live_schema();
    let query = format!("SELECT status, count(*) FROM \"{schema}\".orders GROUP BY status");
    let deadline = Instant::now() + limit;
    loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(&query).fetch_all(pool).await.unwrap();
        let counts: BTreeMap<String, i64> = rows.into_iter().collect();
        if done(&counts) {
            return counts;
        }
        assert!(Instant::now() < deadline, "{what}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the sandbox gateway's books against the orders: a confirmed
/// order's payment was captured once, in full; a cancelled order kept no
/// money (what was captured was refunded).
pub async fn money_matches_the_orders(pool: &PgPool) {
    let schema = Projection::Orders.live_schema();
    let rows: Vec<(uuid::Uuid, String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "WITH approved AS (
           SELECT (request->>'order_id')::uuid AS order_id,
                  answer->'Approved'->>'authorization_id' AS authorization_id
             FROM sandbox_requests WHERE answer ? 'Approved'),
         moved AS (
           SELECT authorization_id,
                  count(*) FILTER (WHERE operation = 'capture') AS captures,
                  coalesce(sum(amount) FILTER (WHERE operation = 'capture'), 0)::bigint AS captured,
                  coalesce(sum(amount) FILTER (WHERE operation = 'refund'), 0)::bigint AS refunded
             FROM sandbox_movements GROUP BY authorization_id)
         SELECT o.order_id, o.status, o.total, coalesce(m.captures, 0), coalesce(m.captured, 0),
                coalesce(m.refunded, 0)
           FROM \"{schema}\".orders o
           LEFT JOIN approved a ON a.order_id = o.order_id
           LEFT JOIN moved m ON m.authorization_id = a.authorization_id"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (order_id, status, total, captures, captured, refunded) in rows {
        match status.as_str() {
            "confirmed" => assert!(
                captures == 1 && captured == total && refunded == 0,
                "confirmed order {order_id} (total {total}): {captures} captures of {captured}, {refunded} refunded"
            ),
            "cancelled" => assert_eq!(
                captured, refunded,
                "cancelled order {order_id} kept {} of its payment",
                captured - refunded
            ),
            other => panic!("order {order_id} is {other}"),
        }
    }
}

/// Waits until all `expected` orders in the orders read model have
/// `status` (their sagas ended), at most `limit`.
pub async fn orders_reach(pool: &PgPool, expected: usize, status: &str, limit: Duration) {
    let what = format!("the {expected} orders are not all {status}");
    wait_for_order_counts(pool, limit, &what, |counts| {
        counts.get(status).copied() == Some(expected as i64)
    })
    .await;
}

/// Posts `body` to `url` as the holder of `bearer` under one
/// idempotency key, again while the server answers 503 (a database
/// connection was not free in time, as under load while a broker is
/// away), as a client does: the key makes a repeat safe. At most 30 s.
pub async fn post_retrying(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: &Value,
) -> reqwest::Response {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .post(url)
            .bearer_auth(bearer)
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
            .await
            .unwrap();
        if response.status() != 503 || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Defines `sku` at `unit_price` (cents, EUR) through `base`.
pub async fn define_product(client: &reqwest::Client, base: &str, sku: &str, unit_price: i64) {
    let body = json!({"sku": sku, "name": "Widget", "unit_price": unit_price, "currency": "EUR"});
    let bearer = token("olga", Role::Operator);
    let defined = post_retrying(client, &format!("{base}/api/v1/products"), &bearer, &body).await;
    assert_eq!(defined.status(), 201);
}

/// Defines `sku` at 100 with 50 in stock through `base`.
pub async fn product(client: &reqwest::Client, base: &str, sku: &str) {
    define_product(client, base, sku, 100).await;
    receipt(client, base, sku, 50).await;
}

/// Receives `quantity` of `sku` through `base`; the position it reached.
pub async fn receipt(client: &reqwest::Client, base: &str, sku: &str, quantity: i64) -> i64 {
    let url = format!("{base}/api/v1/inventory/{sku}/receipts");
    let bearer = token("olga", Role::Operator);
    let received = post_retrying(client, &url, &bearer, &json!({"quantity": quantity})).await;
    assert_eq!(received.status(), 201);
    let body: serde_json::Value = received.json().await.unwrap();
    body["position"].as_i64().unwrap()
}

/// Places an order of `sku` through `base`.
pub async fn order(client: &reqwest::Client, base: &str, customer: &str, sku: &str) {
    let bearer = token(customer, Role::Customer);
    let url = format!("{base}/api/v1/orders");
    let placed = post_retrying(client, &url, &bearer, &order_body(sku, 1)).await;
    assert_eq!(placed.status(), 202);
}
