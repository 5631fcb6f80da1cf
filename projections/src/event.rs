//! A consumed event decoded into its domain type, with where it sits.

use chrono::{DateTime, Utc};
use domain::{DomainEvent, EventDecodeError, InventoryEvent, OrderEvent, ProductEvent, StreamKind};
use eventstore::RecordedEvent;
use serde_json::Value;

use crate::ProjectionError;

/// What the row logic needs to know about an event besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// Version in its stream.
    pub version: u64,
    /// Global position.
    pub position: i64,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

impl At {
    /// Where `event` sits.
    pub(crate) fn of(event: &RecordedEvent) -> At {
        At {
            version: event.version,
            position: event.global_position,
            recorded_at: event.recorded_at,
        }
    }
}

/// An event of a stream type some projection consumes.
#[derive(Debug, Clone)]
pub(crate) enum Decoded {
    /// From an `order-<uuid>` stream.
    Order(OrderEvent),
    /// From an `inventory-<sku>` stream.
    Stock(InventoryEvent),
    /// From a `product-<sku>` stream.
    Product(ProductEvent),
}

/// Decodes the stored parts of an event of `stream_type` (upcasting old
/// schema versions). `None` for a stream type no projection consumes.
pub(crate) fn decode_parts(
    stream_type: &str,
    event_type: &str,
    schema_version: u32,
    data: Value,
) -> Option<Result<Decoded, EventDecodeError>> {
    Some(match StreamKind::parse(stream_type)? {
        StreamKind::Order => {
            OrderEvent::from_stored(event_type, schema_version, data).map(Decoded::Order)
        }
        StreamKind::Inventory => {
            InventoryEvent::from_stored(event_type, schema_version, data).map(Decoded::Stock)
        }
        StreamKind::Product => {
            ProductEvent::from_stored(event_type, schema_version, data).map(Decoded::Product)
        }
        StreamKind::Payment | StreamKind::Shipment | StreamKind::Saga => return None,
    })
}

/// Decodes `event` (of a consumed stream type) from `data`, its payload:
/// the live path passes a copy, the bulk path moves it out of the event.
pub(crate) fn decode(event: &RecordedEvent, data: Value) -> Result<Decoded, ProjectionError> {
    let decoded = decode_parts(
        &event.stream_type,
        &event.event_type,
        event.schema_version,
        data,
    );
    match decoded {
        Some(Ok(decoded)) => Ok(decoded),
        Some(Err(source)) => Err(ProjectionError::Decode {
            stream_id: event.stream_id.clone(),
            version: event.version,
            position: event.global_position,
            source,
        }),
        None => Err(inconsistent(
            event,
            format!("no projection reads {} streams", event.stream_type),
        )),
    }
}

/// A [`ProjectionError::Inconsistent`] about `event`.
pub(crate) fn inconsistent(event: &RecordedEvent, message: String) -> ProjectionError {
    ProjectionError::Inconsistent {
        stream_id: event.stream_id.clone(),
        version: event.version,
        position: event.global_position,
        message,
    }
}
