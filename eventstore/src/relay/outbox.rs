//! The relay's reading side: its place in the outbox (the events table)
//! and the events read but not yet acknowledged.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{pause, RelayError, RelayStats};
use crate::kafka::topics::{is_valid_topic, topic_for};
use crate::kafka::{envelope, Backoff};
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::EventStore;
use crate::subscribe::SubscribeOptions;
use crate::StoreError;

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
    stats: Arc<RelayStats>,
    /// The checkpoint of the last event taken from the subscription.
    read: Checkpoint,
    /// The last checkpoint saved.
    pub(super) saved: Checkpoint,
    /// Dropped after a failure, to be resumed after `read`.
    subscription: Option<BoxStream<'static, Result<RecordedEvent, StoreError>>>,
    /// Events taken, in global order, not yet acknowledged.
    pub(super) pending: VecDeque<Outgoing>,
}

impl Outbox {
    /// Subscribes to `store` after `saved`, sending to topics under `prefix`.
    pub(super) fn open(
        store: EventStore,
        options: SubscribeOptions,
        prefix: String,
        stats: Arc<RelayStats>,
        saved: Checkpoint,
    ) -> Self {
        let subscription = Some(store.subscribe_all(saved, options).boxed());
        Outbox {
            store,
            options,
            prefix,
            stats,
            read: saved,
            saved,
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
            let sub = match self.subscription.as_mut() {
                Some(sub) => sub,
                None => self
                    .subscription
                    .insert(self.store.subscribe_all(self.read, self.options).boxed()),
            };
            let next = tokio::select! {
                biased;
                () = &mut *shutdown => return Ok(Fill::Stop),
                next = sub.next() => next,
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
