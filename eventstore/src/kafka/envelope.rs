//! The message value: the JSON event envelope, [`RecordedEvent`] serialized
//! (`event_id`, `stream_id`, `stream_type`, `version`, `global_position`,
//! `event_type`, `schema_version`, `data`, `metadata`, `recorded_at`,
//! `hash`). The message key is the stream id.

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use uuid::Uuid;

use super::headers;
use crate::model::RecordedEvent;

/// The value of the message that carries `event`.
pub fn encode(event: &RecordedEvent) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(event)
}

/// The event in a relay message, or (as the error) the best description of
/// it that the message's key and headers allow, e.g. for a dead-letter
/// record.
///
/// The description's `event_id` is the [`headers::EVENT_ID`] header or,
/// without a usable one, a UUID (v5) of the message's place in Kafka
/// (topic, partition, offset): the same for a redelivery, different for
/// every other message. Its stream id is the key, its version, global
/// position and event type come from the headers (0, the offset and "" when
/// absent); its data and metadata are `null`.
pub fn decode(message: &OwnedMessage) -> Result<RecordedEvent, Box<RecordedEvent>> {
    if let Some(Ok(event)) = message
        .payload()
        .map(serde_json::from_slice::<RecordedEvent>)
    {
        return Ok(event);
    }
    Err(Box::new(describe(message)))
}

/// What the key and headers of `message` tell about its event.
fn describe(message: &OwnedMessage) -> RecordedEvent {
    let header = |name: &str| headers::get(message, name);
    let stream_id = message
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .unwrap_or("")
        .to_owned();
    RecordedEvent {
        event_id: header(headers::EVENT_ID)
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| place_id(message)),
        stream_type: crate::stream_type(&stream_id).to_owned(),
        stream_id,
        version: header(headers::STREAM_VERSION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        global_position: header(headers::GLOBAL_POSITION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(message.offset()),
        event_type: header(headers::EVENT_TYPE).unwrap_or_default(),
        schema_version: 0,
        data: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        recorded_at: chrono::Utc::now(),
        hash: String::new(),
        tx_id: 0,
    }
}

/// An id of the message's place in Kafka.
fn place_id(message: &OwnedMessage) -> Uuid {
    let place = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    Uuid::new_v5(&Uuid::NAMESPACE_OID, place.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::decode;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn garbage(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"not json".to_vec()),
            Some(b"order-1".to_vec()),
            "fulcrum.order.events".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn a_message_that_is_no_envelope_gets_an_id_of_its_place_in_kafka() {
        let Err(first) = decode(&garbage(0, 7)) else {
            panic!("garbage decoded as an envelope");
        };
        let Err(again) = decode(&garbage(0, 7)) else {
            panic!("garbage decoded as an envelope");
        };
        let Err(other) = decode(&garbage(1, 7)) else {
            panic!("garbage decoded as an envelope");
        };
        assert_eq!(
            first.event_id, again.event_id,
            "a redelivery is the same dead letter"
        );
        assert_ne!(
            first.event_id, other.event_id,
            "another message is another dead letter"
        );
        assert!(!first.event_id.is_nil());
        assert_eq!(first.stream_id, "order-1");
    }
}
