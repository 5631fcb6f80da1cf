//! What the events of an order's other streams tell its saga.

use domain::order::OrderEvent;
use domain::saga::Fact;
use domain::{DomainEvent, InventoryEvent, PaymentEvent, ShipmentEvent};
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
    Ok(match stream_type {
        "order" => Fact::from_order(&OrderEvent::from_stored(event_type, version, data)?),
        "inventory" => {
            Fact::from_inventory(&InventoryEvent::from_stored(event_type, version, data)?)
        }
        "payment" => Some(Fact::from_payment(&PaymentEvent::from_stored(
            event_type, version, data,
        )?)),
        "shipment" => Some(Fact::from_shipment(&ShipmentEvent::from_stored(
            event_type, version, data,
        )?)),
        _ => None,
    })
}
