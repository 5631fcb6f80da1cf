//! The whole write-to-read pipeline over the real broker: HTTP commands ->
//! event store -> relay -> Kafka -> projectors -> read models -> HTTP queries.
//!
//! Each test runs its own relay and projectors under a random topic prefix
//! (so their topics and consumer groups are their own) against the shared
//! development broker (`KAFKA_BROKERS`, default 127.0.0.1:9092; start it with
//! `scripts/kafka.sh start`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use commands::CommandContext;
use domain::order::OrderCommand;
use domain::CancelReason;
use eventstore::relay::RelayConfig;
use eventstore::testing::eventually;
use eventstore::{EventStore, ExpectedVersion, NewEvent};
use fulcrum_tests::{order_body, problem, token, TestApp};
use projections::status::OnError;
use projections::worker::{ProjectorConfig, ProjectorError, ProjectorProbe};
use projections::{Projection, Rebuild};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A relay and projectors for one test, stopped together.
struct Pipeline {
    prefix: String,
    stop: watch::Sender<bool>,
    relay: Option<JoinHandle<()>>,
    projectors: Vec<JoinHandle<Result<(), ProjectorError>>>,
}

impl Pipeline {
    /// Starts a relay over `store` under a fresh topic prefix.
    fn start(store: &EventStore) -> Pipeline {
        let prefix = format!("t{}", Uuid::new_v4().simple());
        let (stop, _) = watch::channel(false);
        let mut pipeline = Pipeline {
            prefix,
            stop,
            relay: None,
            projectors: Vec::new(),
        };
        let config = RelayConfig::new(brokers()).with_topic_prefix(&pipeline.prefix);
        let stopped = pipeline.stopped();
        let store = store.clone();
        pipeline.relay = Some(tokio::spawn(async move {
            eventstore::relay::run(store, config, stopped)
                .await
                .unwrap();
        }));
        pipeline
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn config(&self, on_error: OnError) -> ProjectorConfig {
        let mut config = ProjectorConfig::new(brokers());
        config.kafka.topic_prefix.clone_from(&self.prefix);
        config.on_error = on_error;
        config
    }

    /// Starts `projection`'s projector; the handle answers how it ended.
    fn projector(
        &self,
        store: &EventStore,
        projection: Projection,
        on_error: OnError,
        probe: Arc<ProjectorProbe>,
    ) -> JoinHandle<Result<(), ProjectorError>> {
        let config = self.config(on_error);
        let stopped = self.stopped();
        let store = store.clone();
        tokio::spawn(async move {
            projections::worker::run(store, projection, config, probe, stopped).await
        })
    }
}

impl Pipeline {
    /// Keeps a projector running until the pipeline is dropped.
    fn keep(&mut self, projector: JoinHandle<Result<(), ProjectorError>>) {
        self.projectors.push(projector);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits until `projection`'s live read model has every event of the store.
async fn caught_up(store: &EventStore, projection: Projection) {
    let pool = store.pool().clone();
    eventually(
        Duration::from_secs(60),
        &format!("the {projection} projection to catch up"),
        || {
            let pool = pool.clone();
            async move {
                let info = projections::status::list(&pool).await.unwrap();
                info.iter()
                    .any(|i| i.name == projection.name() && i.lag == 0)
            }
        },
    )
    .await;
}

/// Every row of the tables of `projection` in `schema`, as JSON, sorted.
async fn dump(store: &EventStore, projection: Projection, schema: &str) -> Value {
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
        .fetch_all(store.pool())
        .await
        .unwrap();
        out.insert((*table).to_owned(), Value::Array(rows));
    }
    Value::Object(out)
}

/// A clean fold of the whole store into a fresh schema, with the bulk path.
async fn clean_fold(store: &EventStore, projection: Projection) -> Value {
    let schema = format!("check_{}", projection.name());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("SELECT fulcrum_create_read_model($1, $2)")
        .bind(projection.name())
        .bind(&schema)
        .execute(store.pool())
        .await
        .unwrap();
    projections::build(
        store,
        projection,
        &schema,
        eventstore::Checkpoint::START,
        |_, _| {},
    )
    .await
    .unwrap();
    dump(store, projection, &schema).await
}

fn ctx() -> CommandContext {
    CommandContext::new("pipeline-test", "pipeline-test")
}

async fn order_command(app: &TestApp, order_id: &str, command: OrderCommand) {
    app.state
        .commands
        .orders
        .execute(order_id, command, ctx(), Value::Null)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_right_after_a_write_with_min_position_sees_the_write() {
    let app = TestApp::spawn().await;
    let mut pipeline = Pipeline::start(&app.state.store);
    for projection in Projection::ALL {
        pipeline.keep(pipeline.projector(
            &app.state.store,
            projection,
            OnError::Halt,
            Arc::default(),
        ));
    }
    app.given_product("SKU-RYW", 1250, 10).await;
    let alice = token("alice", Role::Customer);
    // Joining a consumer group takes a few seconds on Tansu: warm up first,
    // so that the reads below measure read-your-writes, not group joins.
    let warm_up = app
        .post("/api/v1/orders", Some(&alice), &order_body("SKU-RYW", 1))
        .await;
    assert_eq!(warm_up.status(), 202);
    for projection in Projection::ALL {
        caught_up(&app.state.store, projection).await;
    }

    for round in 0..3 {
        let placed = app
            .post("/api/v1/orders", Some(&alice), &order_body("SKU-RYW", 2))
            .await;
        assert_eq!(placed.status(), 202, "round {round}");
        let placed: Value = placed.json().await.unwrap();
        let order_id = placed["order_id"].as_str().unwrap();
        let position = placed["position"].as_i64().unwrap();

        let read = app
            .get(
                &format!("/api/v1/orders/{order_id}?min_position={position}"),
                Some(&alice),
            )
            .await;
        assert_eq!(read.status(), 200, "round {round}");
        let header: i64 = read.headers()["x-fulcrum-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            header >= position,
            "X-Fulcrum-Position {header} < {position}"
        );
        let order: Value = read.json().await.unwrap();
        assert_eq!(order["order_id"], order_id);
        assert_eq!(order["status"], "placed");
        assert_eq!(order["total"], 2500);
        assert_eq!(order["customer_id"], "alice");
    }

    // The catalogue and the stock arrived through Kafka as well.
    let received = app
        .post(
            "/api/v1/inventory/SKU-RYW/receipts",
            Some(&token("op", Role::Operator)),
            &json!({"quantity": 5}),
        )
        .await;
    assert_eq!(received.status(), 201);
    let position = received.json::<Value>().await.unwrap()["position"]
        .as_i64()
        .unwrap();
    let stock: Value = app
        .get(
            &format!("/api/v1/inventory/SKU-RYW?min_position={position}"),
            Some(&alice),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["on_hand"], 15);
    assert_eq!(stock["reserved"], 0);
    let products: Value = app
        .get("/api/v1/products?min_position=1", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(products["items"][0]["sku"], "SKU-RYW");
    assert_eq!(products["items"][0]["unit_price"], 1250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_between_its_database_commit_and_its_offset_commit_double_counts_nothing(
) {
    let app = TestApp::spawn().await;
    let store = app.state.store.clone();
    app.given_product("SKU-CRASH", 400, 1000).await;
    let alice = token("alice", Role::Customer);
    // 30 orders: 20 confirmed, 5 of those cancelled again (sales subtracts
    // them), 5 cancelled before confirmation (never counted).
    let mut ids = Vec::new();
    for _ in 0..30 {
        let placed = app
            .post("/api/v1/orders", Some(&alice), &order_body("SKU-CRASH", 3))
            .await;
        assert_eq!(placed.status(), 202);
        let placed: Value = placed.json().await.unwrap();
        ids.push(placed["order_id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..20] {
        order_command(&app, id, OrderCommand::ConfirmOrder).await;
    }
    for id in ids[..5].iter().chain(&ids[25..]) {
        order_command(
            &app,
            id,
            OrderCommand::CancelOrder {
                reason: CancelReason::CustomerCancelled,
            },
        )
        .await;
    }

    let mut pipeline = Pipeline::start(&store);
    let mut first = Vec::new();
    for projection in [Projection::Orders, Projection::Sales] {
        let probe = Arc::new(ProjectorProbe::default());
        probe.crash_after_batches.store(1, Ordering::Relaxed);
        first.push((
            probe.clone(),
            pipeline.projector(&store, projection, OnError::Halt, probe),
        ));
    }
    for (probe, handle) in first {
        let ended = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ended, Err(ProjectorError::Crashed)), "{ended:?}");
        assert!(probe.applied.get() > 0, "the first batch applied nothing");
    }

    // Restarted: the same consumer group re-reads from its last committed
    // offset, so at least the crashed batch comes again.
    let mut second = Vec::new();
    for projection in [Projection::Orders, Projection::Sales] {
        let probe = Arc::new(ProjectorProbe::default());
        second.push(probe.clone());
        pipeline.keep(pipeline.projector(&store, projection, OnError::Halt, probe));
    }
    // The first batch may have held every event, so the read models can be
    // caught up before the restarted projectors receive anything: wait for
    // the redelivery itself.
    for probe in &second {
        eventually(
            Duration::from_secs(60),
            "the crashed batch to be redelivered",
            || {
                let redelivered = probe.duplicates.get() > 0;
                async move { redelivered }
            },
        )
        .await;
    }
    caught_up(&store, Projection::Orders).await;
    caught_up(&store, Projection::Sales).await;

    for projection in [Projection::Orders, Projection::Sales] {
        assert_eq!(
            dump(&store, projection, &projection.live_schema()).await,
            clean_fold(&store, projection).await,
            "the live {projection} read model differs from a clean fold"
        );
    }
    // And by hand: 15 orders of 3 × 400 still count.
    let operator = token("op", Role::Operator);
    let sales: Value = app
        .get("/api/v1/stats/sales", Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    let days = sales["days"].as_array().unwrap();
    let orders: i64 = days.iter().map(|d| d["orders"].as_i64().unwrap()).sum();
    let revenue: i64 = days.iter().map(|d| d["revenue"].as_i64().unwrap()).sum();
    assert_eq!((orders, revenue), (15, 15 * 1200));
}

/// Appends an `OrderPlaced` whose payload no projection can decode.
async fn append_poison(store: &EventStore) -> Uuid {
    let order_id = Uuid::new_v4();
    store
        .append(
            &format!("order-{order_id}"),
            ExpectedVersion::NoStream,
            &[NewEvent::new("OrderPlaced", 1, json!({"nonsense": true}))],
            &json!({}),
        )
        .await
        .unwrap();
    order_id
}

async fn admin_item(app: &TestApp, name: &str) -> Value {
    let admin = token("root", Role::Admin);
    let list = app.get("/api/v1/admin/projections", Some(&admin)).await;
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_then_halts_or_is_skipped_as_configured() {
    let app = TestApp::spawn().await;
    let store = app.state.store.clone();
    app.given_product("SKU-POISON", 100, 100).await;
    let alice = token("alice", Role::Customer);
    let before = app
        .post("/api/v1/orders", Some(&alice), &order_body("SKU-POISON", 1))
        .await;
    assert_eq!(before.status(), 202);
    let poison = append_poison(&store).await;
    let after = app
        .post("/api/v1/orders", Some(&alice), &order_body("SKU-POISON", 1))
        .await;
    let after: Value = after.json().await.unwrap();
    let after_position = after["position"].as_i64().unwrap();
    // A later event of the poisoned stream: same key, so the same partition,
    // after the poison. (The order placed above may sit in another
    // partition and be applied before the poison is reached.)
    let later = store
        .append(
            &format!("order-{poison}"),
            ExpectedVersion::Exact(1),
            &[NewEvent::new(
                "OrderConfirmed",
                1,
                json!({"order_id": poison}),
            )],
            &json!({}),
        )
        .await
        .unwrap();

    // Halt (the default): dead-lettered, counted, status halted, and the
    // stream's later event is not applied.
    let mut pipeline = Pipeline::start(&store);
    let halting = Arc::new(ProjectorProbe::default());
    let halted = pipeline.projector(&store, Projection::Orders, OnError::Halt, halting.clone());
    eventually(
        Duration::from_secs(60),
        "the orders projection to halt",
        || async { admin_item(&app, "orders").await["status"] == "halted" },
    )
    .await;
    let item = admin_item(&app, "orders").await;
    assert_eq!(item["dead_letters"], 1);
    assert!(item["lag"].as_i64().unwrap() >= 2, "{item}");
    assert!(
        item["last_error"]
            .as_str()
            .unwrap()
            .contains(&poison.to_string()),
        "{item}"
    );
    let letters = projections::status::dead_letters(store.pool(), Projection::Orders)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stream_id, format!("order-{poison}"));
    assert_eq!(letters[0].event_type, "OrderPlaced");
    // The admin list of them, over HTTP.
    let operator = token("op", Role::Operator);
    let listed = app
        .get(
            "/api/v1/admin/projections/orders/dead-letters",
            Some(&operator),
        )
        .await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["total"], 1);
    let letter = &listed["items"][0];
    assert_eq!(letter["stream_id"], format!("order-{poison}"));
    assert_eq!(letter["version"], 1);
    assert_eq!(letter["event_type"], "OrderPlaced");
    assert!(
        letter["error"].as_str().unwrap().contains("decoded"),
        "{letter}"
    );
    assert!(letter["recorded_at"].is_string(), "{letter}");
    for (path, who, status) in [
        ("/api/v1/admin/projections/orders/dead-letters", &alice, 403),
        (
            "/api/v1/admin/projections/nope/dead-letters",
            &operator,
            404,
        ),
        (
            "/api/v1/admin/projections/orders/dead-letters?limit=0",
            &operator,
            422,
        ),
    ] {
        problem(app.get(path, Some(who)).await, status).await;
    }
    let halted_pool = store.pool().clone();
    assert!(
        !projections::has_position(
            &halted_pool,
            Projection::Orders,
            "rm_orders",
            later.position
        )
        .await
        .unwrap(),
        "a halted projection applied an event after the poison"
    );
    halted.abort();

    // Skip: restarted with skip, it records nothing twice, moves past the
    // poison (and the stream's later event, which cannot apply to an order
    // the read model never saw placed: a second dead letter) and applies
    // the rest.
    let skipping = Arc::new(ProjectorProbe::default());
    pipeline.keep(pipeline.projector(&store, Projection::Orders, OnError::Skip, skipping.clone()));
    caught_up(&store, Projection::Orders).await;
    let item = admin_item(&app, "orders").await;
    assert_eq!(item["status"], "running");
    assert_eq!(
        item["dead_letters"], 2,
        "the poison and the stream's later event, each counted once"
    );
    // The order placed after the poison reads back; the poisoned one is absent.
    let order_id = after["order_id"].as_str().unwrap();
    let read_back = || async {
        let read = app
            .get(
                &format!("/api/v1/orders/{order_id}?min_position={after_position}"),
                Some(&alice),
            )
            .await;
        assert_eq!(read.status(), 200);
        let missing = app
            .get(
                &format!("/api/v1/orders/{poison}"),
                Some(&token("op", Role::Operator)),
            )
            .await;
        problem(missing, 404).await;
    };
    read_back().await;

    // A rebuild meets the same events. Halting, it fails on the poison and
    // the live tables stay; skipping, it passes over what the projector
    // dead-lettered, as the projector did, and swaps in.
    let failed = Rebuild::start(&store, Projection::Orders)
        .await
        .unwrap()
        .on_error(OnError::Halt)
        .run(|_| {})
        .await;
    assert!(failed.is_err(), "a halting rebuild applied the poison");
    let rebuilt = Rebuild::start(&store, Projection::Orders)
        .await
        .unwrap()
        .on_error(OnError::Skip)
        .run(|_| {})
        .await
        .unwrap();
    assert!(rebuilt.checkpoint.position >= later.position);
    read_back().await;
    let item = admin_item(&app, "orders").await;
    assert_eq!(item["status"], "running");
    assert_eq!(
        item["dead_letters"], 2,
        "the rebuild dead-lettered nothing again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_over_http_while_orders_arrive_keeps_answering_and_ends_equal_to_a_clean_fold() {
    let app = TestApp::spawn().await;
    let store = app.state.store.clone();
    let mut pipeline = Pipeline::start(&store);
    for projection in Projection::ALL {
        pipeline.keep(pipeline.projector(&store, projection, OnError::Halt, Arc::default()));
    }
    app.given_product("SKU-REBUILD", 300, 100_000).await;
    let alice = token("alice", Role::Customer);
    for _ in 0..50 {
        let placed = app
            .post(
                "/api/v1/orders",
                Some(&alice),
                &order_body("SKU-REBUILD", 1),
            )
            .await;
        assert_eq!(placed.status(), 202);
    }
    caught_up(&store, Projection::Orders).await;

    let admin = token("root", Role::Admin);
    let writer = {
        let base = app.base.clone();
        let client = app.client.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                let placed = client
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(&alice)
                    .json(&order_body("SKU-REBUILD", 1))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(placed.status(), 202);
            }
        })
    };
    for name in ["orders", "sales", "inventory", "catalog"] {
        let started = app
            .post(
                &format!("/api/v1/admin/projections/{name}/rebuild"),
                Some(&admin),
                &json!({}),
            )
            .await;
        assert_eq!(started.status(), 202);
        let started: Value = started.json().await.unwrap();
        assert_eq!(started, json!({"name": name, "status": "rebuilding"}));
        // Queries answer throughout.
        let list = app.get("/api/v1/orders?limit=5", Some(&alice)).await;
        assert_eq!(list.status(), 200);
    }
    for name in ["orders", "sales", "inventory", "catalog"] {
        eventually(Duration::from_secs(60), "the rebuild to finish", || async {
            let list = app.get("/api/v1/orders?limit=5", Some(&alice)).await;
            assert_eq!(list.status(), 200);
            admin_item(&app, name).await["status"] == "running"
        })
        .await;
    }
    writer.await.unwrap();
    for projection in Projection::ALL {
        caught_up(&store, projection).await;
        assert_eq!(
            dump(&store, projection, &projection.live_schema()).await,
            clean_fold(&store, projection).await,
            "the {projection} read model differs from a clean fold after the rebuild"
        );
    }
    let all: Value = app
        .get("/api/v1/orders?limit=500", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 110);

    // Unknown projections and non-admins are refused.
    problem(
        app.post(
            "/api/v1/admin/projections/nope/rebuild",
            Some(&admin),
            &json!({}),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post(
            "/api/v1/admin/projections/orders/rebuild",
            Some(&token("op", Role::Operator)),
            &json!({}),
        )
        .await,
        403,
    )
    .await;
}

/// Every message of `topic` (all partitions, from the beginning) whose key
/// is `key`, until `count` arrived; in arrival order.
async fn messages_for(topic: &str, key: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}.test-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The relay creates the topic at start; wait until it has partitions.
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
    let mut found = Vec::new();
    while found.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages for {key}", found.len()))
            .unwrap();
        if message.key() == Some(key.as_bytes()) {
            found.push(message.detach());
        }
    }
    found
}

fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commands_events_reach_their_topic_keyed_by_stream_in_order_with_the_requests_headers() {
    let app = TestApp::spawn().await;
    let store = app.state.store.clone();
    let pipeline = Pipeline::start(&store);
    app.given_product("SKU-KAFKA", 100, 10).await;
    let alice = token("alice", Role::Customer);

    // Given an order placed and then cancelled, each request with its own
    // correlation id,
    let send = |path: String, body: Value, correlation: &'static str| {
        let request = app
            .client
            .post(format!("{}{path}", app.base))
            .bearer_auth(&alice)
            .header("x-correlation-id", correlation)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let placed = send(
        "/api/v1/orders".into(),
        order_body("SKU-KAFKA", 2),
        "kafka-place-1",
    )
    .await;
    assert_eq!(placed.status(), 202);
    let placed: Value = placed.json().await.unwrap();
    let order_id = placed["order_id"].as_str().unwrap().to_owned();
    let cancelled = send(
        format!("/api/v1/orders/{order_id}/cancel"),
        json!({}),
        "kafka-cancel-1",
    )
    .await;
    assert_eq!(cancelled.status(), 202);

    // when the relay publishes them,
    let stream_id = format!("order-{order_id}");
    let topic = eventstore::relay::topic_for(&pipeline.prefix, "order");
    let messages = messages_for(&topic, &stream_id, 2).await;

    // then an independent consumer sees both on the order topic, keyed by
    // the stream, in version order, with the headers of what the store holds.
    let stored = app.audit_events().await;
    let stored: Vec<&Value> = stored
        .iter()
        .filter(|e| e["stream_id"] == stream_id.as_str())
        .collect();
    assert_eq!(stored.len(), 2);
    for ((message, event), (version, event_type, correlation)) in
        messages.iter().zip(&stored).zip([
            (1, "OrderPlaced", "kafka-place-1"),
            (2, "OrderCancelled", "kafka-cancel-1"),
        ])
    {
        use rdkafka::message::Message;
        assert_eq!(message.topic(), topic);
        assert_eq!(header(message, "event_type").as_deref(), Some(event_type));
        assert_eq!(
            header(message, "stream_version").as_deref(),
            Some(version.to_string().as_str())
        );
        assert_eq!(
            header(message, "global_position"),
            Some(event["global_position"].to_string())
        );
        assert_eq!(
            header(message, "event_id").as_deref(),
            event["event_id"].as_str()
        );
        assert_eq!(header(message, "schema_version").as_deref(), Some("1"));
        assert_eq!(
            header(message, "correlation_id").as_deref(),
            Some(correlation)
        );
        assert_eq!(
            header(message, "causation_id").as_deref(),
            event["metadata"]["causation_id"].as_str()
        );
        assert!(header(message, "causation_id").is_some());
        let envelope: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(envelope["event_id"], event["event_id"]);
        assert_eq!(envelope["data"], event["data"]);
        assert_eq!(envelope["version"], version);
    }
    drop(pipeline);
}
