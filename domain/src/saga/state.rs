//! What a saga knows: the order, the facts observed about it, and where each
//! step stands.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Fact, SagaEvent, SourceRef, Step};
use crate::{Address, CancelReason, OrderLine};

/// Where a saga is. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Moving the order forward (or waiting for shipment or delivery).
    #[default]
    Running,
    /// Undoing what succeeded.
    Compensating,
    /// The order was delivered.
    Completed,
    /// Everything was undone and the order cancelled.
    Compensated,
    /// A step kept failing; waiting for an operator's retry or abort.
    Stuck,
    /// An operator stopped the saga.
    Aborted,
}

impl SagaStatus {
    /// The wire name, e.g. `"running"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Stuck => "stuck",
            Self::Aborted => "aborted",
        }
    }

    /// Every status, for parsing.
    pub const ALL: [SagaStatus; 6] = [
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Compensated,
        Self::Stuck,
        Self::Aborted,
    ];

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<SagaStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line's stock, as far as the saga knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStock {
    /// Units are held for the order.
    Reserved(i64),
    /// The reservation was refused.
    Rejected,
    /// The reservation was given back.
    Released,
    /// The units left stock at shipment.
    Committed,
}

/// The payment, as far as the saga knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFacts {
    /// The gateway's reference, once authorised.
    pub authorization_id: Option<String>,
    /// Amount authorised.
    pub authorized: i64,
    /// The gateway's reason, once declined.
    pub declined: Option<String>,
    /// Amount captured.
    pub captured: i64,
    /// Whether the authorisation was voided.
    pub voided: bool,
    /// Amount refunded.
    pub refunded: i64,
    /// Whether the saga gave up waiting for the gateway.
    pub timed_out: bool,
}

/// The shipment, as far as the saga knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentFact {
    /// Accepted.
    Requested,
    /// Refused.
    Rejected,
    /// With the carrier.
    Shipped,
    /// Arrived.
    Delivered,
}

/// The order, as far as the saga knows (placed until one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderFact {
    /// Confirmed.
    Confirmed,
    /// Shipped.
    Shipped,
    /// Delivered.
    Delivered,
    /// Cancelled, with the reason.
    Cancelled(CancelReason),
}

/// Where one step stands. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Sent, no answer yet.
    Started,
    /// Answered with success.
    Succeeded,
    /// Answered with a refusal (out of stock, declined, shipment rejected).
    Refused,
    /// The last attempt failed; a retry is scheduled.
    Failed,
    /// No answer before the deadline.
    TimedOut,
    /// Failed too often; waiting for an operator.
    Stuck,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    /// The latest attempt (0 when the step was answered without being sent,
    /// e.g. a customer's own cancellation).
    pub attempt: u32,
    /// Failures since the last success or operator retry.
    pub failures: u32,
    /// Where it stands.
    pub status: StepStatus,
    /// The latest attempt's command id.
    pub command_id: Option<Uuid>,
    /// When it was first sent.
    pub first_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub at: Option<DateTime<Utc>>,
    /// When to look again while it is started.
    pub check_at: Option<DateTime<Utc>>,
    /// When the next attempt starts while it is failed.
    pub retry_at: Option<DateTime<Utc>>,
    /// Its deadline while it is started.
    pub deadline: Option<DateTime<Utc>>,
    /// The last error.
    pub error: Option<String>,
}

impl StepState {
    pub(super) fn new(status: StepStatus) -> Self {
        StepState {
            attempt: 0,
            failures: 0,
            status,
            command_id: None,
            first_at: None,
            at: None,
            check_at: None,
            retry_at: None,
            deadline: None,
            error: None,
        }
    }
}

/// A saga's state. The default value is a saga not started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    /// Whether `SagaStarted` was recorded.
    pub started: bool,
    /// The order.
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// The order total in minor units.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where to ship.
    pub shipping_address: Option<Address>,
    /// Payment method token.
    pub payment_method: String,
    /// The order's correlation id.
    pub correlation_id: String,
    /// Where the saga is.
    pub status: SagaStatus,
    /// Set once the saga compensates: the reason the order is cancelled with.
    pub failure: Option<CancelReason>,
    /// Per SKU: the line's stock.
    pub stock: BTreeMap<String, LineStock>,
    /// The payment.
    pub payment: PaymentFacts,
    /// The shipment.
    pub shipment: Option<ShipmentFact>,
    /// The order (`None` while placed).
    pub order: Option<OrderFact>,
    /// Every step the saga took or saw answered.
    pub steps: BTreeMap<Step, StepState>,
    /// The step sent last.
    pub current_step: Option<Step>,
    /// The last version observed per source stream (to drop redeliveries).
    pub seen: BTreeMap<String, u64>,
    /// The carrier and tracking number the order shipped with.
    pub carrier: Option<(String, String)>,
    /// The operator who aborted the saga, and why.
    pub aborted: Option<(String, String)>,
}

