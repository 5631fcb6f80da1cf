//! How the orchestrator consumes, times and retries.

use std::time::Duration;

use domain::saga::Timings;
use domain::shipment::ShipTo;
use domain::StreamKind;
use eventstore::kafka::ConsumerSettings;

/// Settings of the saga orchestrator.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// How it reaches Kafka; its consumer group is `<prefix>.saga`.
    pub kafka: ConsumerSettings,
    /// The payment step's deadline (`FULCRUM_PAYMENT_DEADLINE_MS`, default
    /// 30 s); an unanswered payment is then checked with the gateway and,
    /// if still unanswered, given up (`payment_timeout`).
    pub payment_deadline: Duration,
    /// How long any other step waits for its answer before its (idempotent)
    /// command is sent again (default 10 s).
    pub step_check: Duration,
    /// Consecutive failures of one step before the saga is stuck (default 5).
    pub max_attempts: u32,
    /// First pause before retrying a failed step (default 200 ms); it grows
    /// exponentially, with jitter, up to `retry_max`.
    pub retry_min: Duration,
    /// Longest pause before retrying a failed step (default 10 s).
    pub retry_max: Duration,
    /// How often the timer looks for sagas with a due deadline or retry
    /// (default 250 ms).
    pub sweep_interval: Duration,
    /// Where the business ships; a shipment elsewhere is rejected
    /// (`shipment_rejected`). The default: every country but `XX`, which
    /// no carrier serves.
    pub ship_to: ShipTo,
    /// Messages received per batch (default 256).
    pub batch_size: usize,
    /// Sagas worked on at once (default 64); one saga's messages are
    /// handled in order.
    pub concurrency: usize,
}

impl SagaConfig {
    /// The defaults, consuming through `kafka`.
    pub fn new(kafka: ConsumerSettings) -> Self {
        SagaConfig {
            kafka,
            payment_deadline: Duration::from_secs(30),
            step_check: Duration::from_secs(10),
            max_attempts: 5,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            sweep_interval: Duration::from_millis(250),
            ship_to: ShipTo::default(),
            batch_size: 256,
            concurrency: 64,
        }
    }

    /// The consumer group: `<prefix>.saga`.
    pub fn group_id(&self) -> String {
        self.kafka.group_id("saga")
    }

    /// The topics the orchestrator reads: order, inventory, payment, shipment.
    pub fn topics(&self) -> Vec<String> {
        [
            StreamKind::Order,
            StreamKind::Inventory,
            StreamKind::Payment,
            StreamKind::Shipment,
        ]
        .iter()
        .map(|t| self.kafka.topic(t.as_str()))
        .collect()
    }

    /// The step deadlines as the domain takes them.
    pub fn timings(&self) -> Timings {
        Timings {
            payment_deadline: to_chrono(self.payment_deadline),
            step_check: to_chrono(self.step_check),
        }
    }
}

/// `duration` as a span of time the domain takes (saturating).
pub(crate) fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
