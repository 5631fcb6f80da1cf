//! Typed configuration from the environment (or flags).

use std::net::SocketAddr;
use std::time::Duration;

use eventstore::kafka::{consumer, topics, ConsumerSettings};
use eventstore::relay::RelayConfig;
use projections::worker::ProjectorConfig;

/// Settings shared by every subcommand that talks to the database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// Postgres URL. The database is created if it does not exist. The local
    /// default disables TLS on loopback; a production URL keeps its own
    /// `sslmode`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fulcrum?sslmode=disable",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
}

/// Settings of `fulcrum serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "FULCRUM_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Token verification.
    #[command(flatten)]
    pub jwt: crate::auth::JwtConfig,

    /// Snapshot an aggregate every this many events (0: never).
    #[arg(long, env = "FULCRUM_SNAPSHOT_EVERY", default_value_t = 100)]
    pub snapshot_every: u64,

    /// Roles this process runs, comma-separated: api (HTTP), relay (events
    /// to Kafka), projector (read models from Kafka), saga (the order saga
    /// orchestrator), sealer (signed seals over the log). Each can run as
    /// its own process; projectors and orchestrators scale out through
    /// Kafka consumer groups; the relay and the sealer run in one process
    /// at a time, the others standing by.
    #[arg(
        long,
        env = "FULCRUM_ROLES",
        value_delimiter = ',',
        default_value = "api,relay,projector,saga,sealer"
    )]
    pub roles: Vec<Role>,

    /// Requests per second per token subject, and per client address
    /// before authentication (the burst equals it); over it is 429. 0
    /// turns rate limits off.
    #[arg(long, env = "FULCRUM_RATE_LIMIT", default_value_t = crate::ratelimit::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// Saga settings.
    #[command(flatten)]
    pub saga: SagaSettings,

    /// Seal settings.
    #[command(flatten)]
    pub seal: SealSettings,
}

/// Signed seals over the whole log (see `eventstore::seal`).
#[derive(Debug, Clone, clap::Args)]
pub struct SealSettings {
    /// The Ed25519 key that signs seals: a PKCS#8 PEM, or the path of a
    /// file holding one (`fulcrum audit keygen` makes one). Without it,
    /// `--dev` makes a key for this run only; otherwise the `sealer` role
    /// refuses to start, and `POST /api/v1/audit/seals` answers 503.
    #[arg(long, env = "FULCRUM_SEAL_KEY", hide_env_values = true)]
    pub seal_key: Option<String>,

    /// How often the sealer seals new events (milliseconds).
    #[arg(long, env = "FULCRUM_SEAL_INTERVAL_MS", default_value_t = 10_000)]
    pub seal_interval_ms: u64,
}

impl SealSettings {
    /// The configured key; an ephemeral one under `dev` when none is.
    pub fn key(&self, dev: bool) -> anyhow::Result<Option<eventstore::seal::SealKey>> {
        match &self.seal_key {
            Some(value) if !value.trim().is_empty() => {
                Ok(Some(eventstore::seal::SealKey::parse(value)?))
            }
            _ if dev => Ok(Some(eventstore::seal::SealKey::ephemeral())),
            _ => Ok(None),
        }
    }
}

