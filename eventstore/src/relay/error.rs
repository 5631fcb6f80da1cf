//! Why a relay stops.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::StoreError;

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
