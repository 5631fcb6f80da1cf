//! The values that go into and come out of the event store.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What the caller believes the stream's version to be when it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "version", rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Append whatever the current version is (no concurrency check).
    Any,
    /// The stream must not exist yet (same as `Exact(0)`).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id of the event (idempotent consumers key on it, or on stream id and version).
    pub event_id: Uuid,
    /// Event type name, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Schema version of `data`, so that upcasters can load old shapes.
    pub schema_version: u32,
    /// The payload.
    pub data: Value,
    /// This event's own metadata (a JSON object), merged over the append's
    /// metadata: its keys win. Lets one append carry events caused by
    /// different commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl NewEvent {
    /// An event with a fresh random id and no metadata of its own.
    pub fn new(event_type: impl Into<String>, schema_version: u32, data: Value) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: None,
        }
    }

    /// This event with its own metadata, merged over the append's.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The metadata stored with this event: the append's, overlaid with its own.
    pub(crate) fn merged_metadata(&self, append: &Value) -> Value {
        match (&self.metadata, append) {
            (Some(Value::Object(own)), Value::Object(base)) => {
                let mut merged = base.clone();
                merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(merged)
            }
            _ => append.clone(),
        }
    }
}

/// A stored event with everything the store recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to, `<type>-<id>`.
    pub stream_id: String,
    /// The stream type (the part of the stream id before the first `-`).
    pub stream_type: String,
    /// Version within the stream, contiguous from 1.
    pub version: u64,
    /// Global position: unique and increasing in commit order per stream,
    /// but not gap-free and not in commit order across streams. Tail the
    /// store with [`Checkpoint`]s, never by position alone.
    pub global_position: i64,
    /// Event type name.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u32,
    /// The payload.
    pub data: Value,
    /// Correlation id, causation id, user id, command id and anything else the writer recorded.
    pub metadata: Value,
    /// When the event was appended (microsecond precision).
    pub recorded_at: DateTime<Utc>,
    /// Hex SHA-256 over the previous event's hash and this event's canonical content.
    pub hash: String,
    /// Id of the writing transaction; with `global_position` it forms the event's [`Checkpoint`].
    #[serde(skip)]
    #[schemars(skip)]
    pub tx_id: i64,
}

impl RecordedEvent {
    /// The checkpoint a reader stores after handling this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.tx_id,
            position: self.global_position,
        }
    }

    /// For unit tests: a `Placed` event, version 1 at position 1 of
    /// `order-1`, carrying `metadata`.
    #[cfg(test)]
    pub(crate) fn placed_with(metadata: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: "order-1".into(),
            stream_type: "order".into(),
            version: 1,
            global_position: 1,
            event_type: "Placed".into(),
            schema_version: 1,
            data: serde_json::json!({}),
            metadata,
            recorded_at: Utc::now(),
            hash: String::new(),
            tx_id: 1,
        }
    }
}

/// A reader's place in the gap-free global order: the (transaction id,
/// position) pair of the last event it handled. Events are totally ordered
/// by this pair, and an event that becomes readable later always sorts after
/// every event that was readable before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Checkpoint {
    /// Writing transaction id of the last handled event.
    pub tx_id: i64,
    /// Global position of the last handled event.
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint {
        tx_id: 0,
        position: 0,
    };
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx_id, self.position)
    }
}

/// A checkpoint could not be parsed from text.
#[derive(Debug, thiserror::Error)]
#[error("invalid checkpoint {0:?}: expected <tx_id>.<position>")]
pub struct ParseCheckpointError(String);

impl std::str::FromStr for Checkpoint {
    type Err = ParseCheckpointError;

    /// Parses the `Display` form, `<tx_id>.<position>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCheckpointError(s.to_owned());
        let (tx, pos) = s.split_once('.').ok_or_else(err)?;
        let tx_id = tx.parse().map_err(|_| err())?;
        let position = pos.parse().map_err(|_| err())?;
        if tx_id < 0 || position < 0 {
            return Err(err());
        }
        Ok(Checkpoint { tx_id, position })
    }
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's version after the append (the last appended event's version).
    pub version: u64,
    /// Global position of the last appended event.
    pub position: i64,
    /// True when this answer replays an earlier append with the same
    /// idempotency key and nothing was written now.
    #[serde(default, skip_serializing)]
    pub replayed: bool,
}

/// The latest saved snapshot of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: String,
    /// The stream version the state includes.
    pub version: u64,
    /// Schema version of `state`, so that an incompatible snapshot can be ignored.
    pub schema_version: u32,
    /// The folded state.
    pub state: Value,
}
