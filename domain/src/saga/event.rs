//! What a saga records (stream `saga-<order uuid>`), and the value types
//! those events carry: steps, facts and where a fact came from.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::impl_domain_event;
use crate::{Address, CancelReason, OrderLine};

/// One thing the saga asks of another aggregate (or of the payment
/// gateway). Serialised as `{"name": "reserve_stock", "sku": "..."}`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Step {
    /// Reserve one line's units on its SKU's stock.
    ReserveStock {
        /// The line's SKU.
        sku: String,
    },
    /// Ask the gateway to authorise the order total.
    AuthorizePayment,
    /// Ask for the goods to be shipped.
    RequestShipment,
    /// Take the authorised amount.
    CapturePayment,
    /// Mark the order confirmed.
    ConfirmOrder,
    /// The order shipped: its reserved units leave stock.
    CommitStock {
        /// The line's SKU.
        sku: String,
    },
    /// Record that the shipment left with the carrier.
    ShipShipment,
    /// Record that the shipment arrived.
    DeliverShipment,
    /// Compensation: release an uncaptured authorisation.
    VoidPayment,
    /// Compensation: return captured money.
    RefundPayment,
    /// Compensation: give a line's reserved units back.
    ReleaseStock {
        /// The line's SKU.
        sku: String,
    },
    /// Compensation: cancel the order with the saga's reason.
    CancelOrder,
}

/// Whether a step moves the order forward or undoes what succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Moves the order forward.
    Action,
    /// Undoes an earlier action.
    Compensation,
}

