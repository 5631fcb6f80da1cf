//! A consumer-group member that reads relay messages in batches and commits
//! offsets by hand, after the caller has handled a batch.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::topics::{self, TopicError};
use super::Backoff;

/// The default `session.timeout.ms`: how fast a dead member is noticed.
/// Short, because Tansu hands a new group its first message much sooner
/// with it (DESIGN.md, "Kafka conventions").
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 6000;

/// The default `max.poll.interval.ms`.
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u32 = 7000;

/// The default `fetch.wait.max.ms`: low, for produce-to-consume latency.
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 10;

/// The pause after a receive error before receiving again: only keeps a
/// burst of errors from spinning (librdkafka does the retrying).
pub const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// librdkafka's `topic.metadata.refresh.interval.ms` for consumers. A
/// group joins only the subscribed topics its metadata shows; after a
/// broker came back without its data, a topic created again was noticed
/// only at the next refresh (with 5 s, the read models caught up about
/// 10 s after the broker's return). One small metadata request a second
/// per consumer is cheap.
pub const METADATA_REFRESH_MS: u32 = 1000;

/// How long one topic-creation request may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);

/// How a consumer reaches Kafka.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic prefix (`<prefix>.<aggregate>.events`); also prefixes group ids.
    pub topic_prefix: String,
    /// Partitions of topics a consumer creates when they are missing.
    pub partitions: i32,
    /// Replication factor of topics a consumer creates.
    pub replication: i32,
    /// `session.timeout.ms`: how fast a dead member is noticed.
    pub session_timeout_ms: u32,
    /// `max.poll.interval.ms`.
    pub max_poll_interval_ms: u32,
    /// `fetch.wait.max.ms`: the broker's longest wait before answering a fetch.
    pub fetch_wait_max_ms: u32,
    /// Further librdkafka consumer properties, applied last (they override
    /// the ones above; do not turn `enable.auto.commit` on).
    pub properties: Vec<(String, String)>,
}

impl ConsumerSettings {
    /// The defaults for the Kafka cluster at `brokers`: prefix
    /// [`topics::DEFAULT_TOPIC_PREFIX`], [`topics::DEFAULT_PARTITIONS`],
    /// [`topics::DEFAULT_REPLICATION`], [`DEFAULT_SESSION_TIMEOUT_MS`],
    /// [`DEFAULT_MAX_POLL_INTERVAL_MS`], [`DEFAULT_FETCH_WAIT_MAX_MS`] and
    /// no further properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        ConsumerSettings {
            brokers: brokers.into(),
            topic_prefix: topics::DEFAULT_TOPIC_PREFIX.to_owned(),
            partitions: topics::DEFAULT_PARTITIONS,
            replication: topics::DEFAULT_REPLICATION,
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            max_poll_interval_ms: DEFAULT_MAX_POLL_INTERVAL_MS,
            fetch_wait_max_ms: DEFAULT_FETCH_WAIT_MAX_MS,
            properties: Vec::new(),
        }
    }

    /// The topic of stream type `stream_type` under this prefix
    /// ([`topics::topic_for`]).
    pub fn topic(&self, stream_type: &str) -> String {
        topics::topic_for(&self.topic_prefix, stream_type)
    }

    /// The consumer group of `role` under this prefix: `<prefix>.<role>`,
    /// e.g. `fulcrum.projection.orders` or `fulcrum.saga`.
    pub fn group_id(&self, role: &str) -> String {
        format!("{}.{role}", self.topic_prefix)
    }

    /// The librdkafka configuration of a member of `group_id`: manual
    /// offset commits, from the earliest offset when the group has none, no
    /// partition-EOF events, topic metadata refreshed every
    /// [`METADATA_REFRESH_MS`], no topic auto-creation, then
    /// [`ConsumerSettings::properties`].
    fn client_config(&self, group_id: &str) -> ClientConfig {
        let mut client = super::client_config(&self.brokers);
        client
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            )
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set(
                "topic.metadata.refresh.interval.ms",
                METADATA_REFRESH_MS.to_string(),
            )
            // Topics are created with the configured partitions (by the
            // relay and [`EventConsumer::subscribe`]), never by a broker's
            // defaults because a consumer asked for one.
            .set("allow.auto.create.topics", "false");
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        client
    }
}

