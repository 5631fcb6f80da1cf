//! The per-stream hash chain that makes tampering evident.
//!
//! `hash(n) = SHA-256(hash(n-1) || canonical(event n))` with `hash(0)` = 32
//! zero bytes. The canonical form is compact JSON with object keys sorted,
//! over the event's stream id, version, id, type, schema version, data,
//! metadata and recorded time, so the chain does not depend on how Postgres
//! lays out `jsonb`. The global position is not covered: it is assigned by
//! the database after the hash is computed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The hash that precedes a stream's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hashed content of one event.
pub(crate) struct EventContent<'a> {
    pub stream_id: &'a str,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub data: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

/// Chains the stored event `event` onto `previous`, as if it stood at
/// `version` of its stream (a verifier passes the version it expects there).
pub(crate) fn chain_recorded(
    previous: &[u8],
    event: &crate::model::RecordedEvent,
    version: u64,
) -> [u8; 32] {
    chain(
        previous,
        &EventContent {
            stream_id: &event.stream_id,
            version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &event.data,
            metadata: &event.metadata,
            recorded_at: event.recorded_at,
        },
    )
}

/// Chains `content` onto `previous`.
pub(crate) fn chain(previous: &[u8], content: &EventContent<'_>) -> [u8; 32] {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    buf.push(b'{');
    push_field(&mut buf, "data", true);
    write_value(&mut buf, content.data);
    push_field(&mut buf, "event_id", false);
    write_str(&mut buf, &content.event_id.to_string());
    push_field(&mut buf, "event_type", false);
    write_str(&mut buf, content.event_type);
    push_field(&mut buf, "metadata", false);
    write_value(&mut buf, content.metadata);
    push_field(&mut buf, "recorded_at", false);
    write_str(
        &mut buf,
        &content
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    push_field(&mut buf, "schema_version", false);
    buf.extend_from_slice(content.schema_version.to_string().as_bytes());
    push_field(&mut buf, "stream_id", false);
    write_str(&mut buf, content.stream_id);
    push_field(&mut buf, "version", false);
    buf.extend_from_slice(content.version.to_string().as_bytes());
    buf.push(b'}');

    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(&buf);
    hasher.finalize().into()
}

fn push_field(buf: &mut Vec<u8>, name: &str, first: bool) {
    if !first {
        buf.push(b',');
    }
    write_str(buf, name);
    buf.push(b':');
}

/// A JSON string, escaped as serde_json escapes it (writing into a Vec
/// cannot fail).
fn write_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Compact JSON with object keys in byte order, whatever map type serde_json uses.
pub(crate) fn write_canonical(buf: &mut String, value: &Value) {
    let mut bytes = Vec::new();
    write_value(&mut bytes, value);
    // Only JSON text was written: valid UTF-8.
    buf.push_str(&String::from_utf8_lossy(&bytes));
}

fn write_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            buf.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                push_field(buf, key, i == 0);
                write_value(buf, &map[key.as_str()]);
            }
            buf.push(b'}');
        }
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_value(buf, item);
            }
            buf.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *buf, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_key_order() {
        let mut a = String::new();
        let mut b = String::new();
        write_canonical(&mut a, &json!({"b": 1, "a": {"y": [1, 2], "x": null}}));
        write_canonical(&mut b, &json!({"a": {"x": null, "y": [1, 2]}, "b": 1}));
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
    }

    /// Stored hashes must never change meaning. The same value comes from
    /// an independent implementation: SHA-256 of 32 zero bytes followed by
    /// Python's `json.dumps(doc, sort_keys=True, separators=(",", ":"),
    /// ensure_ascii=False)` of the hashed fields (see docs/audit.md, the offline
    /// procedure).
    #[test]
    fn the_chain_hash_of_a_fixed_event_is_stable() {
        let data = json!({"z": [1, "two", null, true], "a": {"é\"\n": 1.5}});
        let meta = json!({"user_id": "ann", "correlation_id": "c-1"});
        let content = EventContent {
            stream_id: "order-1",
            version: 3,
            event_id: Uuid::nil(),
            event_type: "OrderPlaced",
            schema_version: 1,
            data: &data,
            metadata: &meta,
            recorded_at: DateTime::UNIX_EPOCH,
        };
        assert_eq!(hex::encode(chain(&GENESIS, &content)), GOLDEN);
    }

    const GOLDEN: &str = "bb3b84653e2b3b9cc329d5b4eb7a5145c17ee976326a00c70bd777f8aae377ed";

    #[test]
    fn the_hash_depends_on_the_previous_hash_and_on_the_data() {
        let data = json!({"n": 1});
        let meta = json!({});
        let content = EventContent {
            stream_id: "s-1",
            version: 1,
            event_id: Uuid::nil(),
            event_type: "T",
            schema_version: 1,
            data: &data,
            metadata: &meta,
            recorded_at: DateTime::UNIX_EPOCH,
        };
        let h1 = chain(&GENESIS, &content);
        let h2 = chain(&[1; 32], &content);
        let other = json!({"n": 2});
        let h3 = chain(
            &GENESIS,
            &EventContent {
                data: &other,
                ..content
            },
        );
        assert_ne!(h1, h2);
        assert_ne!(h1, h3);
    }
}
