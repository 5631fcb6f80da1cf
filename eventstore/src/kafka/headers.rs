//! The message headers: UTF-8 text copies of the envelope's most used
//! fields, so consumers can route and log without parsing the value.
//!
//! Every message carries [`EVENT_ID`], [`EVENT_TYPE`], [`SCHEMA_VERSION`],
//! [`GLOBAL_POSITION`] and [`STREAM_VERSION`]; [`CORRELATION_ID`] and
//! [`CAUSATION_ID`] (and [`TRACEPARENT`]) come from the metadata keys of
//! the same names. A header
//! whose metadata key is absent or JSON `null` is **omitted** (never sent
//! empty); a string is sent as is, any other JSON value as its JSON text.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::Message;

use crate::metadata::EventMetadata;
use crate::model::RecordedEvent;

/// The event's id (a UUID).
pub const EVENT_ID: &str = "event_id";
/// The event's type, e.g. `OrderPlaced`.
pub const EVENT_TYPE: &str = "event_type";
/// The schema version of the event's data.
pub const SCHEMA_VERSION: &str = "schema_version";
/// The event's position in the global order.
pub const GLOBAL_POSITION: &str = "global_position";
/// The event's version in its stream.
pub const STREAM_VERSION: &str = "stream_version";
/// The metadata's `correlation_id`, when present.
pub const CORRELATION_ID: &str = "correlation_id";
/// The metadata's `causation_id`, when present.
pub const CAUSATION_ID: &str = "causation_id";
/// The metadata's W3C `traceparent`, when present (see [`crate::trace`]).
pub const TRACEPARENT: &str = crate::trace::METADATA_KEY;

/// The headers of the message that carries `event`; see the
/// [module documentation](self).
pub fn encode(event: &RecordedEvent) -> OwnedHeaders {
    let event_id = event.event_id.to_string();
    let schema_version = event.schema_version.to_string();
    let global_position = event.global_position.to_string();
    let stream_version = event.version.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(7)
        .insert(text(EVENT_ID, &event_id))
        .insert(text(EVENT_TYPE, &event.event_type))
        .insert(text(SCHEMA_VERSION, &schema_version))
        .insert(text(GLOBAL_POSITION, &global_position))
        .insert(text(STREAM_VERSION, &stream_version));
    let metadata = EventMetadata::of(&event.metadata);
    for (key, value) in [
        (CORRELATION_ID, &metadata.correlation_id),
        (CAUSATION_ID, &metadata.causation_id),
        (TRACEPARENT, &metadata.traceparent),
    ] {
        if let Some(value) = value {
            headers = headers.insert(text(key, value));
        }
    }
    headers
}

/// The text of the first header `name` of `message`; `None` when it is
/// absent, has no value or is not UTF-8.
pub fn get(message: &impl Message, name: &str) -> Option<String> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    })
}

fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};
    use serde_json::json;

    #[test]
    fn metadata_headers_are_text_or_omitted() {
        let event = RecordedEvent::placed_with(
            json!({"correlation_id": "c-1", "causation_id": null, "traceparent": 3}),
        );
        let message = OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(encode(&event)),
        );
        assert_eq!(get(&message, CORRELATION_ID).as_deref(), Some("c-1"));
        assert_eq!(get(&message, CAUSATION_ID), None, "null is omitted");
        assert_eq!(get(&message, TRACEPARENT).as_deref(), Some("3"));
    }

    #[test]
    fn a_header_reads_back_as_text() {
        let headers = OwnedHeaders::new()
            .insert(text(EVENT_TYPE, "Placed"))
            .insert(Header {
                key: CAUSATION_ID,
                value: Some(&[0xff_u8, 0xfe][..]),
            });
        let message = OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        );
        assert_eq!(get(&message, EVENT_TYPE).as_deref(), Some("Placed"));
        assert_eq!(get(&message, CAUSATION_ID), None, "not UTF-8");
        assert_eq!(get(&message, EVENT_ID), None, "absent");
    }
}
