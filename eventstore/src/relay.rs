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
//! fully acknowledged prefix is saved. The checkpoint therefore only ever
//! moves past events the broker acknowledged (with `acks=all`). Events after
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
//! `tracing` (target `eventstore::relay`): `info` at start, stop and on
//! recovery, `warn` for every failed delivery attempt.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};

use crate::kafka::topics::{self, TopicError, DEFAULT_PARTITIONS, DEFAULT_REPLICATION};
use crate::kafka::{envelope, headers, Backoff};
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::EventStore;
use crate::subscribe::SubscribeOptions;
use crate::{load_checkpoint, save_checkpoint, StoreError};

pub use crate::kafka::topics::{is_valid_topic, topic_for, AGGREGATES, DEFAULT_TOPIC_PREFIX};

/// The default checkpoint name of the relay.
pub const DEFAULT_CHECKPOINT_NAME: &str = "relay";

/// How the relay connects, names, batches and retries.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic prefix, see [`topic_for`] (default [`DEFAULT_TOPIC_PREFIX`]).
    pub topic_prefix: String,
    /// Partitions of the topics the relay creates (default
    /// [`DEFAULT_PARTITIONS`]).
    pub partitions: i32,
    /// Replication factor of the topics the relay creates (default
    /// [`DEFAULT_REPLICATION`]).
    pub replication: i32,
    /// Name of the relay's checkpoint (default [`DEFAULT_CHECKPOINT_NAME`];
    /// use e.g. `relay.<prefix>` for several relays on one database).
    pub checkpoint_name: String,
    /// Most events sent per batch before acknowledgements are awaited and
    /// the checkpoint is saved (default 500).
    pub batch_size: usize,
    /// How long the relay waits for a batch's acknowledgements before it
    /// purges the producer and sends the unacknowledged rest again (default
    /// 30 s; the producer itself never times a message out, see the
    /// [module documentation](self)). Also bounds admin requests.
    pub message_timeout: Duration,
    /// How long the producer waits to fill a request (`linger.ms`, default 5 ms).
    pub linger: Duration,
    /// About the first pause before re-sending after a delivery error
    /// ([`Backoff`]; default 100 ms).
    pub retry_backoff_min: Duration,
    /// Longest pause between re-sends; the pause roughly doubles up to it,
    /// with jitter ([`Backoff`]; default 5 s).
    pub retry_backoff_max: Duration,
    /// Longest wait between reads of the events table when no commit
    /// wake-up arrives (default 50 ms).
    pub poll_interval: Duration,
    /// Further librdkafka producer properties, applied last (they override
    /// the ones above; do not turn idempotence off).
    pub producer_properties: Vec<(String, String)>,
}

impl RelayConfig {
    /// The defaults, for the Kafka cluster at `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        RelayConfig {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            replication: DEFAULT_REPLICATION,
            checkpoint_name: DEFAULT_CHECKPOINT_NAME.to_owned(),
            batch_size: 500,
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(5),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            producer_properties: Vec::new(),
        }
    }

    /// This configuration with topic prefix `prefix`.
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// The topic for events of stream type `stream_type` ([`topic_for`] with this prefix).
    pub fn topic_for(&self, stream_type: &str) -> String {
        topic_for(&self.topic_prefix, stream_type)
    }

    fn validate(&self) -> Result<(), RelayError> {
        let invalid = |what: &str| Err(RelayError::InvalidConfig(what.to_owned()));
        if self.brokers.trim().is_empty() {
            return invalid("brokers is empty");
        }
        if self.batch_size == 0 {
            return invalid("batch_size must be at least 1");
        }
        if self.partitions < 1 || self.replication < 1 {
            return invalid("partitions and replication must be at least 1");
        }
        if self.checkpoint_name.is_empty() {
            return invalid("checkpoint_name is empty");
        }
        if self.message_timeout < Duration::from_millis(1) {
            return invalid("message_timeout must be at least 1 ms");
        }
        for aggregate in AGGREGATES {
            let topic = self.topic_for(aggregate);
            if !is_valid_topic(&topic) {
                return invalid(&format!("topic prefix makes the invalid topic {topic:?}"));
            }
        }
        Ok(())
    }
}

