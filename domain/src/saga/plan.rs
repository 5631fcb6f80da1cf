//! What a saga wants done next, as a pure function of what it knows.

use chrono::{DateTime, Utc};

use super::{
    command_id, LineStock, OrderFact, Saga, SagaEvent, SagaStatus, ShipmentFact, Step, StepStatus,
    Timings,
};
use crate::{Aggregate, CancelReason};

impl Saga {
    /// The steps the facts call for now, in the order they should run.
    /// Empty while the saga waits (for an answer, the operator's ship or
    /// deliver notice) and once it is done, stuck or aborted.
    pub fn wanted(&self) -> Vec<Step> {
        if !self.started || matches!(self.status, SagaStatus::Aborted | SagaStatus::Stuck) {
            return vec![];
        }
        match self.failure {
            None => self.forward(),
            Some(_) => self.compensation(),
        }
    }

    fn forward(&self) -> Vec<Step> {
        let unreserved: Vec<Step> = self
            .lines
            .iter()
            .filter(|line| !self.stock.contains_key(&line.sku))
            .map(|line| Step::ReserveStock {
                sku: line.sku.clone(),
            })
            .collect();
        if !unreserved.is_empty() {
            return unreserved;
        }
        if self.payment.authorization_id.is_none() {
            return vec![Step::AuthorizePayment];
        }
        match self.shipment {
            None => return vec![Step::RequestShipment],
            Some(ShipmentFact::Rejected) => return vec![],
            Some(_) => {}
        }
        if self.payment.captured == 0 {
            return vec![Step::CapturePayment];
        }
        match self.order {
            None => vec![Step::ConfirmOrder],
            Some(OrderFact::Confirmed | OrderFact::Cancelled(_)) => vec![],
            Some(order @ (OrderFact::Shipped | OrderFact::Delivered)) => {
                let mut steps: Vec<Step> = self
                    .stock
                    .iter()
                    .filter(|(_, line)| matches!(line, LineStock::Reserved(_)))
                    .map(|(sku, _)| Step::CommitStock { sku: sku.clone() })
                    .collect();
                match self.shipment {
                    Some(ShipmentFact::Requested) => steps.push(Step::ShipShipment),
                    Some(ShipmentFact::Shipped) if order == OrderFact::Delivered => {
                        steps.push(Step::DeliverShipment);
                    }
                    _ => {}
                }
                steps
            }
        }
    }

    /// Newest first: the payment, then the stock, then the order.
    fn compensation(&self) -> Vec<Step> {
        let payment = &self.payment;
        if payment.captured > payment.refunded {
            return vec![Step::RefundPayment];
        }
        if payment.authorization_id.is_some() && payment.captured == 0 && !payment.voided {
            return vec![Step::VoidPayment];
        }
        let release: Vec<Step> = self
            .stock
            .iter()
            .filter(|(_, line)| matches!(line, LineStock::Reserved(_)))
            .map(|(sku, _)| Step::ReleaseStock { sku: sku.clone() })
            .collect();
        if !release.is_empty() {
            return release;
        }
        if !matches!(self.order, Some(OrderFact::Cancelled(_))) {
            return vec![Step::CancelOrder];
        }
        vec![]
    }

    /// Why the facts say the order cannot go on, if they do.
    fn implied_failure(&self) -> Option<CancelReason> {
        if let Some(OrderFact::Cancelled(reason)) = self.order {
            return Some(reason);
        }
        if self.stock.values().any(|l| *l == LineStock::Rejected) {
            return Some(CancelReason::OutOfStock);
        }
        if self.payment.declined.is_some() {
            return Some(CancelReason::PaymentDeclined);
        }
        if self.shipment == Some(ShipmentFact::Rejected) {
            return Some(CancelReason::ShipmentRejected);
        }
        None
    }

    pub(super) fn advance(&self, now: DateTime<Utc>, timings: Timings) -> Vec<SagaEvent> {
        if !self.started || matches!(self.status, SagaStatus::Aborted | SagaStatus::Stuck) {
            return vec![];
        }
        let mut events = Vec::new();
        let mut state = self.clone();
        if state.failure.is_none() {
            if let Some(reason) = state.implied_failure() {
                let event = SagaEvent::SagaCompensationStarted { reason, at: now };
                state = state.evolve(&event);
                events.push(event);
            }
        }
        let wanted = state.wanted();
        if wanted.is_empty() {
            let done = match state.failure {
                None if state.order == Some(OrderFact::Delivered)
                    && state.status != SagaStatus::Completed =>
                {
                    Some(SagaEvent::SagaCompleted { at: now })
                }
                Some(_) if state.status != SagaStatus::Compensated => {
                    Some(SagaEvent::SagaCompensated { at: now })
                }
                _ => None,
            };
            events.extend(done);
            return events;
        }
        for step in wanted {
            let current = state.steps.get(&step);
            let next_attempt = current.map_or(1, |s| s.attempt + 1);
            let start = match current.map(|s| s.status) {
                None | Some(StepStatus::Succeeded | StepStatus::Refused | StepStatus::TimedOut) => {
                    true
                }
                Some(StepStatus::Failed) => current
                    .and_then(|s| s.retry_at)
                    .is_none_or(|retry_at| retry_at <= now),
                Some(StepStatus::Started) => {
                    let overdue = current
                        .and_then(|s| s.check_at)
                        .is_none_or(|check_at| check_at <= now);
                    // The payment step's deadline needs the gateway's word:
                    // the orchestrator asks it, then times out or rechecks.
                    if overdue && step != Step::AuthorizePayment {
                        if let Some(s) = current {
                            events.push(SagaEvent::SagaStepRechecked {
                                step: step.clone(),
                                attempt: s.attempt,
                                at: now,
                                check_at: now + timings.step_check,
                            });
                        }
                    }
                    false
                }
                Some(StepStatus::Stuck) => false,
            };
            if start {
                let wait = if step == Step::AuthorizePayment {
                    timings.payment_deadline
                } else {
                    timings.step_check
                };
                events.push(SagaEvent::SagaStepStarted {
                    command_id: command_id(state.order_id, &step, next_attempt),
                    step,
                    attempt: next_attempt,
                    at: now,
                    check_at: now + wait,
                    deadline: now + wait,
                });
            }
        }
        events
    }

    /// When the saga next needs attention with no new fact: the earliest
    /// check or retry of a wanted step (now, for a step not yet sent);
    /// `None` when it only waits for facts or is finished.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        self.wanted()
            .iter()
            .map(|step| match self.steps.get(step) {
                Some(s) if s.status == StepStatus::Started => s.check_at,
                Some(s) if s.status == StepStatus::Failed => s.retry_at,
                _ => Some(DateTime::<Utc>::UNIX_EPOCH),
            })
            .min()
            .flatten()
    }

    /// The payment step, when it is started and past its deadline at `now`:
    /// its attempt.
    pub fn payment_overdue(&self, now: DateTime<Utc>) -> Option<u32> {
        if !self.wanted().contains(&Step::AuthorizePayment) {
            return None;
        }
        let step = self.steps.get(&Step::AuthorizePayment)?;
        (step.status == StepStatus::Started && step.deadline.is_some_and(|d| d <= now))
            .then_some(step.attempt)
    }
}
