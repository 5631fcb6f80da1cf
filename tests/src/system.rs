//! The whole system for one test: the HTTP server, the relay, every
//! projector, the saga orchestrator(s), the sandbox gateway and its
//! webhook, over a fresh database and a fresh topic prefix on the shared
//! development broker (`KAFKA_BROKERS`, default 127.0.0.1:9092).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use eventstore::kafka::ConsumerSettings;
use eventstore::relay::RelayConfig;
use projections::worker::ProjectorConfig;
use projections::Projection;
use saga::gateway::{Callback, PgBooks, SandboxConfig, SandboxGateway};
use saga::{Orchestrator, SagaConfig, SagaError, SagaProbe};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{token, TestApp};

/// The payment deadline the test systems run with.
pub const PAYMENT_DEADLINE: Duration = Duration::from_millis(1500);

/// The broker the tests use.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// One orchestrator's stop switch and its task.
type Running = (watch::Sender<bool>, JoinHandle<Result<(), SagaError>>);

/// A running system; everything stops when it is dropped.
pub struct System {
    /// The HTTP server and its database.
    pub app: TestApp,
    /// This system's topic prefix.
    pub prefix: String,
    /// The payment gateway (shared by every orchestrator, as an external one would be).
    pub gateway: Arc<SandboxGateway>,
    stop: watch::Sender<bool>,
    orchestrators: Vec<Running>,
    /// The gateway's callbacks, until the first orchestrator starts: then
    /// the webhook starts too, reporting what it records to that
    /// orchestrator (as `fulcrum serve` wires its one orchestrator).
    callbacks: Option<UnboundedReceiver<Callback>>,
}

impl System {
    /// Starts everything, with `orchestrators` saga orchestrators.
    pub async fn start(orchestrators: usize) -> System {
        // Logs for a failing test: RUST_LOG=saga=debug cargo test ...
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        let app = TestApp::spawn_with_pool(40).await;
        let prefix = format!("t{}", Uuid::new_v4().simple());
        let (stop, _) = watch::channel(false);
        // The books in Postgres, as `fulcrum serve` keeps them.
        let books = Arc::new(PgBooks::new(app.state.store.pool().clone()));
        let (gateway, callbacks) = SandboxGateway::with_books(
            SandboxConfig {
                answer_delay: Duration::from_millis(5),
                // Well past the deadline, so that a loaded machine still times
                // the payment out before the approval arrives.
                late_delay: PAYMENT_DEADLINE * 3,
            },
            books,
        );
        let mut system = System {
            app,
            prefix,
            gateway,
            stop,
            orchestrators: Vec::new(),
            callbacks: Some(callbacks),
        };
        let store = system.app.state.store.clone();
        let relay = RelayConfig::new(brokers()).with_topic_prefix(&system.prefix);
        let stopped = system.stopped();
        let relay = eventstore::Relay::new(store.clone(), relay)
            .expect("relay settings")
            .with_stats(system.app.state.metrics.relay());
        tokio::spawn(relay.run(stopped));
        for projection in Projection::ALL {
            let mut config = ProjectorConfig::new(brokers());
            config.kafka = system.consumer_settings();
            let (store, stopped) = (store.clone(), system.stopped());
            let probe = system.app.state.metrics.projector(projection);
            tokio::spawn(projections::worker::run(
                store, projection, config, probe, stopped,
            ));
        }
        // As `fulcrum serve` runs the projector role: with the local feed.
        let fed = Projection::ALL
            .into_iter()
            .map(|projection| (projection, system.app.state.metrics.projector(projection)))
            .collect();
        tokio::spawn(projections::local::run(
            store.clone(),
            fed,
            system.stopped(),
        ));
        for _ in 0..orchestrators {
            // They count on the system's registry (served at `/metrics`).
            system.start_orchestrator(system.app.state.metrics.saga());
        }
        system
    }

