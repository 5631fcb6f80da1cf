//! The relay's loop: read a batch, make sure its topics exist, publish it,
//! checkpoint the acknowledged prefix, and after a failure pause and send
//! the rest again.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;

use super::outbox::{Fill, Outbox, Outgoing};
use super::{pause, Relay, RelayError};
use crate::kafka::topics::{self, TopicError};
use crate::kafka::Backoff;
use crate::load_checkpoint;

/// How a step of the loop ended.
enum Step {
    /// Go on with the next batch.
    Next,
    /// Shut down.
    Stop,
}

impl Relay {
    /// Runs until `shutdown` resolves; see [`super::run`].
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let mut shutdown = pin!(shutdown.fuse());
        let mut backoff =
            Backoff::new(self.config.retry_backoff_min, self.config.retry_backoff_max);
        if let Step::Stop = self
            .create_startup_topics(&mut backoff, &mut shutdown)
            .await?
        {
            return Ok(());
        }
        backoff.reset();

        let name = &self.config.checkpoint_name;
        let saved = load_checkpoint(self.store.pool(), name).await?;
        self.stats.set_checkpoint(saved);
        tracing::info!(checkpoint = %saved, name = %name, prefix = %self.config.topic_prefix, "relay started");
        let mut outbox = Outbox::open(self.store.clone(), &self.config, self.stats(), saved);

        let relayed = self.relay(&mut outbox, &mut backoff, &mut shutdown).await;
        outbox.flush().await;
        relayed?;

        if let Err(error) = self.producer.flush(self.config.message_timeout) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
        tracing::info!(checkpoint = %outbox.saved, unsent = outbox.pending.len(), "relay stopped");
        Ok(())
    }

    /// Creates the topics of the known aggregates, before anything is sent,
    /// retrying transient failures until `shutdown`.
    async fn create_startup_topics(
        &mut self,
        backoff: &mut Backoff,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Step, RelayError> {
        let startup = self.config.all_topics();
        loop {
            match self.create_topics(&startup).await {
                Ok(()) => return Ok(Step::Next),
                Err(error) => {
                    if let Step::Stop = on_topic_error(error, backoff, shutdown).await? {
                        return Ok(Step::Stop);
                    }
                }
            }
        }
    }

    /// Relays batch after batch until `shutdown`; the batch in flight then
    /// is finished first.
    async fn relay(
        &mut self,
        outbox: &mut Outbox,
        backoff: &mut Backoff,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(), RelayError> {
        let mut stopping = false;
        loop {
            match outbox
                .fill(self.config.batch_size, backoff, shutdown)
                .await?
            {
                Fill::Ready => {}
                Fill::Retry => continue,
                Fill::Stop => return Ok(()),
            }
            let batch = outbox.pending.len().min(self.config.batch_size);
            if let Err(error) = self.ensure_topics(outbox.pending.range(..batch)).await {
                match on_topic_error(error, backoff, shutdown).await? {
                    Step::Next => continue,
                    Step::Stop => return Ok(()),
                }
            }
            let results = self.deliver(outbox, batch).await;
            stopping = stopping || (&mut *shutdown).now_or_never().is_some();
            let Some(delay) = self.recover(outbox, &results, backoff)? else {
                if stopping {
                    return Ok(());
                }
                continue;
            };
            if stopping || pause(delay, shutdown).await {
                return Ok(());
            }
            self.stats.count_retry();
        }
    }

    /// Publishes the first `batch` pending events, awaits every
    /// acknowledgement and checkpoints the acknowledged prefix (dropping it
    /// from `pending`; the checkpoint is saved when due,
    /// [`Outbox::acknowledged`]). One result per event of the batch.
    async fn deliver(&mut self, outbox: &mut Outbox, batch: usize) -> Vec<Result<(), KafkaError>> {
        let results = self.publish(outbox.pending.range(..batch)).await;
        let acked = results.iter().take_while(|r| r.is_ok()).count();
        let failed = results.iter().filter(|r| r.is_err()).count();
        self.stats.count_acked(batch - failed);
        for out in outbox.pending.range(..acked) {
            self.stats.note_lag(out.event.recorded_at, true);
        }
        let last = outbox.pending.drain(..acked).next_back();
        if let Some(checkpoint) = last.map(|out| out.event.checkpoint()) {
            outbox.acknowledged(checkpoint).await;
        }
        results
    }

    /// After a delivery with `results`: `None` when every event was
    /// acknowledged (the backoff starts over), else the pause before
    /// re-sending from the first unacknowledged event, with the topics
    /// forgotten (a broker restarted without its data lost them) and a new
    /// producer.
    fn recover(
        &mut self,
        outbox: &Outbox,
        results: &[Result<(), KafkaError>],
        backoff: &mut Backoff,
    ) -> Result<Option<Duration>, RelayError> {
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            if backoff.failures() > 0 {
                tracing::info!(checkpoint = %outbox.saved, "relay delivers again");
            }
            backoff.reset();
            return Ok(None);
        }
        self.stats.count_delivery_errors(failed);
        let acked = results.iter().take_while(|r| r.is_ok()).count();
        self.note_out_of_order(&outbox.pending, &results[acked..]);
        let first_error = results.iter().find_map(|r| r.as_ref().err());
        let delay = backoff.next();
        tracing::warn!(
            error = ?first_error,
            failed,
            sent = results.len(),
            checkpoint = %outbox.saved,
            retry_in = ?delay,
            "delivery failed; re-sending from the first unacknowledged event"
        );
        self.topics.clear();
        self.replace_producer()?;
        Ok(Some(delay))
    }

    /// Creates the topics of any stream type in `batch` not seen before,
    /// and with them every known aggregate's topic not seen since the last
    /// failed delivery. After a broker came back without its data, the
    /// consumers' groups then find all their topics at once: a topic that
    /// appeared only with its first event later cost a consumer a metadata
    /// refresh (up to 5 s) and a rebalance each (the saga's outage orders
    /// were confirmed 13–19 s after the broker's return).
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
        for topic in self.config.all_topics() {
            if !self.topics.contains(&topic) && !missing.contains(&topic) {
                missing.push(topic);
            }
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
}

/// Handles a failed topic creation: a permanent one stops the relay, a
/// transient one is logged and paused for (`Stop` when `shutdown` resolved
/// meanwhile).
async fn on_topic_error(
    error: TopicError,
    backoff: &mut Backoff,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Step, RelayError> {
    match error {
        TopicError::Permanent { topic, code } => Err(RelayError::CreateTopic { topic, code }),
        TopicError::Transient(error) => {
            tracing::warn!(%error, "cannot create topics yet; retrying");
            let stopped = pause(backoff.next(), shutdown).await;
            Ok(if stopped { Step::Stop } else { Step::Next })
        }
    }
}
