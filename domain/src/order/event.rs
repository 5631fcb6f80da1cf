//! What an order records, and the value types those events carry.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::impl_domain_event;
use crate::Address;

/// One line of a placed order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The product ordered.
    pub sku: String,
    /// Units ordered, 1 to 1000.
    pub quantity: i64,
    /// Price of one unit in minor units of the order's currency.
    pub unit_price: i64,
}

/// Where an order is in its life: `placed → confirmed → shipped → delivered`,
/// or `cancelled` from placed or confirmed. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted; the saga is reserving stock and taking payment.
    Placed,
    /// Stock reserved, payment captured, shipment requested.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer.
    Delivered,
    /// Stopped before shipping; see the cancel reason.
    Cancelled,
}

impl OrderStatus {
    /// The wire name, e.g. `"placed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order was cancelled. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// A line could not be reserved.
    OutOfStock,
    /// The payment gateway declined.
    PaymentDeclined,
    /// The payment gateway did not answer before the deadline.
    PaymentTimeout,
    /// The shipment was refused (e.g. unsupported destination).
    ShipmentRejected,
    /// The customer, or an operator on their behalf, cancelled.
    CustomerCancelled,
}

impl CancelReason {
    /// The wire name, e.g. `"out_of_stock"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentTimeout => "payment_timeout",
            Self::ShipmentRejected => "shipment_rejected",
            Self::CustomerCancelled => "customer_cancelled",
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an order records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum OrderEvent {
    /// A customer placed the order.
    OrderPlaced {
        /// The order.
        order_id: Uuid,
        /// Who placed it (the JWT subject).
        customer_id: String,
        /// What was ordered, at what price.
        lines: Vec<OrderLine>,
        /// Sum of quantity × unit price over the lines, in minor units.
        total: i64,
        /// ISO 4217 code shared by every line.
        currency: String,
        /// Where to ship.
        shipping_address: Address,
        /// Payment method token for the gateway.
        payment_method: String,
    },
    /// Stock is reserved and payment captured.
    OrderConfirmed {
        /// The order.
        order_id: Uuid,
    },
    /// The goods left with a carrier.
    OrderShipped {
        /// The order.
        order_id: Uuid,
        /// Carrier name.
        carrier: String,
        /// Carrier's tracking number.
        tracking_number: String,
    },
    /// The customer received the goods.
    OrderDelivered {
        /// The order.
        order_id: Uuid,
    },
    /// The order was stopped before shipping.
    OrderCancelled {
        /// The order.
        order_id: Uuid,
        /// Why.
        reason: CancelReason,
    },
}

impl_domain_event!(OrderEvent, &[], {
    OrderPlaced = 1,
    OrderConfirmed = 1,
    OrderShipped = 1,
    OrderDelivered = 1,
    OrderCancelled = 1,
});
