//! `subscribe_all`: a stream that tails the store in gap-free global order.

use std::time::Duration;

use futures::Stream;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::model::{Checkpoint, RecordedEvent};
use crate::read;
use crate::store::{EventStore, NOTIFY_CHANNEL};

/// How soon a tail reads again when committed events were held back by an
/// older transaction still running; the wait doubles while they stay held,
/// up to the poll interval.
const HELD_BACK_RETRY: Duration = Duration::from_millis(2);
use crate::StoreError;

/// How a subscription reads.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// Events read per query.
    pub batch_size: i64,
    /// The longest wait between reads when no wake-up arrives. Wake-ups come
    /// from this process's commits and from `NOTIFY`; polling catches events
    /// held back by a transaction that ended without announcing itself.
    pub poll_interval: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            batch_size: 500,
            poll_interval: Duration::from_millis(50),
        }
    }
}

impl EventStore {
    /// Every event after `after`, then every event committed later, in
    /// gap-free global order, each exactly once. Ends after yielding an
    /// error; the caller resumes from the checkpoint of the last event it got.
    pub fn subscribe_all(
        &self,
        after: Checkpoint,
        options: SubscribeOptions,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {
        let (tx, rx) = mpsc::channel(options.batch_size.clamp(1, 10_000) as usize);
        tokio::spawn(tail(self.clone(), after, options, tx));
        ReceiverStream::new(rx)
    }
}

async fn tail(
    store: EventStore,
    mut checkpoint: Checkpoint,
    options: SubscribeOptions,
    tx: mpsc::Sender<Result<RecordedEvent, StoreError>>,
) {
    let mut local = store.commit_signal();
    let mut listener = match PgListener::connect_with(store.pool()).await {
        Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
            Ok(()) => Some(l),
            Err(error) => {
                tracing::warn!(%error, "LISTEN failed; polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "no LISTEN connection; polling only");
            None
        }
    };
    // How long the last wait for held-back events was (zero: none held).
    let mut held = Duration::ZERO;
    loop {
        // Mark the signal seen before reading, so a commit during the read wakes us again.
        local.borrow_and_update();
        let read = match read::read_tail(store.pool(), checkpoint, options.batch_size).await {
            Ok(read) => read,
            Err(error) => {
                let _ = tx.send(Err(error)).await;
                return;
            }
        };
        let full = read.events.len() as i64 >= options.batch_size;
        // Events held back by an older transaction: read again soon, since
        // that transaction may not be an append that announces its end.
        let (wait, origin) = if read.held_back {
            // Twice as long each time they are still held back.
            held = (held * 2).max(HELD_BACK_RETRY).min(options.poll_interval);
            (held, None)
        } else {
            held = Duration::ZERO;
            (options.poll_interval, Some(&*store.origin))
        };
        for event in read.events {
            checkpoint = event.checkpoint();
            if tx.send(Ok(event)).await.is_err() {
                return; // the subscriber went away
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = local.changed() => {}
            notified = announced(&mut listener, origin) => {
                if let Err(error) = notified {
                    tracing::warn!(%error, "LISTEN connection failed; polling only");
                    listener = None;
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

/// The next announcement of commits, passing over those of the store
/// named `mine`: its commit signal woke the tail already, and reading again
/// would find nothing (it halves the reads of a process that writes what it
/// tails, as the relay's does).
async fn announced(
    listener: &mut Option<PgListener>,
    mine: Option<&str>,
) -> Result<(), sqlx::Error> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    loop {
        if Some(listener.recv().await?.payload()) != mine {
            return Ok(());
        }
    }
}