impl Step {
    /// The step's name without its SKU, e.g. `"reserve_stock"`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::ReserveStock { .. } => "reserve_stock",
            Step::AuthorizePayment => "authorize_payment",
            Step::RequestShipment => "request_shipment",
            Step::CapturePayment => "capture_payment",
            Step::ConfirmOrder => "confirm_order",
            Step::CommitStock { .. } => "commit_stock",
            Step::ShipShipment => "ship_shipment",
            Step::DeliverShipment => "deliver_shipment",
            Step::VoidPayment => "void_payment",
            Step::RefundPayment => "refund_payment",
            Step::ReleaseStock { .. } => "release_stock",
            Step::CancelOrder => "cancel_order",
        }
    }

    /// The name with the SKU for per-line steps, e.g. `"reserve_stock:SKU-1"`.
    pub fn label(&self) -> String {
        match self {
            Step::ReserveStock { sku } | Step::CommitStock { sku } | Step::ReleaseStock { sku } => {
                format!("{}:{sku}", self.name())
            }
            other => other.name().to_owned(),
        }
    }

    /// Action or compensation.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::VoidPayment
            | Step::RefundPayment
            | Step::ReleaseStock { .. }
            | Step::CancelOrder => StepKind::Compensation,
            _ => StepKind::Action,
        }
    }

    /// The SKU of a per-line step.
    pub fn sku(&self) -> Option<&str> {
        match self {
            Step::ReserveStock { sku } | Step::CommitStock { sku } | Step::ReleaseStock { sku } => {
                Some(sku)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// An event of another stream that concerns the saga, reduced to what the
/// saga needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum Fact {
    /// A line's units are reserved.
    StockReserved {
        /// The SKU.
        sku: String,
        /// Units reserved.
        quantity: i64,
    },
    /// A line could not be reserved.
    StockReservationRejected {
        /// The SKU.
        sku: String,
        /// Units asked for.
        requested: i64,
        /// Units available then.
        available: i64,
    },
    /// A line's reservation was given back.
    StockReleased {
        /// The SKU.
        sku: String,
    },
    /// A line's reserved units left stock at shipment.
    StockCommitted {
        /// The SKU.
        sku: String,
    },
    /// The gateway approved the payment.
    PaymentAuthorized {
        /// The gateway's reference.
        authorization_id: String,
        /// Amount authorised.
        amount: i64,
    },
    /// The gateway refused the payment.
    PaymentDeclined {
        /// The gateway's reason.
        reason: String,
    },
    /// The authorised amount was taken.
    PaymentCaptured {
        /// Amount captured.
        amount: i64,
    },
    /// The authorisation was released.
    PaymentVoided,
    /// Captured money was returned.
    PaymentRefunded {
        /// Amount returned.
        amount: i64,
    },
    /// The shipment was accepted.
    ShipmentRequested,
    /// The shipment was refused.
    ShipmentRejected {
        /// Why.
        reason: String,
    },
    /// The shipment left with the carrier.
    ShipmentShipped,
    /// The shipment arrived.
    ShipmentDelivered,
    /// The order is confirmed.
    OrderConfirmed,
    /// The order shipped (an operator's notice).
    OrderShipped {
        /// Carrier name.
        carrier: String,
        /// Carrier's tracking number.
        tracking_number: String,
    },
    /// The order was delivered (an operator's notice).
    OrderDelivered,
    /// The order was cancelled, by the saga or by a customer or operator.
    OrderCancelled {
        /// Why.
        reason: CancelReason,
    },
}

impl Fact {
    /// The step this fact answers, and whether it answers it with success
    /// (`true`) or a refusal (`false`).
    pub fn answers(&self) -> Option<(Step, bool)> {
        let sku = |sku: &String| sku.clone();
        Some(match self {
            Fact::StockReserved { sku: s, .. } => (Step::ReserveStock { sku: sku(s) }, true),
            Fact::StockReservationRejected { sku: s, .. } => {
                (Step::ReserveStock { sku: sku(s) }, false)
            }
            Fact::StockReleased { sku: s } => (Step::ReleaseStock { sku: sku(s) }, true),
            Fact::StockCommitted { sku: s } => (Step::CommitStock { sku: sku(s) }, true),
            Fact::PaymentAuthorized { .. } => (Step::AuthorizePayment, true),
            Fact::PaymentDeclined { .. } => (Step::AuthorizePayment, false),
            Fact::PaymentCaptured { .. } => (Step::CapturePayment, true),
            Fact::PaymentVoided => (Step::VoidPayment, true),
            Fact::PaymentRefunded { .. } => (Step::RefundPayment, true),
            Fact::ShipmentRequested => (Step::RequestShipment, true),
            Fact::ShipmentRejected { .. } => (Step::RequestShipment, false),
            Fact::ShipmentShipped => (Step::ShipShipment, true),
            Fact::ShipmentDelivered => (Step::DeliverShipment, true),
            Fact::OrderConfirmed => (Step::ConfirmOrder, true),
            Fact::OrderCancelled { .. } => (Step::CancelOrder, true),
            Fact::OrderShipped { .. } | Fact::OrderDelivered => return None,
        })
    }
}

/// Where an observed fact came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    /// The source event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in that stream.
    pub version: u64,
    /// Its type, e.g. `StockReserved`.
    pub event_type: String,
}

/// What a saga records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum SagaEvent {
    /// The saga took charge of a newly placed order.
    SagaStarted {
        /// The order.
        order_id: Uuid,
        /// Who placed it.
        customer_id: String,
        /// What was ordered.
        lines: Vec<OrderLine>,
        /// The order total in minor units.
        total: i64,
        /// ISO 4217 code.
        currency: String,
        /// Where to ship.
        shipping_address: Address,
        /// Payment method token.
        payment_method: String,
        /// The order's correlation id, carried by every command the saga sends.
        correlation_id: String,
    },
    /// An event of another stream that concerns the saga arrived.
    SagaEventObserved {
        /// Where it came from.
        source: SourceRef,
        /// What it says.
        fact: Fact,
        /// When the saga took note of it.
        at: DateTime<Utc>,
    },
    /// The saga sent a step's command (attempt `attempt`, id `command_id`).
    SagaStepStarted {
        /// The step.
        step: Step,
        /// 1 for the first try; a retry or a repeat counts up.
        attempt: u32,
        /// The deterministic id of the command sent (saga, step, attempt).
        command_id: Uuid,
        /// When it was sent.
        at: DateTime<Utc>,
        /// When to look again if no answer arrived.
        check_at: DateTime<Utc>,
        /// When the step gives up (the payment step) or is checked again.
        deadline: DateTime<Utc>,
    },
    /// A step started and answered in one change: its command was carried
    /// out inside the saga's own transaction, and `fact` is what that
    /// command recorded (`source`). One event for what would otherwise be a
    /// [`SagaEvent::SagaStepStarted`] immediately followed by its own
    /// [`SagaEvent::SagaEventObserved`]; the command's events name this
    /// event as their cause.
    SagaStepCompleted {
        /// The step.
        step: Step,
        /// 1 for the first try; a retry or a repeat counts up.
        attempt: u32,
        /// The deterministic id of the command carried out (saga, step, attempt).
        command_id: Uuid,
        /// When.
        at: DateTime<Utc>,
        /// The event that answered the step.
        source: SourceRef,
        /// What it says.
        fact: Fact,
    },
    /// No answer by `check_at`: the same command was sent again (it is
    /// idempotent) or the gateway was asked whether it happened.
    SagaStepRechecked {
        /// The step.
        step: Step,
        /// The attempt re-sent.
        attempt: u32,
        /// When.
        at: DateTime<Utc>,
        /// When to look again.
        check_at: DateTime<Utc>,
    },
    /// A step's attempt failed; it is retried at `retry_at`.
    SagaStepFailed {
        /// The step.
        step: Step,
        /// The failed attempt.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When.
        at: DateTime<Utc>,
        /// When the next attempt starts.
        retry_at: DateTime<Utc>,
    },
    /// A step passed its deadline without an answer.
    SagaStepTimedOut {
        /// The step.
        step: Step,
        /// The attempt that timed out.
        attempt: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step failed for good: the saga undoes what succeeded.
    SagaCompensationStarted {
        /// The reason the order is cancelled with.
        reason: CancelReason,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step kept failing; the saga waits for an operator.
    SagaStuck {
        /// The failing step.
        step: Step,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// An operator asked a stuck saga to try again.
    SagaRetried {
        /// The operator (JWT subject).
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// An operator stopped the saga; it takes no further step.
    SagaAborted {
        /// The operator (JWT subject).
        by: String,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The order was delivered: nothing is left to do.
    SagaCompleted {
        /// When.
        at: DateTime<Utc>,
    },
    /// Everything that succeeded was undone and the order is cancelled.
    SagaCompensated {
        /// When.
        at: DateTime<Utc>,
    },
}

impl SagaEvent {
    /// The event of another stream this one records as a fact
    /// ([`SagaEvent::SagaEventObserved`] and
    /// [`SagaEvent::SagaStepCompleted`]).
    pub fn observed(&self) -> Option<&SourceRef> {
        match self {
            SagaEvent::SagaEventObserved { source, .. }
            | SagaEvent::SagaStepCompleted { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl_domain_event!(SagaEvent, &[], {
    SagaStarted = 1,
    SagaEventObserved = 1,
    SagaStepStarted = 1,
    SagaStepCompleted = 1,
    SagaStepRechecked = 1,
    SagaStepFailed = 1,
    SagaStepTimedOut = 1,
    SagaCompensationStarted = 1,
    SagaStuck = 1,
    SagaRetried = 1,
    SagaAborted = 1,
    SagaCompleted = 1,
    SagaCompensated = 1,
});
