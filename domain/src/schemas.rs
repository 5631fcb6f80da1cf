//! The JSON Schemas of the commands and events, as committed under
//! `schemas/` (and served at `GET /schemas/{path}`). A drift test in
//! `domain/tests/schemas.rs` keeps the files equal to these.

use schemars::schema::RootSchema;
use schemars::schema_for;

use crate::{
    InventoryCommand, InventoryEvent, OrderCommand, OrderEvent, PaymentCommand, PaymentEvent,
    ProductCommand, ProductEvent, SagaEvent, ShipmentCommand, ShipmentEvent,
};

/// Every command and event schema, by its path under `schemas/`.
pub fn all() -> Vec<(&'static str, RootSchema)> {
    vec![
        ("events/product.json", schema_for!(ProductEvent)),
        ("events/inventory.json", schema_for!(InventoryEvent)),
        ("events/order.json", schema_for!(OrderEvent)),
        ("events/payment.json", schema_for!(PaymentEvent)),
        ("events/shipment.json", schema_for!(ShipmentEvent)),
        ("events/saga.json", schema_for!(SagaEvent)),
        ("commands/product.json", schema_for!(ProductCommand)),
        ("commands/inventory.json", schema_for!(InventoryCommand)),
        ("commands/order.json", schema_for!(OrderCommand)),
        ("commands/payment.json", schema_for!(PaymentCommand)),
        ("commands/shipment.json", schema_for!(ShipmentCommand)),
    ]
}
