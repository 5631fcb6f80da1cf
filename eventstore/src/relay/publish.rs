//! The relay's producing side: the idempotent producer and how a batch is
//! handed to it and acknowledged.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};

use super::outbox::Outgoing;
use super::{Relay, RelayConfig, RelayError};
use crate::kafka::{headers, topics};

/// How often a batch waiting for acknowledgements checks for a stall.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// Watches a batch's acknowledgements for a stall: no progress (the
/// producer's in-flight count does not fall) for a while, although the
/// broker answers.
#[derive(Debug, Default)]
struct Stall {
    /// Since when nothing progressed while the broker answered, and the
    /// in-flight count then.
    since: Option<(Instant, i32)>,
}

impl Stall {
    /// Notes a check (`in_flight` messages, whether the broker answers);
    /// true once nothing progressed for `timeout` while it answered.
    fn stalled(&mut self, in_flight: i32, broker_answers: bool, timeout: Duration) -> bool {
        match self.since {
            Some((since, before)) if broker_answers && in_flight >= before => {
                since.elapsed() >= timeout
            }
            _ => {
                self.since = broker_answers.then(|| (Instant::now(), in_flight));
                false
            }
        }
    }
}

impl Relay {
    /// Hands `batch` to the producer in order, then awaits every
    /// acknowledgement. One result per event, in batch order.
    pub(super) async fn publish<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a Outgoing>,
    ) -> Vec<Result<(), KafkaError>> {
        let total = batch.len();
        let mut deliveries = Vec::with_capacity(total);
        let mut refused = None;
        let mut topics: Vec<String> = Vec::new();
        // Enqueue synchronously, so the producer gets the events in order.
        for out in batch {
            if !topics.contains(&out.topic) {
                topics.push(out.topic.clone());
            }
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
        let started = Instant::now();
        let mut stall = Stall::default();
        let acks = loop {
            if let Ok(acks) = tokio::time::timeout(STALL_CHECK, &mut acks).await {
                break acks;
            }
            let stalled = stall.stalled(
                self.producer.in_flight_count(),
                self.broker_has(&topics).await,
                self.config.stall_timeout,
            );
            if stalled || started.elapsed() >= self.config.message_timeout {
                // Fail what is not acknowledged yet, in queue and on the
                // wire; its delivery reports then finish the wait.
                self.producer
                    .purge(PurgeConfig::default().queue().inflight());
                break acks.await;
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

    /// Whether the broker answers and has `topics`, creating the missing
    /// ones (with the configured partitions) as the relay does before a
    /// batch: after a restart that lost them, the waiting messages can
    /// then be delivered (the producer never creates topics itself).
    async fn broker_has(&self, topics: &[String]) -> bool {
        topics::create_topics(
            &self.admin,
            topics,
            self.config.partitions,
            self.config.replication,
            STALL_CHECK.max(Duration::from_secs(2)),
        )
        .await
        .is_ok()
    }

    /// Replaces the producer after a failed delivery: nothing of it is in
    /// flight any more, and after a failure its idempotence state (producer
    /// id, epoch, sequence numbers) may keep it from ever delivering again:
    /// a fatal error ends a producer, Tansu fences one whose epoch
    /// librdkafka bumped after timeouts, and after a restart that lost its
    /// state Tansu times out every message of the old producer. A new
    /// producer starts clean. Dropping one blocks for a moment, so it
    /// happens off the runtime.
    pub(super) fn replace_producer(&mut self) -> Result<(), RelayError> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, %reason, "the producer failed fatally");
        }
        let old = std::mem::replace(&mut self.producer, producer(&self.config)?);
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    /// Logs (and counts) events acknowledged after an earlier event of the
    /// same stream failed in the same attempt. `results` are those of
    /// `pending`, which starts at the first failed event.
    pub(super) fn note_out_of_order(
        &self,
        pending: &VecDeque<Outgoing>,
        results: &[Result<(), KafkaError>],
    ) {
        let mut failed_streams: HashMap<&str, u64> = HashMap::new();
        for (out, result) in pending.iter().zip(results) {
            let stream = out.event.stream_id.as_str();
            match result {
                Err(_) => {
                    failed_streams.entry(stream).or_insert(out.event.version);
                }
                Ok(()) => {
                    if let Some(failed) = failed_streams.get(stream) {
                        self.stats.count_out_of_order();
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

/// The relay's idempotent producer (`acks=all`). It never times a message
/// out itself (`message.timeout.ms=0`); the relay keeps the deadline, see
/// the [relay documentation](super).
pub(super) fn producer(config: &RelayConfig) -> Result<FutureProducer, RelayError> {
    let mut client = crate::kafka::client_config(&config.brokers);
    client
        .set("client.id", "fulcrum-relay")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.linger.as_millis().to_string())
        // Topics are created by the relay with the configured partitions,
        // never by the broker's defaults on a producer's metadata request.
        .set("allow.auto.create.topics", "false")
        // The relay keeps the deadline; see the module documentation.
        .set("message.timeout.ms", "0");
    for (key, value) in &config.producer_properties {
        client.set(key, value);
    }
    client.create().map_err(RelayError::Client)
}
