//! Which events of other aggregates concern a saga, and what they say.

use uuid::Uuid;

use super::Fact;
use crate::{InventoryEvent, OrderEvent, PaymentEvent, ShipmentEvent};

impl Fact {
    /// The order an inventory event concerns and what it says; `None` for
    /// stock receipts, which concern no order.
    pub fn from_inventory(event: &InventoryEvent) -> Option<(Uuid, Fact)> {
        Some(match event {
            InventoryEvent::StockReceived { .. } => return None,
            InventoryEvent::StockReserved {
                sku,
                order_id,
                quantity,
            } => (
                *order_id,
                Fact::StockReserved {
                    sku: sku.clone(),
                    quantity: *quantity,
                },
            ),
            InventoryEvent::StockReservationRejected {
                sku,
                order_id,
                requested,
                available,
            } => (
                *order_id,
                Fact::StockReservationRejected {
                    sku: sku.clone(),
                    requested: *requested,
                    available: *available,
                },
            ),
            InventoryEvent::StockReleased { sku, order_id, .. } => {
                (*order_id, Fact::StockReleased { sku: sku.clone() })
            }
            InventoryEvent::StockCommitted { sku, order_id, .. } => {
                (*order_id, Fact::StockCommitted { sku: sku.clone() })
            }
        })
    }

    /// The order a payment event concerns and what it says.
    pub fn from_payment(event: &PaymentEvent) -> (Uuid, Fact) {
        match event {
            PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                authorization_id,
                ..
            } => (
                *order_id,
                Fact::PaymentAuthorized {
                    authorization_id: authorization_id.clone(),
                    amount: *amount,
                },
            ),
            PaymentEvent::PaymentDeclined { order_id, reason } => (
                *order_id,
                Fact::PaymentDeclined {
                    reason: reason.clone(),
                },
            ),
            PaymentEvent::PaymentCaptured { order_id, amount } => {
                (*order_id, Fact::PaymentCaptured { amount: *amount })
            }
            PaymentEvent::PaymentVoided { order_id } => (*order_id, Fact::PaymentVoided),
            PaymentEvent::PaymentRefunded { order_id, amount } => {
                (*order_id, Fact::PaymentRefunded { amount: *amount })
            }
        }
    }

    /// The order a shipment event concerns and what it says.
    pub fn from_shipment(event: &ShipmentEvent) -> (Uuid, Fact) {
        match event {
            ShipmentEvent::ShipmentRequested { order_id, .. } => {
                (*order_id, Fact::ShipmentRequested)
            }
            ShipmentEvent::ShipmentRejected { order_id, reason } => (
                *order_id,
                Fact::ShipmentRejected {
                    reason: reason.clone(),
                },
            ),
            ShipmentEvent::ShipmentShipped { order_id, .. } => (*order_id, Fact::ShipmentShipped),
            ShipmentEvent::ShipmentDelivered { order_id } => (*order_id, Fact::ShipmentDelivered),
        }
    }

    /// The order an order event concerns and what it says; `None` for
    /// `OrderPlaced`, which starts a saga instead.
    pub fn from_order(event: &OrderEvent) -> Option<(Uuid, Fact)> {
        Some(match event {
            OrderEvent::OrderPlaced { .. } => return None,
            OrderEvent::OrderConfirmed { order_id } => (*order_id, Fact::OrderConfirmed),
            OrderEvent::OrderShipped {
                order_id,
                carrier,
                tracking_number,
            } => (
                *order_id,
                Fact::OrderShipped {
                    carrier: carrier.clone(),
                    tracking_number: tracking_number.clone(),
                },
            ),
            OrderEvent::OrderDelivered { order_id } => (*order_id, Fact::OrderDelivered),
            OrderEvent::OrderCancelled { order_id, reason } => {
                (*order_id, Fact::OrderCancelled { reason: *reason })
            }
        })
    }
}
