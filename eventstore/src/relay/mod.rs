//! The relay: publishes committed events to Kafka, at least once, in order.
//!
//! The events table is the outbox. The relay tails it in gap-free global
//! order ([`EventStore::subscribe_all`]) from a durable checkpoint (see
//! [`crate::checkpoint`], name [`RelayConfig::checkpoint_name`]) and sends
//! every event with an idempotent producer to `<prefix>.<aggregate>.events`
//! ([`topic_for`]), keyed by stream id, so one stream's events stay in one
//! partition and in version order.
//!
//! Delivery works in batches: up to [`RelayConfig::batch_size`] events are
//! handed to the producer in global order, then every acknowledgement is
//! awaited, then the checkpoint of the last event of the batch's longest
//! fully acknowledged prefix is noted, and saved when the last save is
//! [`RelayConfig::checkpoint_interval`] old (or the relay is idle that long,
//! or stops). The checkpoint therefore only ever moves past events the
//! broker acknowledged (with `acks=all`); a relay that crashes re-sends at
//! most an interval's worth of acknowledged events. Events after
//! the first unacknowledged one are sent again, in order, after an
//! exponential backoff with jitter ([`Backoff`], from about
//! [`RelayConfig::retry_backoff_min`] up to
//! [`RelayConfig::retry_backoff_max`]); nothing is skipped, and nothing is
//! given up on. Each re-send goes through a new producer (the old one has
//! nothing in flight by then; a failure can leave its idempotence state
//! unusable) and re-creates missing topics (a broker may have lost them).
//! Re-sending can duplicate events that were
//! acknowledged after the failed one, or whose acknowledgement was lost:
//! consumers deduplicate by (stream id, version).
//!
//! ## Why the producer never times a message out itself
//! librdkafka's own message timeout (`message.timeout.ms`) can leave a gap
//! even in an idempotent producer's log: when messages 2 and 3 of a
//! partition expire, it resets its sequence numbers, and 4 and 5 may still
//! be written, so a stream's v4 would reach Kafka before the re-sent v2.
//! So the producer retries without end (`message.timeout.ms=0`) and the
//! relay keeps the deadline ([`RelayConfig::message_timeout`]) itself: when
//! a batch is not acknowledged in time it purges the producer's queue and
//! in-flight requests. The broker writes a partition's requests only in
//! sequence order, so what reached Kafka of the batch is a prefix of it in
//! every partition, and the re-send follows that prefix: duplicates, never
//! a later version before an earlier one.
//!
//! A batch is also purged sooner, once it is stalled: the broker answers
//! (and has the batch's topics, which the relay creates again meanwhile)
//! but nothing was acknowledged for [`RelayConfig::stall_timeout`]. That
//! is a broker that restarted without the producer's state: it never
//! acknowledges the old producer, so the relay delivers again a few
//! seconds after the broker is back rather than after the message timeout.
//! No client of Fulcrum creates topics implicitly
//! (`allow.auto.create.topics=false`): the relay creates them with the
//! configured partitions.
//!
//! ## The message
//! (See [`crate::kafka`]: [`envelope`] and [`headers`].)
//! - key: the stream id;
//! - value: the JSON envelope, [`RecordedEvent`] serialized: `event_id`,
//!   `stream_id`, `stream_type`, `version`, `global_position`, `event_type`,
//!   `schema_version`, `data`, `metadata`, `recorded_at`, `hash`;
//! - headers, UTF-8 text: `event_id`, `event_type`, `schema_version`,
//!   `global_position`, `stream_version`, and `correlation_id` and
//!   `causation_id` from the metadata keys of the same names. A header whose
//!   metadata key is absent or JSON `null` is **omitted** (never sent empty);
//!   a string is sent as is, any other JSON value as its JSON text.
//!
//! ## Observing it
//! [`Relay::stats`] counts acknowledged messages, delivery errors and retries
//! and holds the last saved checkpoint; the same checkpoint can be read from
//! the database with [`crate::load_checkpoint`]. The relay logs with
//! `tracing` (targets under `eventstore::relay`): `info` at start, stop and on
//! recovery, `warn` for every failed delivery attempt.

mod config;
mod error;
mod outbox;
mod publish;
mod run;
mod stats;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;

#[cfg(doc)]
use crate::kafka::{envelope, headers, Backoff};
#[cfg(doc)]
use crate::model::RecordedEvent;
use crate::store::EventStore;

pub use crate::kafka::topics::{is_valid_topic, topic_for, AGGREGATES, DEFAULT_TOPIC_PREFIX};
pub use config::{RelayConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_NAME};
pub use error::RelayError;
pub use stats::{RelayLags, RelayStats};

/// Runs a relay over `store` with `config` until `shutdown` resolves.
///
/// On shutdown the batch in flight is finished first: its acknowledgements
/// are awaited (at most [`RelayConfig::message_timeout`]) and the checkpoint
/// saved. See the [module documentation](self) for the guarantees.
pub async fn run(
    store: EventStore,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    Relay::new(store, config)?.run(shutdown).await
}

/// A relay, created with its Kafka clients but not yet running. Use it
/// instead of [`run`] to keep a handle on its [`RelayStats`].
pub struct Relay {
    store: EventStore,
    config: RelayConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    stats: Arc<RelayStats>,
    topics: HashSet<String>,
}

impl Relay {
    /// Checks `config` and creates the producer and admin clients (they
    /// connect lazily: an unreachable broker is not an error here).
    pub fn new(store: EventStore, config: RelayConfig) -> Result<Self, RelayError> {
        config.validate()?;
        let producer = publish::producer(&config)?;
        let admin = crate::kafka::client_config(&config.brokers)
            .set("client.id", "fulcrum-relay-admin")
            .create()
            .map_err(RelayError::Client)?;
        Ok(Relay {
            store,
            config,
            producer,
            admin,
            stats: Arc::new(RelayStats::default()),
            topics: HashSet::new(),
        })
    }

    /// The relay's series; they stay readable after the relay stops.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Counts on `stats` (e.g. series the process registered, shared with
    /// the relay that ran before this one) instead of series of its own.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<RelayStats>) -> Self {
        self.stats = stats;
        self
    }
}

/// Sleeps for `delay`; true when `shutdown` resolved first.
async fn pause(delay: Duration, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        biased;
        () = shutdown => true,
        () = tokio::time::sleep(delay) => false,
    }
}