/// Deadlines and retries of the order saga.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaSettings {
    /// The payment step's deadline: an authorisation unanswered this long
    /// is checked with the gateway, then given up (`payment_timeout`).
    #[arg(long, env = "FULCRUM_PAYMENT_DEADLINE_MS", default_value_t = 30_000)]
    pub payment_deadline_ms: u64,

    /// How long any other step waits for its answer before its
    /// (idempotent) command is sent again.
    #[arg(long, env = "FULCRUM_SAGA_STEP_CHECK_MS", default_value_t = 10_000)]
    pub saga_step_check_ms: u64,

    /// Consecutive failures of a step (e.g. a refund the gateway keeps
    /// refusing) before the saga is `stuck` and waits for an operator.
    #[arg(long, env = "FULCRUM_SAGA_MAX_ATTEMPTS", default_value_t = 5)]
    pub saga_max_attempts: u32,

    /// First pause before a failed step is retried; it doubles, with
    /// jitter, up to `FULCRUM_SAGA_RETRY_MAX_MS`.
    #[arg(long, env = "FULCRUM_SAGA_RETRY_MIN_MS", default_value_t = 200)]
    pub saga_retry_min_ms: u64,

    /// Longest pause before a failed step is retried.
    #[arg(long, env = "FULCRUM_SAGA_RETRY_MAX_MS", default_value_t = 10_000)]
    pub saga_retry_max_ms: u64,

    /// Countries the business ships to (ISO codes, comma-separated); a
    /// shipment elsewhere is rejected. Empty: every country but XX.
    #[arg(
        long,
        env = "FULCRUM_SHIP_TO",
        value_delimiter = ',',
        default_value = ""
    )]
    pub ship_to: Vec<String>,
}

impl SagaSettings {
    /// The orchestrator's settings, consuming through `kafka`.
    pub fn config(&self, kafka: ConsumerSettings) -> saga::SagaConfig {
        let mut config = saga::SagaConfig::new(kafka);
        config.payment_deadline = Duration::from_millis(self.payment_deadline_ms);
        config.step_check = Duration::from_millis(self.saga_step_check_ms);
        config.max_attempts = self.saga_max_attempts.max(1);
        config.retry_min = Duration::from_millis(self.saga_retry_min_ms);
        config.retry_max =
            Duration::from_millis(self.saga_retry_max_ms.max(self.saga_retry_min_ms));
        config.ship_to = domain::shipment::ShipTo::only(self.ship_to.iter().cloned());
        config
    }
}

/// A part of the system `fulcrum serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP server.
    Api,
    /// Publishes committed events to Kafka.
    Relay,
    /// Builds the read models from Kafka.
    Projector,
    /// Runs the order saga (with the sandbox payment gateway).
    Saga,
    /// Seals the log on an interval (one process at a time).
    Sealer,
}

/// Kafka settings shared by the relay and the projectors. The defaults are
/// the shared ones of [`eventstore::kafka`].
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Bootstrap servers (a local Tansu by default; see scripts/kafka.sh).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic prefix: topics are `<prefix>.<aggregate>.events`.
    #[arg(long, env = "FULCRUM_TOPIC_PREFIX", default_value = topics::DEFAULT_TOPIC_PREFIX)]
    pub topic_prefix: String,

    /// Partitions of topics the relay (or a consumer) creates.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = topics::DEFAULT_PARTITIONS)]
    pub kafka_partitions: i32,

    /// Replication factor of topics the relay (or a consumer) creates.
    #[arg(long, env = "KAFKA_REPLICATION", default_value_t = topics::DEFAULT_REPLICATION)]
    pub kafka_replication: i32,

    /// Consumer `session.timeout.ms`.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = consumer::DEFAULT_SESSION_TIMEOUT_MS)]
    pub kafka_session_timeout_ms: u32,

    /// Consumer `max.poll.interval.ms`.
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL_MS", default_value_t = consumer::DEFAULT_MAX_POLL_INTERVAL_MS)]
    pub kafka_max_poll_interval_ms: u32,

    /// The saga consumer's `fetch.wait.max.ms` (low: facts another
    /// process caused reach the orchestrator quickly).
    #[arg(long, env = "KAFKA_FETCH_WAIT_MAX_MS", default_value_t = consumer::DEFAULT_FETCH_WAIT_MAX_MS)]
    pub kafka_fetch_wait_max_ms: u32,

    /// The projectors' `fetch.wait.max.ms`. Higher than the saga's: the
    /// local feed applies this process's own writes at once, so a
    /// projector's copies of them are duplicates, and a longer wait means
    /// fewer, larger batches (and less broker CPU: Tansu answers a fetch
    /// only after its whole wait). Writes of processes without the
    /// projector role reach the read models up to this much later.
    #[arg(long, env = "KAFKA_PROJECTOR_FETCH_WAIT_MAX_MS", default_value_t = projections::worker::DEFAULT_FETCH_WAIT_MAX_MS)]
    pub kafka_projector_fetch_wait_max_ms: u32,

    /// The relay producer's `linger.ms`: how long it gathers events into
    /// one request per partition.
    #[arg(long, env = "KAFKA_RELAY_LINGER_MS", default_value_t = 1)]
    pub kafka_relay_linger_ms: u64,

    /// The least time between two saves of the relay's checkpoint; a relay
    /// that crashes re-sends (as duplicates) what it published since.
    #[arg(long, env = "KAFKA_RELAY_CHECKPOINT_INTERVAL_MS", default_value_t = relay_checkpoint_interval_ms())]
    pub kafka_relay_checkpoint_interval_ms: u64,

    /// What a projector does after dead-lettering an event it cannot apply: halt or skip.
    #[arg(long, env = "FULCRUM_PROJECTION_ON_ERROR", default_value = "halt")]
    pub projection_on_error: projections::status::OnError,
}

