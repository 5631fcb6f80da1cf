//! Fulcrum's domain: aggregates, commands and events as plain data.
//!
//! Every aggregate follows the same shape (see [`Aggregate`]): a pure
//! `decide(&state, &command)` that returns the events to record or a
//! [`DomainError`], and a pure `evolve(state, &event)` fold that never fails.
//! Nothing in this crate performs IO; loading, appending and publishing live in
//! the crates above it.
//!
//! Events carry their type name and schema version ([`DomainEvent`]); old
//! schema versions are rewritten to the current one by [`upcast`] before they
//! are deserialised.

mod address;
mod aggregate;
mod error;
mod event;
pub mod inventory;
mod kind;
pub mod order;
pub mod payment;
pub mod product;
pub mod saga;
pub mod schemas;
pub mod shipment;
pub mod upcast;
mod validate;

pub use address::Address;
pub use aggregate::{stream_id, Aggregate};
pub use error::{DomainError, FieldError};
pub use event::{DomainEvent, EventDecodeError};
pub use inventory::{Inventory, InventoryCommand, InventoryEvent};
pub use kind::StreamKind;
pub use order::{
    CancelReason, Order, OrderCommand, OrderEvent, OrderLine, OrderStatus, PricedLine,
};
pub use payment::{Payment, PaymentCommand, PaymentEvent, PaymentStatus};
pub use product::{Product, ProductCommand, ProductEvent};
pub use saga::{Saga, SagaCommand, SagaEvent, SagaStatus};
pub use shipment::{Shipment, ShipmentCommand, ShipmentEvent, ShipmentStatus};
pub use upcast::Upcaster;
pub use validate::{
    validate_country, validate_currency, validate_positive_amount, validate_sku, validate_text,
    Violations, MAX_TEXT_CHARS,
};