/// The fold behind [`crate::Aggregate::evolve`] for sagas.
pub(super) fn evolve(mut saga: Saga, event: &SagaEvent) -> Saga {
    match event {
        SagaEvent::SagaStarted { .. } => begin(&mut saga, event),
        SagaEvent::SagaEventObserved { source, fact, at } => observe(&mut saga, source, fact, *at),
        SagaEvent::SagaStepStarted {
            step,
            attempt,
            command_id,
            at,
            check_at,
            deadline,
        } => {
            let state = start(&mut saga, step, *attempt, *command_id, *at);
            state.check_at = Some(*check_at);
            state.deadline = Some(*deadline);
        }
        SagaEvent::SagaStepCompleted {
            step,
            attempt,
            command_id,
            at,
            source,
            fact,
        } => {
            start(&mut saga, step, *attempt, *command_id, *at);
            observe(&mut saga, source, fact, *at);
        }
        SagaEvent::SagaStepRechecked { step, check_at, .. } => {
            if let Some(state) = saga.steps.get_mut(step) {
                state.check_at = Some(*check_at);
            }
        }
        SagaEvent::SagaStepFailed {
            step,
            error,
            at,
            retry_at,
            ..
        } => fail(&mut saga, step, error, *at, *retry_at),
        SagaEvent::SagaStepTimedOut { step, at, .. } => time_out(&mut saga, step, *at),
        SagaEvent::SagaCompensationStarted { reason, .. } => {
            saga.failure = Some(*reason);
            if saga.status == SagaStatus::Running {
                saga.status = SagaStatus::Compensating;
            }
        }
        SagaEvent::SagaStuck { step, at, .. } => {
            if let Some(state) = saga.steps.get_mut(step) {
                state.status = StepStatus::Stuck;
                state.at = Some(*at);
            }
            saga.status = SagaStatus::Stuck;
        }
        SagaEvent::SagaRetried { at, .. } => retry(&mut saga, *at),
        SagaEvent::SagaAborted { by, reason, .. } => {
            saga.status = SagaStatus::Aborted;
            saga.aborted = Some((by.clone(), reason.clone()));
        }
        SagaEvent::SagaCompleted { .. } => saga.status = SagaStatus::Completed,
        SagaEvent::SagaCompensated { .. } => saga.status = SagaStatus::Compensated,
    }
    saga
}

/// Records what a `SagaStarted` says about the order (any other event
/// changes nothing here).
fn begin(saga: &mut Saga, event: &SagaEvent) {
    let SagaEvent::SagaStarted {
        order_id,
        customer_id,
        lines,
        total,
        currency,
        shipping_address,
        payment_method,
        correlation_id,
    } = event
    else {
        return;
    };
    saga.started = true;
    saga.order_id = *order_id;
    saga.customer_id.clone_from(customer_id);
    saga.lines.clone_from(lines);
    saga.total = *total;
    saga.currency.clone_from(currency);
    saga.shipping_address = Some(shipping_address.clone());
    saga.payment_method.clone_from(payment_method);
    saga.correlation_id.clone_from(correlation_id);
}

/// Records that `step` failed at `at` with `error`, to be retried at
/// `retry_at`.
fn fail(saga: &mut Saga, step: &Step, error: &str, at: DateTime<Utc>, retry_at: DateTime<Utc>) {
    if let Some(state) = saga.steps.get_mut(step) {
        state.status = StepStatus::Failed;
        state.failures = state.failures.saturating_add(1);
        state.error = Some(error.to_owned());
        state.at = Some(at);
        state.retry_at = Some(retry_at);
        state.check_at = None;
    }
}

/// Records that `step` had no answer before its deadline (at `at`); a
/// payment authorisation that timed out is remembered as such.
fn time_out(saga: &mut Saga, step: &Step, at: DateTime<Utc>) {
    if let Some(state) = saga.steps.get_mut(step) {
        state.status = StepStatus::TimedOut;
        state.error = Some("no answer before the deadline".into());
        state.at = Some(at);
        state.check_at = None;
    }
    if *step == Step::AuthorizePayment {
        saga.payment.timed_out = true;
    }
}