/// [`eventstore::relay::DEFAULT_CHECKPOINT_INTERVAL`] in milliseconds.
fn relay_checkpoint_interval_ms() -> u64 {
    u64::try_from(eventstore::relay::DEFAULT_CHECKPOINT_INTERVAL.as_millis()).unwrap_or(u64::MAX)
}

impl KafkaConfig {
    /// The relay's settings.
    pub fn relay(&self) -> RelayConfig {
        let mut config = RelayConfig::new(&self.kafka_brokers);
        config.topic_prefix.clone_from(&self.topic_prefix);
        config.partitions = self.kafka_partitions;
        config.replication = self.kafka_replication;
        config.linger = Duration::from_millis(self.kafka_relay_linger_ms);
        config.checkpoint_interval = Duration::from_millis(self.kafka_relay_checkpoint_interval_ms);
        config
    }

    /// How any consumer (the projectors, the saga) reaches Kafka.
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            brokers: self.kafka_brokers.clone(),
            topic_prefix: self.topic_prefix.clone(),
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            session_timeout_ms: self.kafka_session_timeout_ms,
            max_poll_interval_ms: self.kafka_max_poll_interval_ms,
            fetch_wait_max_ms: self.kafka_fetch_wait_max_ms,
            properties: Vec::new(),
        }
    }

    /// The projectors' settings.
    pub fn projector(&self) -> ProjectorConfig {
        ProjectorConfig {
            kafka: ConsumerSettings {
                fetch_wait_max_ms: self.kafka_projector_fetch_wait_max_ms,
                ..self.consumer()
            },
            on_error: self.projection_on_error,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Kafka {
        #[command(flatten)]
        kafka: KafkaConfig,
    }

    #[test]
    fn projectors_wait_longer_for_a_fetch_than_the_saga_by_default() {
        let kafka = Kafka::try_parse_from(["fulcrum"]).unwrap().kafka;
        assert_eq!(
            kafka.consumer().fetch_wait_max_ms,
            consumer::DEFAULT_FETCH_WAIT_MAX_MS
        );
        assert_eq!(
            kafka.projector().kafka.fetch_wait_max_ms,
            projections::worker::DEFAULT_FETCH_WAIT_MAX_MS
        );
        assert!(kafka.projector().kafka.fetch_wait_max_ms > kafka.consumer().fetch_wait_max_ms);
    }

    #[test]
    fn the_projectors_fetch_wait_is_its_own_setting() {
        let kafka = Kafka::try_parse_from([
            "fulcrum",
            "--kafka-projector-fetch-wait-max-ms",
            "250",
            "--kafka-fetch-wait-max-ms",
            "5",
        ])
        .unwrap()
        .kafka;
        assert_eq!(kafka.projector().kafka.fetch_wait_max_ms, 250);
        assert_eq!(kafka.relay().linger, Duration::from_millis(1));
        assert_eq!(kafka.consumer().fetch_wait_max_ms, 5);
        assert_eq!(
            kafka.relay().checkpoint_interval,
            eventstore::relay::DEFAULT_CHECKPOINT_INTERVAL
        );
    }
}
