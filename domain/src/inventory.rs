//! Stock of one SKU (stream `inventory-<sku>`): what is on hand and which
//! orders hold reservations against it.
//!
//! Reservations are per order and all-or-nothing. A confirmed order keeps its
//! reservation until it ships, when the stock is committed (leaves on hand).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::impl_domain_event;
use crate::validate::{validate_positive_amount, validate_sku, Violations};
use crate::{Aggregate, DomainError};

/// What can be asked of a SKU's stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum InventoryCommand {
    /// Adds received units to stock on hand.
    ReceiveStock {
        /// The SKU this stream holds.
        sku: String,
        /// Units received; positive.
        quantity: i64,
    },
    /// Reserves units for an order, all or nothing. When fewer units are
    /// available the answer is a `StockReservationRejected` event, not an
    /// error. A no-op if the order already holds a reservation here.
    ReserveStock {
        /// The SKU this stream holds (named so that a rejection on a SKU never
        /// stocked still says which SKU it was).
        sku: String,
        /// The order reserving.
        order_id: Uuid,
        /// Units wanted; positive.
        quantity: i64,
    },
    /// Gives back everything the order holds. A no-op if it holds nothing.
    ReleaseStock {
        /// The order releasing.
        order_id: Uuid,
    },
    /// The order shipped: its reserved units leave stock on hand. Conflict if
    /// the order holds nothing.
    CommitStock {
        /// The order that shipped.
        order_id: Uuid,
    },
}

/// What a SKU's stock records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum InventoryEvent {
    /// Units arrived.
    StockReceived {
        /// The SKU.
        sku: String,
        /// Units received.
        quantity: i64,
    },
    /// Units were set aside for an order.
    StockReserved {
        /// The SKU.
        sku: String,
        /// The order holding them.
        order_id: Uuid,
        /// Units reserved.
        quantity: i64,
    },
    /// An order asked for more units than were available; nothing was reserved.
    StockReservationRejected {
        /// The SKU.
        sku: String,
        /// The order that asked.
        order_id: Uuid,
        /// Units asked for.
        requested: i64,
        /// Units available when asked.
        available: i64,
    },
    /// An order's reservation was given back.
    StockReleased {
        /// The SKU.
        sku: String,
        /// The order that held them.
        order_id: Uuid,
        /// Units given back.
        quantity: i64,
    },
    /// An order's reserved units shipped and left stock on hand.
    StockCommitted {
        /// The SKU.
        sku: String,
        /// The order that shipped.
        order_id: Uuid,
        /// Units that left.
        quantity: i64,
    },
}

impl_domain_event!(InventoryEvent, &[], {
    StockReceived = 1,
    StockReserved = 1,
    StockReservationRejected = 1,
    StockReleased = 1,
    StockCommitted = 1,
});

/// A SKU's stock. The default value is a SKU never stocked (empty `sku`).
///
/// Invariants kept by `decide`: `0 <= reserved <= on_hand`, and `reserved` is
/// the sum of `reservations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The SKU; empty until the first event.
    pub sku: String,
    /// Units physically in stock, reserved or not.
    pub on_hand: i64,
    /// Units held by reservations (the sum of `reservations`).
    pub reserved: i64,
    /// Units held per order.
    pub reservations: BTreeMap<Uuid, i64>,
}

impl Inventory {
    /// Units that can still be reserved: `on_hand - reserved`.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// Units the order holds, if any.
    pub fn reservation(&self, order_id: Uuid) -> Option<i64> {
        self.reservations.get(&order_id).copied()
    }

    fn check_sku(&self, sku: &str) -> Result<(), DomainError> {
        if self.sku.is_empty() || self.sku == sku {
            Ok(())
        } else {
            Err(DomainError::conflict(format!(
                "stream holds stock of {}, not {sku}",
                self.sku
            )))
        }
    }

