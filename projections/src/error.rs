//! The projections crate's error type.

use domain::EventDecodeError;

/// Everything applying, building or reading a read model can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A schema name that is not `[a-z_][a-z0-9_]*` (at most 63 bytes);
    /// nothing was sent to the database.
    #[error("invalid read-model schema name {0:?}: expected [a-z_][a-z0-9_]*, at most 63 bytes")]
    InvalidSchema(String),
    /// A consumed event whose stored parts do not decode (unknown type,
    /// malformed payload, unsupported schema version). Nothing was written.
    #[error("event {stream_id}@{version} (position {position}) cannot be decoded: {source}")]
    Decode {
        /// The event's stream.
        stream_id: String,
        /// Its version in the stream.
        version: u64,
        /// Its global position.
        position: i64,
        /// Why it does not decode.
        source: EventDecodeError,
    },
    /// A consumed event that does not fit the read model's rows (e.g. an
    /// order event for an order the model never saw placed). Nothing was
    /// written.
    #[error("event {stream_id}@{version} (position {position}) cannot be applied: {message}")]
    Inconsistent {
        /// The event's stream.
        stream_id: String,
        /// Its version in the stream.
        version: u64,
        /// Its global position.
        position: i64,
        /// What does not fit.
        message: String,
    },
    /// [`crate::catch_up`] met an event whose stream has earlier events the
    /// read model lacks: it was caught up from a checkpoint past them.
    #[error(
        "stream {stream_id}: the read model expects version {expected} but was given {version}"
    )]
    Gap {
        /// The stream.
        stream_id: String,
        /// The version the read model needs next.
        expected: u64,
        /// The version that was read.
        version: u64,
    },
    /// Another applier claimed a stream new to the read model while this
    /// batch applied it: roll back and apply the batch again (its events
    /// are then duplicates).
    #[error("another applier claimed a stream of this batch first; retry the batch")]
    Contended,
    /// Reading the event store failed.
    #[error("event store: {0}")]
    Store(#[from] eventstore::StoreError),
    /// The database failed. Inside a caller's transaction, roll it back.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
