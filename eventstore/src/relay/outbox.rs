//! The relay's reading side: its place in the outbox (the events table)
//! and the events read but not yet acknowledged.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{pause, RelayConfig, RelayError, RelayStats};
use crate::kafka::topics::{is_valid_topic, topic_for};
use crate::kafka::{envelope, Backoff};
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::EventStore;
use crate::subscribe::SubscribeOptions;
use crate::{save_checkpoint, StoreError};

/// One event on its way to Kafka.
pub(super) struct Outgoing {
    /// The event.
    pub(super) event: RecordedEvent,
    /// Its topic.
    pub(super) topic: String,
    /// Its envelope.
    pub(super) payload: Vec<u8>,
}

/// What [`Outbox::fill`] ended with.
pub(super) enum Fill {
    /// Events are pending.
    Ready,
    /// Reading failed and was paused for; try again.
    Retry,
    /// Shutdown resolved while waiting.
    Stop,
}

/// The relay's place in the outbox.
pub(super) struct Outbox {
    store: EventStore,
    options: SubscribeOptions,
    prefix: String,
    /// The checkpoint's name.
    name: String,
    stats: Arc<RelayStats>,
    /// The checkpoint of the last event taken from the subscription.
    read: Checkpoint,
    /// The last checkpoint saved.
    pub(super) saved: Checkpoint,
    /// The checkpoint of the last acknowledged event, saved or not.
    acked: Checkpoint,
    /// The least time between two saves of the checkpoint.
    save_every: Duration,
    /// When the checkpoint was last saved (or the outbox opened).
    saved_at: Instant,
    /// Dropped after a failure, to be resumed after `read`.
    subscription: Option<BoxStream<'static, Result<RecordedEvent, StoreError>>>,
    /// Events taken, in global order, not yet acknowledged.
    pub(super) pending: VecDeque<Outgoing>,
}

impl Outbox {
    /// Subscribes to `store` after `saved`, as `config` says (batch size,
    /// poll interval, topic prefix, checkpoint name and how often it is
    /// saved).
    pub(super) fn open(
        store: EventStore,
        config: &RelayConfig,
        stats: Arc<RelayStats>,
        saved: Checkpoint,
    ) -> Self {
        let options = SubscribeOptions {
            batch_size: i64::try_from(config.batch_size).unwrap_or(i64::MAX),
            poll_interval: config.poll_interval,
        };
        let subscription = Some(store.subscribe_all(saved, options).boxed());
        Outbox {
            store,
            options,
            prefix: config.topic_prefix.clone(),
            name: config.checkpoint_name.clone(),
            stats,
            read: saved,
            saved,
            acked: saved,
            save_every: config.checkpoint_interval,
            saved_at: Instant::now(),
            subscription,
            pending: VecDeque::new(),
        }
    }

    /// Fills the batch: waits for one event when nothing is pending (a
    /// failed read is paused for with `backoff`), then takes whatever else
    /// is ready, up to `batch_size` pending events.
    pub(super) async fn fill(
        &mut self,
        batch_size: usize,
        backoff: &mut Backoff,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Fill, RelayError> {
        if self.pending.is_empty() {
            let next = loop {
                // Idle with an acknowledged prefix unsaved: save it when due.
                let due = (self.acked != self.saved).then(|| self.saved_at + self.save_every);
                let (store, read, options) = (&self.store, self.read, self.options);
                let sub = self
                    .subscription
                    .get_or_insert_with(|| store.subscribe_all(read, options).boxed());
                tokio::select! {
                    biased;
                    () = &mut *shutdown => return Ok(Fill::Stop),
                    next = sub.next() => break next,
                    () = sleep_until(due) => {}
                }
                self.flush().await;
            };
            if !self.take(next)? {
                let stopped = pause(backoff.next(), shutdown).await;
                return Ok(if stopped { Fill::Stop } else { Fill::Retry });
            }
        }
        while self.pending.len() < batch_size {
            let Some(sub) = self.subscription.as_mut() else {
                break;
            };
            let Some(next) = sub.next().now_or_never() else {
                break;
            };
            if !self.take(next)? {
                break;
            }
        }
        Ok(Fill::Ready)
    }

    /// Notes that every event up to `checkpoint` was acknowledged, and
    /// saves it when the last save is `save_every` old. A relay that stops
    /// before the next save re-sends the events since the last one
    /// (duplicates, which consumers drop); [`Outbox::flush`] at shutdown.
    pub(super) async fn acknowledged(&mut self, checkpoint: Checkpoint) {
        self.acked = checkpoint;
        if self.saved_at.elapsed() >= self.save_every {
            self.save(checkpoint).await;
        }
    }

    /// Saves the last acknowledged checkpoint if it is not saved yet.
    pub(super) async fn flush(&mut self) {
        if self.acked != self.saved {
            let acked = self.acked;
            self.save(acked).await;
        }
    }

    /// Saves `checkpoint`; a failure is logged (the next save covers it).
    async fn save(&mut self, checkpoint: Checkpoint) {
        self.saved_at = Instant::now();
        match save_checkpoint(self.store.pool(), &self.name, checkpoint).await {
            Ok(()) => {
                self.saved = checkpoint;
                self.stats.set_checkpoint(checkpoint);
            }
            // Until a later save, a restart re-sends a little more.
            Err(error) => tracing::warn!(%error, "cannot save the relay checkpoint"),
        }
    }

    /// Takes one item from the subscription into `pending`. Returns false
    /// when the subscription failed or ended; it is then dropped, to be
    /// resumed after the last event taken.
    fn take(
        &mut self,
        next: Option<Result<RecordedEvent, StoreError>>,
    ) -> Result<bool, RelayError> {
        match next {
            Some(Ok(event)) => {
                self.read = event.checkpoint();
                self.stats.note_lag(event.recorded_at, false);
                self.pending.push_back(outgoing(&self.prefix, event)?);
                Ok(true)
            }
            Some(Err(error)) => {
                tracing::warn!(%error, after = %self.read, "reading events failed; resubscribing");
                self.subscription = None;
                Ok(false)
            }
            None => {
                self.subscription = None;
                Ok(false)
            }
        }
    }
}

/// Resolves at `due`, or never when there is nothing due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// `event` with its topic and envelope; an event whose topic Kafka would
/// refuse stops the relay rather than being skipped.
fn outgoing(prefix: &str, event: RecordedEvent) -> Result<Outgoing, RelayError> {
    let topic = topic_for(prefix, &event.stream_type);
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
    Ok(Outgoing {
        event,
        topic,
        payload,
    })
}
