//! The payment gateway port, and the in-process sandbox behind it.
//!
//! The saga reaches payment providers only through [`PaymentGateway`]. As with a
//! real provider, an authorisation is answered asynchronously:
//! [`PaymentGateway::authorize`] only accepts the request, the answer arrives
//! later as a [`Callback`] (the webhook), and [`PaymentGateway::status`] asks
//! for it by idempotency key when a callback may have been lost.
//!
//! [`SandboxGateway`] answers by payment-method token (see [`SandboxGateway`])
//! and records every movement of money, so tests can check that no retry ever
//! moved money twice. Its books live in memory ([`MemoryBooks`], one process)
//! or in Postgres ([`PgBooks`]: every process of a deployment shares them, so
//! any process can capture, void or refund what another authorised).

mod sandbox;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sandbox::{
    Accepted, Authorization, Books, MemoryBooks, Movement, PgBooks, Rule, SandboxConfig,
    SandboxGateway,
};

/// What the saga asks the gateway to authorise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// Identifies the request: repeats with the same key are the same request.
    pub idempotency_key: String,
    /// The order being paid for; echoed in the [`Callback`].
    pub order_id: Uuid,
    /// Amount to authorise, in minor units; must be positive.
    pub amount: i64,
    /// ISO 4217 currency of `amount`.
    pub currency: String,
    /// The payment-method token the customer gave.
    pub payment_method: String,
}

/// The gateway's final answer to an authorisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayAnswer {
    /// The amount is held; capture, void and refund refer to it by `authorization_id`.
    Approved {
        /// The gateway's id of the authorisation.
        authorization_id: String,
    },
    /// Nothing is held; the payment cannot go ahead.
    Declined {
        /// Why, in the gateway's words.
        reason: String,
    },
}

/// An asynchronous answer, as a real gateway's webhook would deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The idempotency key of the answered request.
    pub idempotency_key: String,
    /// The order of the answered request.
    pub order_id: Uuid,
    /// The answer.
    pub answer: GatewayAnswer,
}

/// What the gateway knows of a request, asked by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStatus {
    /// No request with this key was accepted (a failed attempt leaves none).
    Unknown,
    /// Accepted, not answered yet.
    Pending,
    /// Answered; the answer never changes afterwards.
    Answered(GatewayAnswer),
}

/// Operations, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`PaymentGateway::authorize`].
    Authorize,
    /// [`PaymentGateway::capture`].
    Capture,
    /// [`PaymentGateway::void`].
    Void,
    /// [`PaymentGateway::refund`].
    Refund,
}

/// Why a gateway call did not take effect. Either way, no money moved.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// Worth retrying (network, 5xx, rate limit).
    #[error("gateway unavailable: {0}")]
    Transient(String),
    /// Retrying the same request cannot help (e.g. unknown authorisation).
    #[error("gateway refused: {0}")]
    Refused(String),
}

/// A payment provider, as the saga sees it.
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Starts an authorisation. Ok means the request is accepted; the answer comes later as a Callback.
    /// Idempotent by `request.idempotency_key`: a repeat of an answered request re-sends its Callback; a repeat of a pending one does nothing new.
    async fn authorize(&self, request: &AuthorizationRequest) -> Result<(), GatewayError>;
    /// The status of an authorisation by its idempotency key.
    async fn status(&self, idempotency_key: &str) -> Result<RequestStatus, GatewayError>;
    /// Takes `amount` of an approved authorisation. Idempotent by `idempotency_key`.
    async fn capture(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError>;
    /// Releases an uncaptured authorisation. Idempotent by `idempotency_key`.
    async fn void(&self, idempotency_key: &str, authorization_id: &str)
        -> Result<(), GatewayError>;
    /// Returns `amount` of a capture. Idempotent by `idempotency_key` (a repeat with the same key moves no more money).
    async fn refund(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError>;
}
