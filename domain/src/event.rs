//! What every stored event can do: name itself, state its schema version, and
//! be split into / rebuilt from the parts the event store keeps.

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::upcast::{upcast, Upcaster};

/// An event enum of one aggregate, serialised adjacently tagged as
/// `{"type": <event type>, "data": <payload>}`. The event store keeps the type,
/// the schema version and the payload in separate columns.
pub trait DomainEvent:
    Serialize + DeserializeOwned + JsonSchema + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// The event type name, e.g. "OrderPlaced" (the serde tag).
    fn event_type(&self) -> &'static str;
    /// Current schema version of this event type (1 for all today).
    fn schema_version(&self) -> u32;
    /// Payload as stored (without the type tag).
    fn to_data(&self) -> Value;
    /// Rebuild from stored parts, upcasting old schema versions first. Unknown
    /// type or bad payload -> [`EventDecodeError`].
    fn from_stored(
        event_type: &str,
        schema_version: u32,
        data: Value,
    ) -> Result<Self, EventDecodeError>;
}

/// Why stored parts could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// No event of this aggregate has this type name.
    #[error("unknown event type `{event_type}`")]
    UnknownEventType {
        /// The stored type name.
        event_type: String,
    },
    /// The stored schema version is newer than this code knows (written by a
    /// newer release).
    #[error("`{event_type}` schema version {version} is newer than the supported {current}")]
    UnsupportedVersion {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// The newest version this code understands.
        current: u32,
    },
    /// The stored version is old, but no upcaster lifts it to the next one.
    #[error("no upcaster for `{event_type}` from schema version {from_version}")]
    MissingUpcaster {
        /// The stored type name.
        event_type: String,
        /// The version lacking an upcaster.
        from_version: u32,
    },
    /// An upcaster found the old payload malformed.
    #[error("cannot upcast `{event_type}` from schema version {from_version}: {message}")]
    Upcast {
        /// The stored type name.
        event_type: String,
        /// The version the failing upcaster reads.
        from_version: u32,
        /// What the upcaster found wrong.
        message: String,
    },
    /// The (upcast) payload does not deserialise into the event.
    #[error("malformed `{event_type}` payload: {source}")]
    Payload {
        /// The stored type name.
        event_type: String,
        /// The deserialisation failure.
        source: serde_json::Error,
    },
}

/// The `"data"` part of an adjacently tagged event. Domain events are plain
/// strings, numbers, UUIDs and lists, so serialising them cannot fail; should
/// it ever, the payload is `null` and `from_stored` will reject it loudly.
pub(crate) fn data_of<E: Serialize>(event: &E) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Upcasts `data` to `current_version`, then deserialises it as `event_type`.
pub(crate) fn decode<E: DeserializeOwned>(
    upcasters: &[Upcaster],
    event_type: &str,
    stored_version: u32,
    current_version: u32,
    data: Value,
) -> Result<E, EventDecodeError> {
    let data = upcast(upcasters, event_type, stored_version, current_version, data)?;
    let tagged = serde_json::json!({ "type": event_type, "data": data });
    serde_json::from_value(tagged).map_err(|source| EventDecodeError::Payload {
        event_type: event_type.to_owned(),
        source,
    })
}

/// Implements [`DomainEvent`] for an adjacently tagged event enum whose
/// variants are all struct variants named after their event type, and adds an
/// inherent `EVENT_TYPES` constant listing them.
///
/// `impl_domain_event!(ProductEvent, UPCASTERS, { ProductDefined = 1, ... })`
/// declares each variant's current schema version and the upcasters that lift
/// older payloads.
macro_rules! impl_domain_event {
    ($event:ident, $upcasters:expr, { $($variant:ident = $version:literal),+ $(,)? }) => {
        impl $event {
            /// Every event type name of this enum, in declaration order.
            pub const EVENT_TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];
        }

        impl $crate::DomainEvent for $event {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)+
                }
            }

            fn schema_version(&self) -> u32 {
                match self {
                    $(Self::$variant { .. } => $version,)+
                }
            }

            fn to_data(&self) -> serde_json::Value {
                $crate::event::data_of(self)
            }

            fn from_stored(
                event_type: &str,
                schema_version: u32,
                data: serde_json::Value,
            ) -> Result<Self, $crate::EventDecodeError> {
                let current = match event_type {
                    $(stringify!($variant) => $version,)+
                    _ => {
                        return Err($crate::EventDecodeError::UnknownEventType {
                            event_type: event_type.to_owned(),
                        })
                    }
                };
                $crate::event::decode($upcasters, event_type, schema_version, current, data)
            }
        }
    };
}

pub(crate) use impl_domain_event;
