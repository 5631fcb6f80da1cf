//! Command handling: load the aggregate (cache, snapshot, events), decide,
//! append with the expected version, retry on conflict; per-stream queues
//! that batch a hot stream's commands into one append; idempotency keys;
//! correlation, causation, user and command id on every event.

mod context;
mod error;
mod executor;
mod handler;
pub mod history;
mod prepared;
mod process;
mod repository;

pub use context::{CommandContext, Idempotency};
pub use error::CommandError;
pub use executor::{Executor, ExecutorConfig};
pub use handler::{Actor, CommandHandler, OrderRequest, RequestedLine};
pub use prepared::Prepared;
pub use process::{process_key, CausedBy, ProcessCommand};
pub use repository::{Loaded, Repository, SNAPSHOT_SCHEMA};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a carried-out command left its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The stream the command acted on.
    pub stream_id: String,
    /// The stream's version after the command.
    pub version: u64,
    /// Global position reached (of the stream's last event after the command).
    pub position: i64,
    /// Events this call appended (0 for a no-op or a replay).
    #[serde(default)]
    pub appended: usize,
    /// True when this answers an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
    /// What the caller asked to answer its client with (stored under the idempotency key).
    pub reply: Value,
    /// The events this call appended, in stream order (empty for a no-op
    /// or a replay). Not stored under the idempotency key: a process that
    /// caused them may react to them at once instead of waiting for their
    /// copy from Kafka (which its consumers then drop as a duplicate).
    #[serde(skip)]
    pub events: Vec<Appended>,
}

/// An event a command appended, as its caller learns of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its type name.
    pub event_type: String,
    /// The schema version of `data`.
    pub schema_version: u32,
    /// The payload.
    pub data: Value,
}

impl Appended {
    /// `events` as appended to `stream_id`, the last of them at `version`.
    pub fn all(stream_id: &str, version: u64, events: &[eventstore::NewEvent]) -> Vec<Appended> {
        let first = version + 1 - events.len() as u64;
        events
            .iter()
            .zip(first..)
            .map(|(event, version)| Appended {
                event_id: event.event_id,
                stream_id: stream_id.to_owned(),
                version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.clone(),
            })
            .collect()
    }
}
