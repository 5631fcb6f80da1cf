//! Process commands decided ahead of their write, for a caller that appends
//! them in a transaction of its own together with other streams: the order
//! saga records a step and the step's command in one commit.
//!
//! What the executor otherwise owns is the caller's here: the stream's lock
//! (taken with the others', [`eventstore::lock_streams`]), the expected
//! version (checked by the append: a stream that moved fails the whole
//! transaction), and the commit. No idempotency record is written: the
//! command's effect and the record of the step that sent it commit together,
//! so the step is never sent again under the same id. After the commit,
//! [`Prepared::committed`] updates the executor's cache; after a rollback,
//! [`Prepared::abandoned`] forgets what may be stale.

use std::sync::Arc;

use domain::Aggregate;
use eventstore::{ExpectedVersion, NewEvent, StreamAppend};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::executor::to_new_events;
use crate::repository::Loaded;
use crate::{
    Appended, CausedBy, CommandContext, CommandError, CommandHandler, Executor, ProcessCommand,
};

/// Updates an executor's cache once the caller's transaction ended.
type Settle = Box<dyn FnOnce(Option<(u64, i64)>) -> BoxFuture<'static, ()> + Send + Sync>;

/// A process command decided on its stream's cached state, not yet written.
pub struct Prepared {
    stream_id: String,
    expected: u64,
    events: Vec<NewEvent>,
    settle: Settle,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("stream_id", &self.stream_id)
            .field("expected", &self.expected)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The stream it writes.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Its part of a multi-stream append.
    pub fn append(&self) -> StreamAppend<'_> {
        StreamAppend {
            stream_id: &self.stream_id,
            expected: ExpectedVersion::Exact(self.expected),
            events: &self.events,
        }
    }

    /// The events it appends, as they will be stored if the append succeeds.
    pub fn appended(&self) -> Vec<Appended> {
        Appended::all(
            &self.stream_id,
            self.expected + self.events.len() as u64,
            &self.events,
        )
    }

    /// After the caller's transaction committed, its append at `position`.
    pub async fn committed(self, position: i64) {
        let version = self.expected + self.events.len() as u64;
        (self.settle)(Some((version, position))).await;
    }

    /// After the caller's transaction rolled back (or was never committed).
    pub async fn abandoned(self) {
        (self.settle)(None).await;
    }
}

impl<A: Aggregate> Executor<A> {
    /// Decides `command` for the stream `<A::KIND>-<id>` on its cached state
    /// (on the empty state, without reading the store, when the caller
    /// vouches that the stream is `new`: the append's expected version
    /// catches one that exists), for the caller to append (see the module).
    /// `Ok(None)` when it changes nothing. A refusal may come from a stale
    /// cache: the caller should carry the command out the usual way, which
    /// decides again.
    pub async fn prepare(
        self: &Arc<Self>,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
        new: bool,
    ) -> Result<Option<Prepared>, CommandError> {
        let stream_id = domain::stream_id::<A>(id);
        let loaded = if new {
            Arc::new(Loaded::default())
        } else {
            self.repository().load(&stream_id).await?
        };
        let decided = loaded.state.decide(command)?;
        if decided.is_empty() {
            return Ok(None);
        }
        let after = decided
            .iter()
            .fold(loaded.state.clone(), |state, event| state.evolve(event));
        let events = to_new_events(&decided, context);
        let (this, stream, before) = (self.clone(), stream_id.clone(), loaded.version);
        let settle: Settle = Box::new(move |written| {
            async move {
                match written {
                    Some((version, position)) => {
                        let after = Arc::new(Loaded {
                            version,
                            position,
                            state: after,
                        });
                        this.remembered(&stream, before, after).await;
                    }
                    None => this.repository().forget(&stream).await,
                }
            }
            .boxed()
        });
        Ok(Some(Prepared {
            stream_id,
            expected: before,
            events,
            settle,
        }))
    }
}

impl CommandHandler {
    /// Decides a process command ahead of its write (see the module), under
    /// the same context [`CommandHandler::dispatch`] gives it; `new` as for
    /// [`Executor::prepare`].
    pub async fn prepare(
        &self,
        command: &ProcessCommand,
        cause: &CausedBy,
        new: bool,
    ) -> Result<Option<Prepared>, CommandError> {
        let request = serde_json::to_value(command)
            .map_err(|e| eventstore::StoreError::Corrupt(format!("encoding a command: {e}")))?;
        let context = CommandContext::caused_by(cause, &request);
        match command {
            ProcessCommand::Inventory { sku, command } => {
                self.inventory.prepare(sku, command, &context, new).await
            }
            ProcessCommand::Payment { order_id, command } => {
                let id = order_id.to_string();
                self.payments.prepare(&id, command, &context, new).await
            }
            ProcessCommand::Shipment { order_id, command } => {
                let id = order_id.to_string();
                self.shipments.prepare(&id, command, &context, new).await
            }
            ProcessCommand::Order { order_id, command } => {
                let id = order_id.to_string();
                self.orders.prepare(&id, command, &context, new).await
            }
        }
    }
}