    fn consumer_settings(&self) -> ConsumerSettings {
        let mut settings = ConsumerSettings::new(brokers());
        settings.topic_prefix.clone_from(&self.prefix);
        settings
    }

    /// The saga settings of the test systems: short deadlines and retries.
    pub fn saga_config(&self) -> SagaConfig {
        let mut config = SagaConfig::new(self.consumer_settings());
        config.payment_deadline = PAYMENT_DEADLINE;
        config.step_check = Duration::from_secs(2);
        config.max_attempts = 3;
        config.retry_min = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(200);
        config.sweep_interval = Duration::from_millis(50);
        // XX passes the saga's list and is refused by the shipment itself
        // (no carrier serves it); FR is refused by the list.
        config.ship_to = domain::shipment::ShipTo::only(["DE".into(), "XX".into()]);
        config
    }

    /// Starts one more orchestrator with `probe`; it stops when the system does.
    pub fn start_orchestrator(&mut self, probe: Arc<SagaProbe>) -> usize {
        let config = self.saga_config();
        self.start_orchestrator_with(probe, config)
    }

    /// [`System::start_orchestrator`] with settings of the test's own.
    pub fn start_orchestrator_with(&mut self, probe: Arc<SagaProbe>, config: SagaConfig) -> usize {
        let orchestrator = Orchestrator::new(
            self.app.state.sagas.clone(),
            self.app.state.commands.clone(),
            self.gateway.clone(),
            config,
            probe,
        );
        let (stop, _) = watch::channel(false);
        let mut own = stop.subscribe();
        let all = self.stopped();
        let stopped = async move {
            tokio::select! {
                _ = own.wait_for(|s| *s) => {}
                () = all => {}
            }
        };
        // Orders placed through this system's API start their sagas here.
        let _ = self.app.state.local_saga.set(orchestrator.local_facts());
        if let Some(callbacks) = self.callbacks.take() {
            tokio::spawn(saga::webhook::run(
                self.app.state.sagas.clone(),
                self.app.state.commands.clone(),
                callbacks,
                Some(orchestrator.local_facts()),
                self.stopped(),
            ));
        }
        let handle = tokio::spawn(orchestrator.run(stopped));
        self.orchestrators.push((stop, handle));
        self.orchestrators.len() - 1
    }

