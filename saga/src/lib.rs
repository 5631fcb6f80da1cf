//! The order fulfilment saga orchestrator, and the payment gateway it drives.

pub mod gateway;
