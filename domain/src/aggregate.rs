//! The shape every aggregate shares: a pure decision and a pure fold.

use serde::{de::DeserializeOwned, Serialize};

use crate::{DomainError, DomainEvent, StreamKind};

/// A consistency boundary whose state is the fold of its own event stream.
///
/// Implementations contain no side effects: `decide` only reads `self` and the
/// command, `evolve` only computes the next state. The state is `Serialize` +
/// `DeserializeOwned` so that it can be stored as a snapshot, and `Default` is
/// the state of a stream with no events.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The kind of this aggregate's streams; stream ids are `"<KIND>-<id>"`
    /// (see [`stream_id`]).
    const KIND: StreamKind;
    /// What callers ask this aggregate to do.
    type Command: Clone + Send + Sync + 'static;
    /// What this aggregate records.
    type Event: DomainEvent;

    /// Pure decision: the events that carrying out `command` records, or why
    /// it cannot be carried out. `Ok(vec![])` means "nothing to do" (an
    /// idempotent no-op: the command's effect already holds).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// Pure fold: the state after `event`. Never fails; events are facts that
    /// `decide` already checked.
    fn evolve(self, event: &Self::Event) -> Self;

    /// The state after folding `events`, in order, into the empty state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}

/// The stream id of aggregate `A` with id `id`: `"<A::KIND>-<id>"`, e.g.
/// `stream_id::<Order>(order_id)` is `"order-<uuid>"`.
pub fn stream_id<A: Aggregate>(id: impl std::fmt::Display) -> String {
    format!("{}-{id}", A::KIND.as_str())
}