    /// Waits until the orchestrator counting on `probe` receives from
    /// Kafka (its consumer joined the group), after receiving one unit of
    /// `sku` (an event on a topic every orchestrator reads). A member
    /// stopped while it joins can hold the group's next rebalance back for
    /// a long time on Tansu; sagas that run in-process can end before the
    /// join, so tests that stop orchestrators wait for it first.
    pub async fn joined(&self, probe: &SagaProbe, sku: &str) {
        let receipt = format!("/api/v1/inventory/{sku}/receipts");
        assert_eq!(
            self.operator_post(&receipt, &json!({"quantity": 1})).await,
            201
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while probe.received.get() == 0 {
            assert!(
                Instant::now() < deadline,
                "the orchestrator never received from Kafka"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops orchestrator `index` and answers how it ended.
    pub async fn stop_orchestrator(&mut self, index: usize) -> Result<(), SagaError> {
        let (stop, handle) = &mut self.orchestrators[index];
        let _ = stop.send(true);
        handle.await.expect("the orchestrator panicked")
    }

    /// Waits until orchestrator `index` ends by itself (e.g. the crash hook).
    pub async fn orchestrator_ended(&mut self, index: usize) -> Result<(), SagaError> {
        let (_, handle) = &mut self.orchestrators[index];
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the orchestrator did not stop")
            .expect("the orchestrator panicked")
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Places an order of `lines` (SKU, quantity) for `customer`, paying
    /// with `token`, shipping to `country`; answers the order id.
    pub async fn place(
        &self,
        customer: &str,
        lines: &[(&str, i64)],
        payment: &str,
        country: &str,
    ) -> Uuid {
        let body = json!({
            "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
            "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": country},
            "payment_method": payment,
        });
        let response = self
            .app
            .post(
                "/api/v1/orders",
                Some(&token(customer, Role::Customer)),
                &body,
            )
            .await;
        assert_eq!(response.status(), 202, "placing an order");
        let answer: Value = response.json().await.expect("a JSON answer");
        answer["order_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an order id")
    }

    /// The saga of `order_id` as the admin route answers it (`None`: 404).
    pub async fn saga(&self, order_id: Uuid) -> Option<Value> {
        let response = self
            .app
            .get(
                &format!("/api/v1/admin/sagas/{order_id}"),
                Some(&token("olga", Role::Operator)),
            )
            .await;
        if response.status() == 404 {
            return None;
        }
        assert_eq!(response.status(), 200);
        Some(response.json().await.expect("a JSON answer"))
    }

    /// Waits until the saga of `order_id` is `status`; answers it.
    pub async fn saga_reaches(&self, order_id: Uuid, status: &str) -> Value {
        self.saga_reaches_any(order_id, &[status]).await
    }

    /// Waits until the saga of `order_id` is one of `statuses`; answers it.
    pub async fn saga_reaches_any(&self, order_id: Uuid, statuses: &[&str]) -> Value {
        let status = statuses.join(" or ");
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(saga) = self.saga(order_id).await {
                if statuses.iter().any(|s| saga["status"] == *s) {
                    return saga;
                }
                last = Some(saga);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the saga of {order_id} did not reach {status}; last seen: {last:#?}");
    }

    /// Waits until the order read model shows `order_id` as `status`; answers it.
    pub async fn order_reaches(&self, order_id: Uuid, status: &str) -> Value {
        let operator = token("olga", Role::Operator);
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let response = self
                .app
                .get(&format!("/api/v1/orders/{order_id}"), Some(&operator))
                .await;
            if response.status() == 200 {
                last = response.json().await.expect("a JSON answer");
                if last["status"] == status {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("order {order_id} did not reach {status}; last seen: {last:#}");
    }

    /// Stock of `sku` from the read model, once it equals `expected`
    /// (`on_hand`, `reserved`), else a failure naming what it was.
    pub async fn stock_reaches(&self, sku: &str, on_hand: i64, reserved: i64) {
        let operator = token("olga", Role::Operator);
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let response = self
                .app
                .get(&format!("/api/v1/inventory/{sku}"), Some(&operator))
                .await;
            if response.status() == 200 {
                last = response.json().await.expect("a JSON answer");
                if last["on_hand"] == on_hand && last["reserved"] == reserved {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("stock of {sku} did not reach on_hand {on_hand}, reserved {reserved}; last seen: {last:#}");
    }

    /// Posts `body` to `path` as `operator` and answers the status.
    pub async fn operator_post(&self, path: &str, body: &Value) -> u16 {
        let operator = token("olga", Role::Operator);
        self.app
            .post(path, Some(&operator), body)
            .await
            .status()
            .as_u16()
    }

    /// Checks the invariants over the whole event store, and answers the
    /// events by stream: stock on hand is received minus committed and
    /// never negative along the way; reservations are held only by open
    /// orders; a payment is captured at most once and never after its
    /// order was cancelled; every authorisation of a cancelled order is
    /// voided or refunded; no command was applied twice.
    pub async fn check_invariants(&self) -> BTreeMap<String, Vec<Value>> {
        use crate::invariants::{
            by_stream_applying_each_command_once, check_payment, check_stock, order_statuses,
        };
        let streams = by_stream_applying_each_command_once(&self.app.audit_events().await);
        let order_status = order_statuses(&streams);
        for (stream, events) in &streams {
            if stream.starts_with("inventory-") {
                check_stock(stream, events, &order_status);
            }
            if let Some(order) = stream.strip_prefix("payment-") {
                check_payment(stream, events, &streams, order_status.get(order), order);
            }
        }
        streams
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
