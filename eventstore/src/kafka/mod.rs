//! The one home of Fulcrum's Kafka conventions, used by the relay (which
//! produces), the projectors and the saga (which consume). Nothing else
//! open-codes them.
//!
//! - [`topics`]: one topic per aggregate, `<prefix>.<aggregate>.events`
//!   ([`topics::topic_for`]), the default prefix, partitions and
//!   replication, and [`topics::create_topics`] with its one error policy;
//! - [`headers`]: the header names and how an event becomes headers;
//! - [`envelope`]: the message value, the JSON event envelope, both ways;
//! - [`consumer`]: [`EventConsumer`], a consumer-group member with batch
//!   receive and manual commits, configured by [`ConsumerSettings`];
//! - [`backoff`]: [`Backoff`], exponential backoff with jitter.
//!
//! A message's key is its event's stream id, so one stream's events share
//! a partition and keep their order. Delivery is at least once: consumers
//! deduplicate by (stream id, version).

pub mod backoff;
pub mod consumer;
pub mod envelope;
pub mod headers;
pub mod topics;

pub use backoff::Backoff;
pub use consumer::{ConsumerSettings, EventConsumer};

/// librdkafka's `reconnect.backoff.max.ms` for every Fulcrum client: 1 s,
/// not librdkafka's 10 s. While a broker is away the reconnect backoff
/// doubles; with the default, a client could wait several seconds more
/// after the broker was back before trying again (issue 12, defect 8).
pub const RECONNECT_BACKOFF_MAX_MS: u32 = 1000;

/// The base configuration of every Fulcrum Kafka client (producer,
/// consumer, admin): `bootstrap.servers` and [`RECONNECT_BACKOFF_MAX_MS`].
pub fn client_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", brokers).set(
        "reconnect.backoff.max.ms",
        RECONNECT_BACKOFF_MAX_MS.to_string(),
    );
    client
}
