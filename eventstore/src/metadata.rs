//! The metadata Fulcrum records on every event it appends: who asked, what
//! caused it, what it belongs to, and the trace it travels in.
//!
//! The store keeps an event's metadata as a JSON object and takes any
//! object; [`EventMetadata`] is the one place that knows Fulcrum's keys,
//! both to write them ([`EventMetadata::to_value`]) and to read them back
//! from a stored event ([`EventMetadata::of`]).

use serde_json::{Map, Value};
use uuid::Uuid;

/// The metadata key of the W3C `traceparent` (see [`crate::trace`]).
pub const TRACEPARENT: &str = "traceparent";

/// Fulcrum's metadata of one event.
///
/// Written as a JSON object with `correlation_id`, `causation_id`,
/// `user_id` and `command_id` always present (null when unknown), and
/// `note` and `traceparent` only when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMetadata {
    /// Ties together everything one request caused, across streams.
    pub correlation_id: Option<String>,
    /// What caused the event: the command itself for a client request, or
    /// the event (or request) a saga reacted to.
    pub causation_id: Option<String>,
    /// The acting user: a token's subject, or `saga` for the orchestrator.
    pub user_id: Option<String>,
    /// The command (or saga change) that appended the event.
    pub command_id: Option<Uuid>,
    /// A client's free-text note (e.g. why it cancels).
    pub note: Option<String>,
    /// The W3C `traceparent` of the trace the event belongs to.
    pub traceparent: Option<String>,
}

impl EventMetadata {
    /// The metadata as the store keeps it.
    pub fn to_value(&self) -> Value {
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        let mut map = Map::new();
        map.insert("correlation_id".into(), text(&self.correlation_id));
        map.insert("causation_id".into(), text(&self.causation_id));
        map.insert("user_id".into(), text(&self.user_id));
        let command_id = self.command_id.map(|id| id.to_string());
        map.insert("command_id".into(), text(&command_id));
        if let Some(note) = &self.note {
            map.insert("note".into(), Value::String(note.clone()));
        }
        if let Some(trace) = &self.traceparent {
            map.insert(TRACEPARENT.into(), Value::String(trace.clone()));
        }
        Value::Object(map)
    }

    /// Fulcrum's keys of a stored event's `metadata`, whatever else it
    /// holds. A key that is absent or null reads as `None`; a text key
    /// that holds another JSON value reads as that value's JSON text; a
    /// `command_id` that is not a UUID reads as `None`.
    pub fn of(metadata: &Value) -> EventMetadata {
        EventMetadata {
            correlation_id: text_of(metadata, "correlation_id"),
            causation_id: text_of(metadata, "causation_id"),
            user_id: text_of(metadata, "user_id"),
            command_id: text_of(metadata, "command_id").and_then(|id| id.parse().ok()),
            note: text_of(metadata, "note"),
            traceparent: text_of(metadata, TRACEPARENT),
        }
    }
}

/// Metadata `key` as text: a string as is, another value as JSON, nothing
/// when absent or null.
fn text_of(metadata: &Value, key: &str) -> Option<String> {
    match metadata.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_written_with_the_four_ids_always_and_the_rest_when_set() {
        let id = Uuid::new_v4();
        let bare = EventMetadata {
            correlation_id: Some("c-1".into()),
            command_id: Some(id),
            ..EventMetadata::default()
        };
        assert_eq!(
            bare.to_value(),
            json!({"correlation_id": "c-1", "causation_id": null, "user_id": null,
                   "command_id": id.to_string()})
        );
        let full = EventMetadata {
            note: Some("why".into()),
            traceparent: Some("00-t-s-01".into()),
            ..bare
        };
        assert_eq!(full.to_value()["note"], "why");
        assert_eq!(full.to_value()[TRACEPARENT], "00-t-s-01");
        assert_eq!(EventMetadata::of(&full.to_value()), full);
    }

    #[test]
    fn metadata_reads_text_or_nothing_whatever_the_object_holds() {
        let metadata = json!({"correlation_id": "c-1", "causation_id": null, "user_id": 3,
                              "command_id": "not-a-uuid", "other": true});
        let read = EventMetadata::of(&metadata);
        assert_eq!(read.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(read.causation_id, None);
        assert_eq!(read.user_id.as_deref(), Some("3"));
        assert_eq!(read.command_id, None);
        assert_eq!(EventMetadata::of(&Value::Null), EventMetadata::default());
    }
}
