//! The Fulcrum event store on Postgres.
//!
//! - [`append_in`] / [`EventStore::append`]: optimistic concurrency on a
//!   stream version, contiguous versions from 1, a per-stream hash chain;
//! - [`read_stream`], [`read_all`] and [`EventStore::subscribe_all`]: reads
//!   in stream order and in gap-free global order (see [`Checkpoint`]);
//! - [`idempotency`] keys, [`snapshot`]s, reader [`checkpoint`]s and
//!   [`verify_stream`];
//! - [`leader`]: single-active roles (one process at a time works);
//! - [`kafka`], the one home of the Kafka conventions, and the [`relay`]
//!   that publishes committed events to Kafka.
//!
//! Store functions take an executor or a connection so that the caller owns
//! the transaction.

mod append;
pub mod audit;
pub mod checkpoint;
pub mod db;
mod error;
mod flat;
mod group;
mod hash;
pub mod idempotency;
pub mod kafka;
pub mod leader;
mod many;
mod metadata;
pub mod metrics;
mod model;

mod read;
pub mod relay;
pub mod seal;
pub mod snapshot;
mod store;
mod subscribe;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
mod verify;

pub use append::{append_in, lock_stream, lock_streams, stream_type, validate_stream_id};
pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use error::StoreError;
pub use group::{GROUP_PIPELINES, MAX_GROUP_BYTES, MAX_GROUP_EVENTS};
pub use metadata::EventMetadata;
pub use model::{
    AppendResult, Checkpoint, ExpectedVersion, NewEvent, ParseCheckpointError, RecordedEvent,
    Snapshot,
};
pub use read::{
    checkpoint_at_or_before, head_position, read_after_position, read_all, read_stream,
};
pub use relay::{Relay, RelayConfig, RelayError};
pub use snapshot::{load_snapshot, save_snapshot};
pub use store::{EventStore, StreamAppend, NOTIFY_CHANNEL};
pub use subscribe::SubscribeOptions;
pub use verify::{verify_stream, Verification};

/// The largest accepted event payload (serialized `data`), in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;