/// A member of one consumer group, subscribed to its topics, that receives
/// relay messages in batches and commits their offsets when told to.
///
/// Delivery is at least once: offsets are committed only by
/// [`EventConsumer::commit`], so whatever was received but not committed is
/// delivered again after a restart or a rebalance. Handle messages
/// idempotently, by (stream id, version).
pub struct EventConsumer {
    consumer: DropOffThread<StreamConsumer>,
    group_id: String,
    /// The subscribed topics, created again (with `partitions` and
    /// `replication`) when the broker forgot them.
    topics: Vec<String>,
    partitions: i32,
    replication: i32,
    admin: AdminClient<DefaultClientContext>,
}

impl EventConsumer {
    /// Creates the missing `topics` (with the settings' partitions and
    /// replication), then joins `group_id` and subscribes to `topics`.
    ///
    /// Transient topic-creation failures (broker unreachable, timeouts) are
    /// logged and retried with [`Backoff`] (200 ms up to 5 s) **without
    /// end**: race this future with your shutdown signal. A permanent
    /// refusal (see [`topics::create_topics`]) is returned as
    /// [`KafkaError::AdminOp`], as is a consumer configuration librdkafka
    /// refuses or a failed subscription.
    pub async fn subscribe(
        settings: &ConsumerSettings,
        group_id: &str,
        topics: &[String],
    ) -> Result<EventConsumer, KafkaError> {
        let admin: AdminClient<DefaultClientContext> =
            super::client_config(&settings.brokers).create()?;
        create_topics(&admin, settings, topics).await?;
        let consumer: StreamConsumer = settings.client_config(group_id).create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(EventConsumer {
            consumer: DropOffThread::new(consumer),
            group_id: group_id.to_owned(),
            topics: topics.to_vec(),
            partitions: settings.partitions,
            replication: settings.replication,
            admin,
        })
    }

    /// The consumer group this member belongs to.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Waits for one message, then takes whatever else is ready without
    /// waiting, up to `max` messages in all (at least one). Only returns
    /// with messages.
    ///
    /// Receive errors (broker down, a rebalance) are reports: librdkafka
    /// reconnects, rejoins and refreshes metadata by itself, so the loop
    /// goes on receiving after [`ERROR_PAUSE`] rather than backing off. A
    /// growing backoff here slept through the broker's return: after a
    /// hard restart the read models caught up more than 15 s later (issue
    /// 12, defect 8). When the broker says a subscribed topic is unknown
    /// (it came back without its data), the consumer creates its topics
    /// again at once, with the settings' partitions, rather than wait for
    /// the relay's next event of that topic. Each distinct error is logged
    /// once per call. Cancel-safe between messages.
    pub async fn recv_batch(&self, max: usize) -> Vec<OwnedMessage> {
        let mut seen: Vec<String> = Vec::new();
        let first = loop {
            match self.consumer.get().recv().await {
                Ok(message) => break message.detach(),
                Err(error) => {
                    let text = error.to_string();
                    if !seen.contains(&text) {
                        tracing::warn!(group = %self.group_id, error = %text, "receiving from kafka failed; librdkafka retries");
                        seen.push(text);
                    }
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                    {
                        self.create_missing_topics().await;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match self.consumer.get().recv().now_or_never() {
                Some(Ok(message)) => batch.push(message.detach()),
                _ => break,
            }
        }
        batch
    }

    /// Creates the subscribed topics that are missing, once (a failure is
    /// logged; the next "unknown topic" report tries again).
    async fn create_missing_topics(&self) {
        let created = topics::create_topics(
            &self.admin,
            &self.topics,
            self.partitions,
            self.replication,
            TOPIC_TIMEOUT,
        )
        .await;
        match created {
            Ok(_) => tracing::info!(group = %self.group_id, "created the subscribed topics again"),
            Err(error) => {
                tracing::warn!(group = %self.group_id, %error, "cannot create the subscribed topics")
            }
        }
    }

    /// Commits, per partition, the offset after the last of `messages`
    /// (which come in partition order, as [`EventConsumer::recv_batch`]
    /// returns them). Asynchronous: a lost commit only means a redelivery,
    /// and is logged.
    pub fn commit(&self, messages: &[OwnedMessage]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for message in messages {
            next.insert((message.topic(), message.partition()), message.offset() + 1);
        }
        if next.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(error) = list.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(%topic, partition, %error, "building the offset commit");
            }
        }
        if let Err(error) = self.consumer.get().commit(&list, CommitMode::Async) {
            tracing::warn!(group = %self.group_id, %error, "committing offsets failed; the messages will be redelivered");
        }
    }
}

/// A value dropped on a thread of its own, so that its drop never blocks
/// the dropping thread.
///
/// For consumers: closing one (its drop) can hang forever when a group
/// assignment arrives while it closes (`rd_kafka_assign` waits on a reply
/// that never comes; confluentinc/librdkafka#4884, open). Seen in CI: a
/// test's runtime, dropping a projector that had just joined its group,
/// hung for good. With the drop elsewhere, such a hang costs one parked
/// thread, not the runtime's shutdown or a stopping role.
struct DropOffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffThread<T> {
    fn new(value: T) -> Self {
        DropOffThread(Some(value))
    }

