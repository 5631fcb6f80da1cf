//! The event store's error type.

use crate::model::ExpectedVersion;

/// Everything an event store operation can fail with.
///
/// Input errors (`EmptyAppend`, `EventTooLarge`, ...) are detected before
/// anything is written; a failed append never writes part of its events.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version: someone else appended first.
    #[error("stream {stream_id}: expected version {expected}, but it is at {actual}")]
    WrongExpectedVersion {
        /// The stream appended to.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked.
        actual: u64,
    },
    /// The transaction got its id before a younger transaction appended to
    /// the stream, so appending now would put the stream's events out of
    /// order for tailing readers. Retry in a new transaction.
    #[error(
        "stream {stream_id}: a younger transaction appended first; retry in a new transaction"
    )]
    TransactionOrder {
        /// The stream appended to.
        stream_id: String,
    },
    /// An append must carry at least one event.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// One event's serialized data exceeds [`crate::MAX_EVENT_BYTES`].
    #[error("event {index} is {size} bytes; the limit is {limit}")]
    EventTooLarge {
        /// Index of the event in the append.
        index: usize,
        /// Its serialized size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A stream id must be 1 to [`crate::MAX_STREAM_ID_LEN`] characters without control characters.
    #[error("invalid stream id: {0}")]
    InvalidStreamId(String),
    /// Metadata must be a JSON object.
    #[error("metadata must be a JSON object")]
    InvalidMetadata,
    /// An event is malformed (empty type, a NUL character Postgres cannot store, ...).
    #[error("event {index} is invalid: {reason}")]
    InvalidEvent {
        /// Index of the event in the append.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An event id that is already stored was appended again.
    #[error("event id already stored")]
    DuplicateEventId,
    /// An idempotency key was reused for a different request.
    #[error("idempotency key {key} was already used for a different request")]
    IdempotencyKeyReused {
        /// The reused key.
        key: String,
    },
    /// A stored row could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// True for an optimistic concurrency conflict: the caller may reload the
    /// stream and retry in a new transaction.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::WrongExpectedVersion { .. } | StoreError::TransactionOrder { .. }
        )
    }
}
