//! What can be asked of an order, and the input checks for placing one.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{CancelReason, OrderLine};
use crate::validate::{
    validate_currency, validate_positive_amount, validate_sku, validate_text, Violations,
    MAX_TEXT_CHARS,
};
use crate::{Address, DomainError};

/// Most lines an order may have.
pub const MAX_LINES: usize = 50;
/// Most units of one SKU an order line may have.
pub const MAX_LINE_QUANTITY: i64 = 1000;

/// An order line as requested, priced from the catalogue by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PricedLine {
    /// The product; 1 to 64 characters of `[A-Za-z0-9_-]`.
    pub sku: String,
    /// Units, 1 to 1000.
    pub quantity: i64,
    /// The catalogue's unit price in minor units; positive.
    pub unit_price: i64,
    /// The catalogue's ISO 4217 code; the same on every line.
    pub currency: String,
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum OrderCommand {
    /// Places a new order. Conflict if the order already exists.
    PlaceOrder {
        /// The new order's id (not nil).
        order_id: Uuid,
        /// Who places it; non-blank.
        customer_id: String,
        /// 1 to 50 lines, distinct SKUs, one currency.
        lines: Vec<PricedLine>,
        /// Where to ship.
        shipping_address: Address,
        /// Payment method token; non-blank.
        payment_method: String,
    },
    /// Marks a placed order confirmed (the saga's last happy-path step).
    ConfirmOrder,
    /// Records that a confirmed order left with a carrier.
    ShipOrder {
        /// Carrier name; non-blank.
        carrier: String,
        /// Tracking number; non-blank.
        tracking_number: String,
    },
    /// Records that a shipped order arrived.
    DeliverOrder,
    /// Cancels a placed or confirmed order.
    CancelOrder {
        /// Why.
        reason: CancelReason,
    },
}

/// A valid `PlaceOrder`'s derived values.
pub(super) struct Priced {
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub currency: String,
}

/// Checks every input of `PlaceOrder`, reporting all invalid fields by JSON
/// path, and prices the order.
pub(super) fn price_order(
    order_id: Uuid,
    customer_id: &str,
    lines: &[PricedLine],
    shipping_address: &Address,
    payment_method: &str,
) -> Result<Priced, DomainError> {
    let mut violations = Violations::new();
    if order_id.is_nil() {
        violations.add("order_id", "must not be the nil UUID");
    }
    violations.check("customer_id", validate_text(customer_id, MAX_TEXT_CHARS));
    validate_lines(lines, &mut violations);
    shipping_address.validate("shipping_address", &mut violations);
    violations.check(
        "payment_method",
        validate_text(payment_method, MAX_TEXT_CHARS),
    );
    violations.into_result()?;

    let total = lines
        .iter()
        .try_fold(0_i64, |sum, line| {
            line.quantity
                .checked_mul(line.unit_price)
                .and_then(|amount| sum.checked_add(amount))
        })
        .ok_or_else(|| DomainError::invalid("lines", "order total is too large"))?;
    Ok(Priced {
        lines: lines
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
            })
            .collect(),
        total,
        currency: lines
            .first()
            .map(|line| line.currency.clone())
            .unwrap_or_default(),
    })
}

fn validate_lines(lines: &[PricedLine], violations: &mut Violations) {
    if lines.is_empty() || lines.len() > MAX_LINES {
        violations.add("lines", format!("must have 1 to {MAX_LINES} lines"));
    }
    let order_currency = lines.first().map(|line| line.currency.as_str());
    let mut seen = BTreeSet::new();
    for (index, line) in lines.iter().enumerate() {
        let path = |field: &str| format!("lines[{index}].{field}");
        violations.check(path("sku"), validate_sku(&line.sku));
        if !seen.insert(line.sku.as_str()) {
            violations.add(path("sku"), "appears on an earlier line");
        }
        if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
            violations.add(
                path("quantity"),
                format!("must be 1 to {MAX_LINE_QUANTITY}"),
            );
        }
        violations.check(
            path("unit_price"),
            validate_positive_amount(line.unit_price),
        );
        violations.check(path("currency"), validate_currency(&line.currency));
        if Some(line.currency.as_str()) != order_currency {
            violations.add(
                path("currency"),
                "differs from the first line's; an order has one currency",
            );
        }
    }
}
