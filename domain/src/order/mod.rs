//! A customer's order (stream `order-<uuid>`): what was bought, for how much,
//! and where it is in `placed → confirmed → shipped → delivered` (or
//! `cancelled`).
//!
//! Repeating the transition into the current status (confirm a confirmed
//! order, ship a shipped one with the same carrier and tracking number,
//! deliver a delivered one, cancel a cancelled one) is a no-op; every other
//! transition the status does not allow is a Conflict. Any command but
//! `PlaceOrder` on an order never placed is NotFound.

mod command;
mod event;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use command::{OrderCommand, PricedLine, MAX_LINES, MAX_LINE_QUANTITY};
pub use event::{CancelReason, OrderEvent, OrderLine, OrderStatus};

use crate::validate::{validate_text, Violations, MAX_TEXT_CHARS};
use crate::{Address, Aggregate, DomainError};

/// An order's state. The default value (`status == None`) is an order never
/// placed; `status` is `Some` from `OrderPlaced` on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id; nil until placed.
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// `None` until placed.
    pub status: Option<OrderStatus>,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Sum over the lines, in minor units of `currency`.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where to ship; `None` until placed.
    pub shipping_address: Option<Address>,
    /// Payment method token.
    pub payment_method: String,
    /// Carrier, once shipped.
    pub carrier: Option<String>,
    /// Tracking number, once shipped.
    pub tracking_number: Option<String>,
    /// Why it was cancelled, once cancelled.
    pub cancel_reason: Option<CancelReason>,
}

impl Order {
    /// The current status, or NotFound if the order was never placed.
    fn placed_status(&self) -> Result<OrderStatus, DomainError> {
        self.status.ok_or_else(|| DomainError::not_found("order"))
    }

    fn forbidden(&self, status: OrderStatus, action: &str) -> DomainError {
        DomainError::conflict(format!(
            "order {} is {status} and cannot be {action}",
            self.order_id
        ))
    }

    fn place(
        &self,
        order_id: Uuid,
        customer_id: &str,
        lines: &[PricedLine],
        shipping_address: &Address,
        payment_method: &str,
    ) -> Result<Vec<OrderEvent>, DomainError> {
        let priced = command::price_order(
            order_id,
            customer_id,
            lines,
            shipping_address,
            payment_method,
        )?;
        if self.status.is_some() {
            return Err(DomainError::conflict(format!(
                "order {order_id} already exists"
            )));
        }
        Ok(vec![OrderEvent::OrderPlaced {
            order_id,
            customer_id: customer_id.to_owned(),
            lines: priced.lines,
            total: priced.total,
            currency: priced.currency,
            shipping_address: shipping_address.clone(),
            payment_method: payment_method.to_owned(),
        }])
    }

    fn ship(&self, carrier: &str, tracking_number: &str) -> Result<Vec<OrderEvent>, DomainError> {
        let mut violations = Violations::new();
        violations.check("carrier", validate_text(carrier, MAX_TEXT_CHARS));
        violations.check(
            "tracking_number",
            validate_text(tracking_number, MAX_TEXT_CHARS),
        );
        violations.into_result()?;
        match self.placed_status()? {
            OrderStatus::Confirmed => Ok(vec![OrderEvent::OrderShipped {
                order_id: self.order_id,
                carrier: carrier.to_owned(),
                tracking_number: tracking_number.to_owned(),
            }]),
            OrderStatus::Shipped
                if self.carrier.as_deref() == Some(carrier)
                    && self.tracking_number.as_deref() == Some(tracking_number) =>
            {
                Ok(vec![])
            }
            OrderStatus::Shipped => Err(DomainError::conflict(format!(
                "order {} already shipped with other carrier details",
                self.order_id
            ))),
            status => Err(self.forbidden(status, "shipped")),
        }
    }
}

impl Aggregate for Order {
    const KIND: crate::StreamKind = crate::StreamKind::Order;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        use OrderStatus::{Cancelled, Confirmed, Delivered, Placed, Shipped};
        let order_id = self.order_id;
        match command {
            OrderCommand::PlaceOrder {
                order_id,
                customer_id,
                lines,
                shipping_address,
                payment_method,
            } => self.place(
                *order_id,
                customer_id,
                lines,
                shipping_address,
                payment_method,
            ),
            OrderCommand::ConfirmOrder => match self.placed_status()? {
                Placed => Ok(vec![OrderEvent::OrderConfirmed { order_id }]),
                Confirmed => Ok(vec![]),
                status => Err(self.forbidden(status, "confirmed")),
            },
            OrderCommand::ShipOrder {
                carrier,
                tracking_number,
            } => self.ship(carrier, tracking_number),
            OrderCommand::DeliverOrder => match self.placed_status()? {
                Shipped => Ok(vec![OrderEvent::OrderDelivered { order_id }]),
                Delivered => Ok(vec![]),
                status => Err(self.forbidden(status, "delivered")),
            },
            OrderCommand::CancelOrder { reason } => match self.placed_status()? {
                Placed | Confirmed => Ok(vec![OrderEvent::OrderCancelled {
                    order_id,
                    reason: *reason,
                }]),
                Cancelled => Ok(vec![]),
                status => Err(self.forbidden(status, "cancelled")),
            },
        }
    }

    fn evolve(self, event: &OrderEvent) -> Self {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
                currency,
                shipping_address,
                payment_method,
            } => Self {
                order_id: *order_id,
                customer_id: customer_id.clone(),
                status: Some(OrderStatus::Placed),
                lines: lines.clone(),
                total: *total,
                currency: currency.clone(),
                shipping_address: Some(shipping_address.clone()),
                payment_method: payment_method.clone(),
                ..Self::default()
            },
            OrderEvent::OrderConfirmed { .. } => Self {
                status: Some(OrderStatus::Confirmed),
                ..self
            },
            OrderEvent::OrderShipped {
                carrier,
                tracking_number,
                ..
            } => Self {
                status: Some(OrderStatus::Shipped),
                carrier: Some(carrier.clone()),
                tracking_number: Some(tracking_number.clone()),
                ..self
            },
            OrderEvent::OrderDelivered { .. } => Self {
                status: Some(OrderStatus::Delivered),
                ..self
            },
            OrderEvent::OrderCancelled { reason, .. } => Self {
                status: Some(OrderStatus::Cancelled),
                cancel_reason: Some(*reason),
                ..self
            },
        }
    }
}
