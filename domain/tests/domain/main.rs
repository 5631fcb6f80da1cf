//! Given/when/then tests of every aggregate's rules, plus event encoding.
#![allow(clippy::unwrap_used)]

mod given;

mod encoding;
mod inventory;
mod order;
mod payment;
mod product;
mod saga;
mod shipment;
mod upcasting;
