//! What a relay connects to, how it names, batches and retries.

use std::time::Duration;

use super::RelayError;
use crate::kafka::topics::{
    is_valid_topic, topic_for, AGGREGATES, DEFAULT_PARTITIONS, DEFAULT_REPLICATION,
    DEFAULT_TOPIC_PREFIX,
};
#[cfg(doc)]
use crate::kafka::Backoff;

/// The default checkpoint name of the relay.
pub const DEFAULT_CHECKPOINT_NAME: &str = "relay";

/// The default least time between two saves of the relay's checkpoint.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

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
    /// the acknowledged prefix checkpointed (default 500).
    pub batch_size: usize,
    /// How long the relay waits for a batch's acknowledgements before it
    /// purges the producer and sends the unacknowledged rest again (default
    /// 30 s; the producer itself never times a message out, see the
    /// [relay documentation](super)). Also bounds admin requests.
    pub message_timeout: Duration,
    /// How long a batch may go without an acknowledgement while the broker
    /// answers (and has the batch's topics, which the relay creates again
    /// when a restarted broker lost them) before the relay purges the
    /// producer and sends the rest again (default 3 s). A broker that
    /// restarted without its state never acknowledges the old producer's
    /// messages; this, not [`RelayConfig::message_timeout`], bounds how
    /// long the relay takes to deliver again after the broker is back.
    pub stall_timeout: Duration,
    /// How long the producer waits to fill a request (`linger.ms`, default
    /// 1 ms). The relay hands a whole batch over at once, so a batch needs
    /// no longer to fill one request; longer only delays every event.
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
    /// The least time between two saves of the checkpoint (default
    /// [`DEFAULT_CHECKPOINT_INTERVAL`]). Acknowledged events are
    /// checkpointed at most this late: when due after a batch, or when the
    /// relay is idle, and always when it stops. A relay that crashes (or
    /// loses its lock) re-sends what it acknowledged since the last save,
    /// as duplicates that consumers drop. Zero saves after every batch.
    pub checkpoint_interval: Duration,
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
            stall_timeout: Duration::from_secs(3),
            linger: Duration::from_millis(1),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
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

    /// The topic of every known aggregate ([`AGGREGATES`]) under this prefix.
    pub fn all_topics(&self) -> Vec<String> {
        AGGREGATES.iter().map(|a| self.topic_for(a)).collect()
    }

    pub(super) fn validate(&self) -> Result<(), RelayError> {
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
        for topic in self.all_topics() {
            if !is_valid_topic(&topic) {
                return invalid(&format!("topic prefix makes the invalid topic {topic:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
