//! Topic names, their defaults, and the one way topics are created.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The default topic prefix (and consumer group prefix).
pub const DEFAULT_TOPIC_PREFIX: &str = "fulcrum";

/// The default number of partitions of a topic Fulcrum creates.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// The default replication factor of a topic Fulcrum creates.
pub const DEFAULT_REPLICATION: i32 = 1;

/// The aggregates whose topics the relay creates at start. Topics for other
/// stream types are created when their first event is relayed.
pub const AGGREGATES: [&str; 6] = [
    "order",
    "payment",
    "inventory",
    "shipment",
    "catalog",
    "saga",
];

/// The topic that events of streams of type `stream_type` go to:
/// `<prefix>.<aggregate>.events`, where the aggregate is the stream type,
/// except that `product` streams go to the `catalog` topic.
///
/// ```
/// use eventstore::kafka::topics::topic_for;
/// assert_eq!(topic_for("fulcrum", "order"), "fulcrum.order.events");
/// assert_eq!(topic_for("fulcrum", "product"), "fulcrum.catalog.events");
/// ```
pub fn topic_for(prefix: &str, stream_type: &str) -> String {
    let aggregate = match stream_type {
        "product" => "catalog",
        other => other,
    };
    format!("{prefix}.{aggregate}.events")
}

/// Whether Kafka accepts `topic` as a topic name: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why [`create_topics`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Worth trying again: the broker is unreachable, timed out, or answered
    /// with an error that may go away (e.g. no controller yet).
    #[error("creating topics failed (transient): {0}")]
    Transient(#[source] KafkaError),
    /// The broker refused a topic for a reason retrying cannot fix (e.g. a
    /// replication factor larger than the cluster, an invalid name, no
    /// authorization).
    #[error("cannot create topic {topic}: {code}")]
    Permanent {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

/// Creates `topics` with `partitions` and `replication`; a topic that
/// already exists is fine. `timeout` bounds the request and the operation.
///
/// Returns the topics that were created or already existed (all of them).
/// A permanent refusal of any topic is [`TopicError::Permanent`] (the first
/// one); otherwise any other failure is [`TopicError::Transient`]. Topics
/// that were created before an error stay created: calling again is safe.
#[tracing::instrument(skip(admin), level = "debug")]
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<Vec<String>, TopicError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(TopicError::Transient)?;
    let mut ready = Vec::with_capacity(results.len());
    let mut transient = None;
    for result in results {
        match result {
            Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "topic ready");
                ready.push(topic);
            }
            Err((topic, code)) if is_permanent(code) => {
                return Err(TopicError::Permanent { topic, code });
            }
            Err((_, code)) => transient = Some(KafkaError::AdminOp(code)),
        }
    }
    match transient {
        Some(error) => Err(TopicError::Transient(error)),
        None => Ok(ready),
    }
}

/// Whether the broker's answer `code` to a topic creation will not change
/// by asking again.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidReplicaAssignment
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_aggregate_and_products_go_to_catalog() {
        assert_eq!(topic_for("fulcrum", "order"), "fulcrum.order.events");
        assert_eq!(topic_for("p", "product"), "p.catalog.events");
        assert_eq!(topic_for("p", "inventory"), "p.inventory.events");
        assert!(is_valid_topic("fulcrum.saga.events"));
        assert!(!is_valid_topic("fulcrum.my stream.events"));
        assert!(!is_valid_topic(".."));
    }

    #[test]
    fn a_refusal_retrying_cannot_fix_is_permanent() {
        assert!(is_permanent(RDKafkaErrorCode::InvalidReplicationFactor));
        assert!(!is_permanent(RDKafkaErrorCode::RequestTimedOut));
        assert!(!is_permanent(RDKafkaErrorCode::NotController));
    }
}
