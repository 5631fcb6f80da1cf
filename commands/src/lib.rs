//! Command handling: load the aggregate (cache, snapshot, events), decide,
//! append with the expected version, retry on conflict; per-stream queues
//! that batch a hot stream's commands into one append; idempotency keys;
//! correlation, causation, user and command id on every event.

mod context;
mod error;
mod executor;
mod handler;
pub mod history;
mod process;
mod repository;

pub use context::{CommandContext, Idempotency};
pub use error::CommandError;
pub use executor::{Executor, ExecutorConfig};
pub use handler::{Actor, CommandHandler, OrderRequest, RequestedLine};
pub use process::{process_key, CausedBy, ProcessCommand};
pub use repository::{Loaded, Repository, SNAPSHOT_SCHEMA};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}