/// Why the relay stopped. Broker outages and database errors while tailing
/// are not among them: the relay retries those until it is shut down.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is unusable.
    #[error("invalid relay configuration: {0}")]
    InvalidConfig(String),
    /// A Kafka client could not be created (e.g. an unknown property).
    #[error("kafka client: {0}")]
    Client(#[source] KafkaError),
    /// The broker refused to create a topic for a reason retrying cannot
    /// fix (e.g. a replication factor larger than the cluster).
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// An event's stream type makes a topic name Kafka does not accept.
    /// The relay stops rather than skip the event.
    #[error("stream {stream_id} maps to the invalid topic name {topic:?}")]
    InvalidTopic {
        /// The event's stream.
        stream_id: String,
        /// The topic name it maps to.
        topic: String,
    },
    /// The checkpoint could not be loaded at start.
    #[error("loading the relay checkpoint: {0}")]
    Store(#[from] StoreError),
    /// An event could not be serialized.
    #[error("serializing event {event_id}: {source}")]
    Serialize {
        /// The event.
        event_id: uuid::Uuid,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// Counters a running relay updates, for tests, benchmarks and health checks.
#[derive(Debug, Default)]
pub struct RelayStats {
    acked: AtomicU64,
    delivery_errors: AtomicU64,
    retries: AtomicU64,
    out_of_order: AtomicU64,
    checkpoint: Mutex<Checkpoint>,
    record_lags: AtomicBool,
    lags: Mutex<RelayLags>,
}

/// Per-event lags a relay recorded after [`RelayStats::record_lags`], each
/// measured from the event's `recorded_at` (stamped just before its append).
#[derive(Debug, Default, Clone)]
pub struct RelayLags {
    /// Until the relay took the event from its subscription.
    pub read: Vec<Duration>,
    /// Until the broker acknowledged it.
    pub acked: Vec<Duration>,
}

impl RelayStats {
    /// Messages the broker acknowledged (re-sent duplicates included).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Messages whose delivery failed (each is sent again later).
    pub fn delivery_errors(&self) -> u64 {
        self.delivery_errors.load(Ordering::Relaxed)
    }

    /// Batches that were re-sent after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Times a stream's event was acknowledged although an earlier event of
    /// the same stream in the same batch failed, so that Kafka may hold that
    /// stream's first copies out of order. The idempotent producer should
    /// keep this at 0; it is logged at `error` when it is not.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order.load(Ordering::Relaxed)
    }

    /// The last checkpoint the relay saved (or loaded at start).
    pub fn checkpoint(&self) -> Checkpoint {
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts recording per-event lags (for benchmarks: a clock read and a
    /// push per event).
    pub fn record_lags(&self) {
        self.record_lags.store(true, Ordering::Relaxed);
    }

    /// The lags recorded so far (and forgets them).
    pub fn take_lags(&self) -> RelayLags {
        std::mem::take(&mut *self.lags.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn note_lag(&self, recorded_at: chrono::DateTime<chrono::Utc>, acked: bool) {
        if !self.record_lags.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(lag) = (chrono::Utc::now() - recorded_at).to_std() {
            let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
            if acked {
                lags.acked.push(lag);
            } else {
                lags.read.push(lag);
            }
        }
    }

    fn set_checkpoint(&self, checkpoint: Checkpoint) {
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = checkpoint;
    }
}

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

/// One event on its way to Kafka.
struct Outgoing {
    event: RecordedEvent,
    topic: String,
    payload: Vec<u8>,
}

impl Relay {
    /// Checks `config` and creates the producer and admin clients (they
    /// connect lazily: an unreachable broker is not an error here).
    pub fn new(store: EventStore, config: RelayConfig) -> Result<Self, RelayError> {
        config.validate()?;
        let producer = producer(&config)?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
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

    /// The relay's counters; they stay readable after the relay stops.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves; see [`run`].
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let mut shutdown = pin!(shutdown.fuse());
        let name = self.config.checkpoint_name.clone();
        let mut backoff =
            Backoff::new(self.config.retry_backoff_min, self.config.retry_backoff_max);

        // Topics for the known aggregates, before anything is sent.
        let startup: Vec<String> = AGGREGATES
            .iter()
            .map(|a| self.config.topic_for(a))
            .collect();
        loop {
            match self.create_topics(&startup).await {
                Ok(()) => break,
                Err(TopicError::Permanent { topic, code }) => {
                    return Err(RelayError::CreateTopic { topic, code })
                }
                Err(TopicError::Transient(error)) => {
                    tracing::warn!(%error, "cannot create topics yet; retrying");
                    if pause(backoff.next(), &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
        backoff.reset();

        let mut saved = load_checkpoint(self.store.pool(), &name).await?;
        self.stats.set_checkpoint(saved);
        tracing::info!(checkpoint = %saved, name = %name, prefix = %self.config.topic_prefix, "relay started");

        let options = SubscribeOptions {
            batch_size: i64::try_from(self.config.batch_size).unwrap_or(i64::MAX),
            poll_interval: self.config.poll_interval,
        };
        // The checkpoint of the last event taken from the subscription.
        let mut read = saved;
        let mut subscription = Some(self.store.subscribe_all(read, options).boxed());
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        let mut stopping = false;

        loop {
            // Fill the batch: wait for one event when there is nothing to
            // send, then take whatever else is ready.
            if pending.is_empty() {
                let sub = match subscription.as_mut() {
                    Some(sub) => sub,
                    None => subscription.insert(self.store.subscribe_all(read, options).boxed()),
                };
                let next = tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    next = sub.next() => next,
                };
                if !self.take(next, &mut pending, &mut read, &mut subscription)? {
                    if pause(backoff.next(), &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            while pending.len() < self.config.batch_size {
                let Some(sub) = subscription.as_mut() else {
                    break;
                };
                match sub.next().now_or_never() {
                    Some(next) => {
                        if !self.take(next, &mut pending, &mut read, &mut subscription)? {
                            break;
                        }
                    }
                    None => break,
                }
            }

            // Send the batch, await every acknowledgement, checkpoint the acked prefix.
            let batch = pending.len().min(self.config.batch_size);
            if let Err(retry) = self.ensure_topics(pending.range(..batch)).await {
                match retry {
                    TopicError::Permanent { topic, code } => {
                        return Err(RelayError::CreateTopic { topic, code })
                    }
                    TopicError::Transient(error) => {
                        tracing::warn!(%error, "cannot create topics yet; retrying");
                        if pause(backoff.next(), &mut shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let results = self.publish(pending.range(..batch)).await;
            let acked = results.iter().take_while(|r| r.is_ok()).count();
            let failed = results.iter().filter(|r| r.is_err()).count();
            self.stats.acked.fetch_add(
                u64::try_from(batch - failed).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            for out in pending.range(..acked) {
                self.stats.note_lag(out.event.recorded_at, true);
            }
            if acked > 0 {
                if let Some(last) = pending.drain(..acked).next_back() {
                    let checkpoint = last.event.checkpoint();
                    match save_checkpoint(self.store.pool(), &name, checkpoint).await {
                        Ok(()) => {
                            saved = checkpoint;
                            self.stats.set_checkpoint(saved);
                        }
                        // The next batch saves a later checkpoint; until
                        // then a restart re-sends a little more.
                        Err(error) => tracing::warn!(%error, "cannot save the relay checkpoint"),
                    }
                }
            }
            if stopping || (&mut shutdown).now_or_never().is_some() {
                stopping = true;
            }
            if failed == 0 {
                if backoff.failures() > 0 {
                    tracing::info!(checkpoint = %saved, "relay delivers again");
                }
                backoff.reset();
                if stopping {
                    break;
                }
                continue;
            }

            // Some deliveries failed: re-send from the first unacknowledged event.
            self.stats
                .delivery_errors
                .fetch_add(u64::try_from(failed).unwrap_or(u64::MAX), Ordering::Relaxed);
            self.note_out_of_order(&pending, &results[acked..]);
            let first_error = results.iter().find_map(|r| r.as_ref().err());
            let delay = backoff.next();
            tracing::warn!(
                error = ?first_error,
                failed,
                sent = batch,
                checkpoint = %saved,
                retry_in = ?delay,
                "delivery failed; re-sending from the first unacknowledged event"
            );
            // The broker may have lost the topics (a broker restarted
            // without its data): make sure they exist before the re-send.
            self.topics.clear();
            // Replace the producer: nothing of it is in flight any more, and
            // after a failure its idempotence state (producer id, epoch,
            // sequence numbers) may keep it from ever delivering again: a
            // fatal error ends a producer, Tansu fences one whose epoch
            // librdkafka bumped after timeouts, and after a restart that
            // lost its state Tansu times out every message of the old
            // producer. A new producer starts clean. Dropping one blocks for
            // a moment, so it happens off the runtime.
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                tracing::error!(?code, %reason, "the producer failed fatally");
            }
            let old = std::mem::replace(&mut self.producer, producer(&self.config)?);
            tokio::task::spawn_blocking(move || drop(old));
            if stopping {
                break;
            }
            if pause(delay, &mut shutdown).await {
                break;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }

        if let Err(error) = self.producer.flush(self.config.message_timeout) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
        tracing::info!(checkpoint = %saved, unsent = pending.len(), "relay stopped");
        Ok(())
    }

    /// Takes one item from the subscription into `pending`. Returns false
    /// when the subscription failed or ended; it is then dropped, to be
    /// resumed after the last event taken.
    fn take(
        &self,
        next: Option<Result<RecordedEvent, StoreError>>,
        pending: &mut VecDeque<Outgoing>,
        read: &mut Checkpoint,
        subscription: &mut Option<impl Stream>,
    ) -> Result<bool, RelayError> {
        match next {
            Some(Ok(event)) => {
                *read = event.checkpoint();
                self.stats.note_lag(event.recorded_at, false);
                let topic = self.config.topic_for(&event.stream_type);
                if !is_valid_topic(&topic) {
                    return Err(RelayError::InvalidTopic {
                        stream_id: event.stream_id,
                        topic,
                    });
                }
                let payload = envelope::encode(&event).map_err(|source| RelayError::Serialize {
                    event_id: event.event_id,
                    source,
                })?;
                pending.push_back(Outgoing {
                    event,
                    topic,
                    payload,
                });
                Ok(true)
            }
            Some(Err(error)) => {
                tracing::warn!(%error, after = %read, "reading events failed; resubscribing");
                *subscription = None;
                Ok(false)
            }
            None => {
                *subscription = None;
                Ok(false)
            }
        }
    }

    /// Hands `batch` to the producer in order, then awaits every
    /// acknowledgement. One result per event, in batch order.
    async fn publish<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a Outgoing>,
    ) -> Vec<Result<(), KafkaError>> {
        let total = batch.len();
        let mut deliveries = Vec::with_capacity(total);
        let mut refused = None;
        // Enqueue synchronously, so the producer gets the events in order.
        for out in batch {
            let record = FutureRecord::to(&out.topic)
                .key(out.event.stream_id.as_str())
                .payload(out.payload.as_slice())
                .headers(headers::encode(&out.event));
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    // E.g. the local queue is full: this and every later
                    // event count as failed and are sent again.
                    refused = Some(error);
                    break;
                }
            }
        }
        let sent = deliveries.len();
        let mut acks = futures::future::join_all(deliveries);
        let acks = match tokio::time::timeout(self.config.message_timeout, &mut acks).await {
            Ok(acks) => acks,
            Err(_late) => {
                // Fail what is not acknowledged yet, in queue and on the
                // wire; its delivery reports then finish the wait.
                self.producer
                    .purge(PurgeConfig::default().queue().inflight());
                acks.await
            }
        };
        let mut results: Vec<Result<(), KafkaError>> = acks
            .into_iter()
            .map(|delivery| match delivery {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error),
                Err(_canceled) => Err(KafkaError::Canceled),
            })
            .collect();
        if let Some(error) = refused {
            results.extend((sent..total).map(|_| Err(error.clone())));
        }
        results
    }

    /// Creates the topics of any stream type in `batch` not seen before.
    async fn ensure_topics<'a>(
        &mut self,
        batch: impl Iterator<Item = &'a Outgoing>,
    ) -> Result<(), TopicError> {
        let mut missing: Vec<String> = Vec::new();
        for out in batch {
            if !self.topics.contains(&out.topic) && !missing.contains(&out.topic) {
                missing.push(out.topic.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.create_topics(&missing).await
    }

    /// Creates `topics` ([`topics::create_topics`]) and remembers them.
    async fn create_topics(&mut self, topics: &[String]) -> Result<(), TopicError> {
        let ready = topics::create_topics(
            &self.admin,
            topics,
            self.config.partitions,
            self.config.replication,
            self.config.message_timeout,
        )
        .await?;
        self.topics.extend(ready);
        Ok(())
    }

    /// Logs (and counts) events acknowledged after an earlier event of the
    /// same stream failed in the same attempt. `results` are those of
    /// `pending`, which starts at the first failed event.
    fn note_out_of_order(&self, pending: &VecDeque<Outgoing>, results: &[Result<(), KafkaError>]) {
        let mut failed_streams: HashMap<&str, u64> = HashMap::new();
        for (out, result) in pending.iter().zip(results) {
            let stream = out.event.stream_id.as_str();
            match result {
                Err(_) => {
                    failed_streams.entry(stream).or_insert(out.event.version);
                }
                Ok(()) => {
                    if let Some(failed) = failed_streams.get(stream) {
                        self.stats.out_of_order.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            stream,
                            failed_version = failed,
                            acked_version = out.event.version,
                            "a later event of the stream was acknowledged after an earlier one failed"
                        );
                    }
                }
            }
        }
    }
}

fn producer(config: &RelayConfig) -> Result<FutureProducer, RelayError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "fulcrum-relay")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.linger.as_millis().to_string())
        // The relay keeps the deadline; see the module documentation.
        .set("message.timeout.ms", "0");
    for (key, value) in &config.producer_properties {
        client.set(key, value);
    }
    client.create().map_err(RelayError::Client)
}

/// Sleeps for `delay`; true when `shutdown` resolved first.
async fn pause(delay: Duration, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        biased;
        () = shutdown => true,
        () = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_config_that_cannot_work_is_refused() {
        let mut config = RelayConfig::new("127.0.0.1:9092");
        assert!(config.validate().is_ok());
        config.batch_size = 0;
        assert!(config.validate().is_err());
        let config = RelayConfig::new("127.0.0.1:9092").with_topic_prefix("bad prefix");
        assert!(config.validate().is_err());
    }
}
