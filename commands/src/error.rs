//! The command layer's error type.

use domain::{DomainError, EventDecodeError};
use eventstore::StoreError;

/// Why a command was not carried out. Nothing was appended in any case.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused: invalid input, a forbidden transition, or not found.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Other writers kept winning: the stream moved on every one of the tries.
    #[error("stream {stream_id} kept changing; gave up after {tries} tries")]
    Contention {
        /// The contended stream.
        stream_id: String,
        /// How many times the command was decided and appended.
        tries: u32,
    },
    /// The idempotency key was already used for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// A stored event could not be decoded (a bug or a missing upcaster).
    #[error("stored event could not be decoded: {0}")]
    Decode(#[from] EventDecodeError),
    /// The event store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The caller may not act on this aggregate (someone else's order).
    #[error("{0}")]
    Forbidden(String),
    /// The task carrying the command out stopped before answering.
    #[error("the command was dropped before it finished")]
    Dropped,
}

impl From<StoreError> for CommandError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::IdempotencyKeyReused { .. } => CommandError::IdempotencyKeyReused,
            other => CommandError::Store(other),
        }
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        CommandError::Store(StoreError::Database(error))
    }
}
