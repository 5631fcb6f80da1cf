//! What the events of an order's other streams tell its saga.

use commands::Appended;
use domain::order::OrderEvent;
use domain::saga::{Fact, SagaCommand, SourceRef};
use domain::{DomainEvent, InventoryEvent, PaymentEvent, ShipmentEvent, StreamKind};
use uuid::Uuid;

/// The saga an event of a `stream_type` stream concerns and the fact it
/// states; `None` for events that state no fact (`OrderPlaced` starts a
/// saga instead; stock receipts; other stream types).
pub(crate) fn fact_of(
    stream_type: &str,
    event_type: &str,
    version: u32,
    data: serde_json::Value,
) -> Result<Option<(Uuid, Fact)>, domain::EventDecodeError> {
    let Some(kind) = StreamKind::parse(stream_type) else {
        return Ok(None);
    };
    Ok(match kind {
        StreamKind::Order => Fact::from_order(&OrderEvent::from_stored(event_type, version, data)?),
        StreamKind::Inventory => {
            Fact::from_inventory(&InventoryEvent::from_stored(event_type, version, data)?)
        }
        StreamKind::Payment => Some(Fact::from_payment(&PaymentEvent::from_stored(
            event_type, version, data,
        )?)),
        StreamKind::Shipment => Some(Fact::from_shipment(&ShipmentEvent::from_stored(
            event_type, version, data,
        )?)),
        StreamKind::Product | StreamKind::Saga => None,
    })
}

/// The saga an `OrderPlaced` (of an `order` stream) starts, and the command
/// that starts it under `correlation_id`; `None` for any other event.
pub(crate) fn start_of(
    stream_type: &str,
    event_type: &str,
    version: u32,
    data: serde_json::Value,
    correlation_id: impl FnOnce() -> String,
) -> Result<Option<(Uuid, SagaCommand)>, domain::EventDecodeError> {
    if StreamKind::Order != stream_type || event_type != "OrderPlaced" {
        return Ok(None);
    }
    let OrderEvent::OrderPlaced {
        order_id,
        customer_id,
        lines,
        total,
        currency,
        shipping_address,
        payment_method,
    } = OrderEvent::from_stored(event_type, version, data)?
    else {
        return Ok(None);
    };
    let start = SagaCommand::Start {
        order_id,
        customer_id,
        lines,
        total,
        currency,
        shipping_address,
        payment_method,
        correlation_id: correlation_id(),
    };
    Ok(Some((order_id, start)))
}

/// Where a fact this process appended came from, as the saga records it.
pub(crate) fn source_of(event: &Appended) -> SourceRef {
    SourceRef {
        event_id: event.event_id,
        stream_id: event.stream_id.clone(),
        version: event.version,
        event_type: event.event_type.clone(),
    }
}
