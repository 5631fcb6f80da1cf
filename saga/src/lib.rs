//! The order fulfilment saga, orchestrated.
//!
//! Every placed order gets a saga (stream `saga-<order id>`, its logic in
//! [`domain::saga`]): reserve stock for every line → authorise payment →
//! request shipment → capture → confirm; after the operator ships,
//! commit the stock; after delivery, complete. A failed or timed-out step
//! undoes what succeeded, newest first, and cancels the order with a reason.
//!
//! - [`Orchestrator`]: the `saga` role of `fulcrum serve` (consumer group
//!   `<prefix>.saga`), with its timer for deadlines and retries;
//! - [`webhook`]: records the payment gateway's asynchronous answers;
//! - [`gateway`]: the [`gateway::PaymentGateway`] trait and the sandbox;
//! - [`admin`]: what operators see and do (list, history, retry, abort).

pub mod admin;
mod config;
mod error;
mod facts;
pub mod gateway;
mod orchestrator;
mod steps;
mod store;
pub mod webhook;

pub use config::SagaConfig;
pub use error::SagaError;
pub use orchestrator::{LocalFacts, Orchestrator, SagaProbe};
pub use steps::{gateway_keys, StepError};
pub use store::{stream_id, Cause, Changed, SagaStore};