    fn get(&self) -> &T {
        match &self.0 {
            Some(value) => value,
            None => unreachable!("the value is taken only when dropped"),
        }
    }
}

impl<T: Send + 'static> Drop for DropOffThread<T> {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else { return };
        let spawned = std::thread::Builder::new()
            .name("kafka-drop".to_owned())
            .spawn(move || drop(value));
        // Without a thread (none can be spawned), the closure and the
        // value with it are dropped here, as before.
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot drop a Kafka client on a thread of its own");
        }
    }
}

/// Creates the missing `topics`, retrying transient failures without end.
async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    settings: &ConsumerSettings,
    topics: &[String],
) -> Result<(), KafkaError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let created = topics::create_topics(
            admin,
            topics,
            settings.partitions,
            settings.replication,
            TOPIC_TIMEOUT,
        )
        .await;
        match created {
            Ok(_) => return Ok(()),
            Err(TopicError::Permanent { topic, code }) => {
                tracing::error!(%topic, ?code, "the broker refuses to create a topic");
                return Err(KafkaError::AdminOp(code));
            }
            Err(TopicError::Transient(error)) => {
                let delay = backoff.next();
                tracing::warn!(%error, retry_in = ?delay, "creating topics failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// A drop that blocks its thread until told to go on (at most 5 s),
    /// then says it is done.
    struct Stuck {
        go_on: mpsc::Receiver<()>,
        done: Arc<AtomicBool>,
    }

    impl Drop for Stuck {
        fn drop(&mut self) {
            let _ = self.go_on.recv_timeout(Duration::from_secs(5));
            self.done.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_drop_that_hangs_does_not_hang_its_dropper() {
        let (tell, go_on) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        drop(super::DropOffThread::new(Stuck {
            go_on,
            done: done.clone(),
        }));
        // Back before the value's drop ended: it runs elsewhere.
        assert!(
            !done.load(Ordering::SeqCst),
            "the drop ran on the dropping thread"
        );
        tell.send(())
            .expect("the other thread still drops the value");
    }

    use super::*;

    #[test]
    fn settings_name_topics_and_groups_under_their_prefix() {
        let mut settings = ConsumerSettings::new("127.0.0.1:9092");
        assert_eq!(settings.topic("product"), "fulcrum.catalog.events");
        assert_eq!(settings.group_id("saga"), "fulcrum.saga");
        settings.topic_prefix = "t1".into();
        assert_eq!(settings.topic("order"), "t1.order.events");
        assert_eq!(
            settings.group_id("projection.orders"),
            "t1.projection.orders"
        );
    }

    #[test]
    fn further_properties_override_the_defaults() {
        let mut settings = ConsumerSettings::new("127.0.0.1:9092");
        settings.properties = vec![("fetch.wait.max.ms".into(), "500".into())];
        let config = settings.client_config("g");
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("group.id"), Some("g"));
    }
}