/// An operator's retry at `at`: stuck steps become failed ones due now,
/// and the saga goes on forward or compensating, as it was.
fn retry(saga: &mut Saga, at: DateTime<Utc>) {
    for state in saga.steps.values_mut() {
        if state.status == StepStatus::Stuck {
            state.status = StepStatus::Failed;
            state.failures = 0;
            state.retry_at = Some(at);
        }
    }
    saga.status = if saga.failure.is_some() {
        SagaStatus::Compensating
    } else {
        SagaStatus::Running
    };
}

/// Records that attempt `attempt` of `step` was sent at `at`; the step's
/// state, for the caller to add its check times to.
fn start<'a>(
    saga: &'a mut Saga,
    step: &Step,
    attempt: u32,
    command_id: Uuid,
    at: DateTime<Utc>,
) -> &'a mut StepState {
    saga.current_step = Some(step.clone());
    saga.status = match saga.status {
        SagaStatus::Completed => SagaStatus::Running,
        SagaStatus::Compensated => SagaStatus::Compensating,
        other => other,
    };
    let state = saga
        .steps
        .entry(step.clone())
        .or_insert_with(|| StepState::new(StepStatus::Started));
    state.attempt = attempt;
    state.status = StepStatus::Started;
    state.command_id = Some(command_id);
    state.first_at.get_or_insert(at);
    state.at = Some(at);
    state.retry_at = None;
    state
}

/// Records `fact`, from `source`, observed at `at`: what it says, and the
/// step it answers.
fn observe(saga: &mut Saga, source: &SourceRef, fact: &Fact, at: DateTime<Utc>) {
    saga.seen.insert(source.stream_id.clone(), source.version);
    apply_fact(saga, fact);
    if let Some((step, ok)) = fact.answers() {
        let state = saga
            .steps
            .entry(step)
            .or_insert_with(|| StepState::new(StepStatus::Succeeded));
        state.status = if ok {
            StepStatus::Succeeded
        } else {
            StepStatus::Refused
        };
        state.failures = 0;
        state.at = Some(at);
        state.check_at = None;
        state.retry_at = None;
    }
}

fn apply_fact(saga: &mut Saga, fact: &Fact) {
    let payment = &mut saga.payment;
    match fact {
        Fact::StockReserved { sku, quantity } => {
            saga.stock
                .insert(sku.clone(), LineStock::Reserved(*quantity));
        }
        Fact::StockReservationRejected { sku, .. } => {
            saga.stock.insert(sku.clone(), LineStock::Rejected);
        }
        Fact::StockReleased { sku } => {
            saga.stock.insert(sku.clone(), LineStock::Released);
        }
        Fact::StockCommitted { sku } => {
            saga.stock.insert(sku.clone(), LineStock::Committed);
        }
        Fact::PaymentAuthorized {
            authorization_id,
            amount,
        } => {
            payment.authorization_id = Some(authorization_id.clone());
            payment.authorized = *amount;
        }
        Fact::PaymentDeclined { reason } => payment.declined = Some(reason.clone()),
        Fact::PaymentCaptured { amount } => payment.captured = *amount,
        Fact::PaymentVoided => payment.voided = true,
        Fact::PaymentRefunded { amount } => {
            payment.refunded = payment.refunded.saturating_add(*amount);
        }
        Fact::ShipmentRequested => saga.shipment = Some(ShipmentFact::Requested),
        Fact::ShipmentRejected { .. } => saga.shipment = Some(ShipmentFact::Rejected),
        Fact::ShipmentShipped => saga.shipment = Some(ShipmentFact::Shipped),
        Fact::ShipmentDelivered => saga.shipment = Some(ShipmentFact::Delivered),
        Fact::OrderConfirmed => saga.order = Some(OrderFact::Confirmed),
        Fact::OrderShipped {
            carrier,
            tracking_number,
        } => {
            saga.order = Some(OrderFact::Shipped);
            saga.carrier = Some((carrier.clone(), tracking_number.clone()));
        }
        Fact::OrderDelivered => saga.order = Some(OrderFact::Delivered),
        Fact::OrderCancelled { reason } => saga.order = Some(OrderFact::Cancelled(*reason)),
    }
}