    fn receive(&self, sku: &str, quantity: i64) -> Result<Vec<InventoryEvent>, DomainError> {
        let mut violations = Violations::new();
        violations.check("sku", validate_sku(sku));
        violations.check("quantity", validate_positive_amount(quantity));
        violations.into_result()?;
        self.check_sku(sku)?;
        if self.on_hand.checked_add(quantity).is_none() {
            return Err(DomainError::invalid(
                "quantity",
                "would overflow the stock on hand",
            ));
        }
        Ok(vec![InventoryEvent::StockReceived {
            sku: sku.to_owned(),
            quantity,
        }])
    }

    fn reserve(
        &self,
        sku: &str,
        order_id: Uuid,
        quantity: i64,
    ) -> Result<Vec<InventoryEvent>, DomainError> {
        let mut violations = Violations::new();
        violations.check("sku", validate_sku(sku));
        violations.check("quantity", validate_positive_amount(quantity));
        violations.into_result()?;
        self.check_sku(sku)?;
        if self.reservations.contains_key(&order_id) {
            return Ok(vec![]);
        }
        let available = self.available();
        let sku = sku.to_owned();
        if quantity > available {
            return Ok(vec![InventoryEvent::StockReservationRejected {
                sku,
                order_id,
                requested: quantity,
                available,
            }]);
        }
        Ok(vec![InventoryEvent::StockReserved {
            sku,
            order_id,
            quantity,
        }])
    }
}

impl Aggregate for Inventory {
    const KIND: crate::StreamKind = crate::StreamKind::Inventory;
    type Command = InventoryCommand;
    type Event = InventoryEvent;

    fn decide(&self, command: &InventoryCommand) -> Result<Vec<InventoryEvent>, DomainError> {
        match command {
            InventoryCommand::ReceiveStock { sku, quantity } => self.receive(sku, *quantity),
            InventoryCommand::ReserveStock {
                sku,
                order_id,
                quantity,
            } => self.reserve(sku, *order_id, *quantity),
            InventoryCommand::ReleaseStock { order_id } => Ok(self
                .reservation(*order_id)
                .map(|quantity| InventoryEvent::StockReleased {
                    sku: self.sku.clone(),
                    order_id: *order_id,
                    quantity,
                })
                .into_iter()
                .collect()),
            InventoryCommand::CommitStock { order_id } => {
                let quantity = self.reservation(*order_id).ok_or_else(|| {
                    DomainError::conflict(format!(
                        "order {order_id} holds no reservation of {}",
                        self.sku
                    ))
                })?;
                Ok(vec![InventoryEvent::StockCommitted {
                    sku: self.sku.clone(),
                    order_id: *order_id,
                    quantity,
                }])
            }
        }
    }

    fn evolve(mut self, event: &InventoryEvent) -> Self {
        // Arithmetic saturates only to keep `evolve` total; `decide` never
        // records events that would need it.
        match event {
            InventoryEvent::StockReceived { sku, quantity } => {
                self.sku.clone_from(sku);
                self.on_hand = self.on_hand.saturating_add(*quantity);
            }
            InventoryEvent::StockReserved {
                sku,
                order_id,
                quantity,
            } => {
                self.sku.clone_from(sku);
                self.reservations.insert(*order_id, *quantity);
                self.reserved = self.reserved.saturating_add(*quantity);
            }
            InventoryEvent::StockReservationRejected { sku, .. } => {
                self.sku.clone_from(sku);
            }
            InventoryEvent::StockReleased {
                order_id, quantity, ..
            } => {
                self.reservations.remove(order_id);
                self.reserved = self.reserved.saturating_sub(*quantity);
            }
            InventoryEvent::StockCommitted {
                order_id, quantity, ..
            } => {
                self.reservations.remove(order_id);
                self.reserved = self.reserved.saturating_sub(*quantity);
                self.on_hand = self.on_hand.saturating_sub(*quantity);
            }
        }
        self
    }
}
