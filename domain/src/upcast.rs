//! Upcasting: rewriting stored event payloads of an old schema version into
//! the current one before they are deserialised.
//!
//! Each [`Upcaster`] lifts one event type by exactly one version; [`upcast`]
//! chains them until the payload reaches the current version. Stored events
//! are never rewritten in place (that would break the hash chain); upcasting
//! happens on every read.

use serde_json::Value;

use crate::EventDecodeError;

/// Rewrites the payload of `event_type` at schema version `from_version` into
/// version `from_version + 1`. Returns a message when the payload does not
/// have the shape that version is known to have.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type name this upcaster applies to, e.g. `"ProductDefined"`.
    pub event_type: &'static str,
    /// The schema version it reads; it produces `from_version + 1`.
    pub from_version: u32,
    /// The rewrite itself; pure.
    pub apply: fn(Value) -> Result<Value, String>,
}

/// Lifts `data`, stored as `event_type` at `stored_version`, to
/// `current_version` by applying `upcasters` one version at a time.
///
/// A payload already at the current version is returned unchanged. A version
/// newer than the current one (written by newer code) and a gap in the chain
/// of upcasters are errors, never silently passed through.
pub fn upcast(
    upcasters: &[Upcaster],
    event_type: &str,
    stored_version: u32,
    current_version: u32,
    mut data: Value,
) -> Result<Value, EventDecodeError> {
    if stored_version > current_version {
        return Err(EventDecodeError::UnsupportedVersion {
            event_type: event_type.to_owned(),
            version: stored_version,
            current: current_version,
        });
    }
    for version in stored_version..current_version {
        let upcaster = upcasters
            .iter()
            .find(|u| u.event_type == event_type && u.from_version == version)
            .ok_or_else(|| EventDecodeError::MissingUpcaster {
                event_type: event_type.to_owned(),
                from_version: version,
            })?;
        data = (upcaster.apply)(data).map_err(|message| EventDecodeError::Upcast {
            event_type: event_type.to_owned(),
            from_version: version,
            message,
        })?;
    }
    Ok(data)
}

/// Renames the top-level field `from` of a JSON object to `to`: the most
/// common upcast. Fails when `data` is not an object, lacks `from`, or
/// already has `to`.
pub fn rename_field(mut data: Value, from: &str, to: &str) -> Result<Value, String> {
    let object = data
        .as_object_mut()
        .ok_or_else(|| "payload is not a JSON object".to_owned())?;
    if object.contains_key(to) {
        return Err(format!("payload already has field `{to}`"));
    }
    let value = object
        .remove(from)
        .ok_or_else(|| format!("payload has no field `{from}`"))?;
    object.insert(to.to_owned(), value);
    Ok(data)
}
