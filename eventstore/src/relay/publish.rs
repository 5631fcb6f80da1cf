//! The relay's producing side: the idempotent producer and how a batch is
//! handed to it and acknowledged.

use std::collections::{HashMap, VecDeque};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};

use super::outbox::Outgoing;
use super::{Relay, RelayConfig, RelayError};
use crate::kafka::headers;

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
