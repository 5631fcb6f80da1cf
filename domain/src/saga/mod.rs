//! The order fulfilment saga (stream `saga-<order uuid>`): its durable state
//! and its decisions, with no IO.
//!
//! The saga records what it learns about the order's other streams as
//! facts ([`SagaEvent::SagaEventObserved`]) and what it asks of them as
//! steps ([`SagaEvent::SagaStepStarted`]). What to do next is a pure
//! function of the facts ([`Saga::wanted`]): so a fact that arrives early,
//! late, twice or out of order across streams changes what is wanted, never
//! acts twice. Forward: reserve every line → authorise payment → request
//! shipment → capture → confirm; after the operator's ship notice, commit
//! the stock and ship; after delivery, deliver. Once a step fails for good
//! ([`SagaEvent::SagaCompensationStarted`]), newest first: refund or void the
//! payment, release every reservation, cancel the order with the reason.
//!
//! Time enters only through commands (`now`), so decisions stay pure.

mod event;
mod fact;
mod plan;
mod state;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

pub use event::{Fact, SagaEvent, SourceRef, Step, StepKind};
pub use state::{
    LineStock, OrderFact, PaymentFacts, Saga, SagaStatus, ShipmentFact, StepState, StepStatus,
};

use crate::validate::{validate_text, MAX_TEXT_CHARS};
use crate::{Address, Aggregate, CancelReason, DomainError, OrderLine};

/// How long steps may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The payment step's deadline (`FULCRUM_PAYMENT_DEADLINE_MS`).
    pub payment_deadline: Duration,
    /// How long any other step waits for its answer before its command is
    /// sent again (it is idempotent, so a repeat only re-answers).
    pub step_check: Duration,
}

/// What can be asked of a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaCommand {
    /// Takes charge of a newly placed order. A no-op once started.
    Start {
        /// The order.
        order_id: Uuid,
        /// Who placed it.
        customer_id: String,
        /// What was ordered.
        lines: Vec<OrderLine>,
        /// The order total.
        total: i64,
        /// ISO 4217 code.
        currency: String,
        /// Where to ship.
        shipping_address: Address,
        /// Payment method token.
        payment_method: String,
        /// The order's correlation id.
        correlation_id: String,
    },
    /// Records a fact from another stream. A no-op for a redelivery (a
    /// version of that stream at or below one already observed).
    Observe {
        /// Where it came from.
        source: SourceRef,
        /// What it says.
        fact: Fact,
        /// Now.
        now: DateTime<Utc>,
    },
    /// Decides what follows from the facts: compensation when a step failed
    /// for good, new attempts of wanted steps that are due, re-sends of
    /// steps whose answer is overdue (not the payment step: see
    /// [`SagaCommand::TimeOut`]), and completion.
    Advance {
        /// Now.
        now: DateTime<Utc>,
        /// Step deadlines.
        timings: Timings,
    },
    /// Records that a started step was looked at again (re-sent, or the
    /// gateway asked) and when to look next. A no-op for a stale attempt.
    Recheck {
        /// The step.
        step: Step,
        /// Its attempt.
        attempt: u32,
        /// Now.
        now: DateTime<Utc>,
        /// When to look next.
        check_at: DateTime<Utc>,
    },
    /// Records that an attempt failed; after `max_attempts` consecutive
    /// failures the saga is stuck. A no-op for a stale attempt.
    Fail {
        /// The step.
        step: Step,
        /// The failed attempt.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Now.
        now: DateTime<Utc>,
        /// When to try again.
        retry_at: DateTime<Utc>,
        /// Consecutive failures before the saga is stuck.
        max_attempts: u32,
    },
    /// Records that a step passed its deadline unanswered: the payment step
    /// gives up (`payment_timeout`). A no-op for a stale attempt.
    TimeOut {
        /// The step.
        step: Step,
        /// Its attempt.
        attempt: u32,
        /// Now.
        now: DateTime<Utc>,
    },
    /// An operator retries a stuck saga. Conflict unless stuck.
    Retry {
        /// The operator.
        by: String,
        /// Now.
        now: DateTime<Utc>,
    },
    /// An operator stops the saga. Conflict once it completed, compensated
    /// or was aborted.
    Abort {
        /// The operator.
        by: String,
        /// Why; non-blank.
        reason: String,
        /// Now.
        now: DateTime<Utc>,
    },
}

/// The deterministic id of attempt `attempt` of `step` in the saga of
/// `order_id`: a redelivery or a restart sends the same command again, and
/// the command layer answers it from its idempotency record.
pub fn command_id(order_id: Uuid, step: &Step, attempt: u32) -> Uuid {
    let name = format!("saga:{order_id}:{}:{attempt}", step.label());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

impl Saga {
    fn not_started(&self) -> DomainError {
        DomainError::not_found("saga")
    }

    fn conflict(&self, what: &str) -> DomainError {
        DomainError::conflict(format!(
            "the saga of order {} is {}; cannot {what}",
            self.order_id, self.status
        ))
    }

    /// The attempt of `step` that is started, if `attempt` is it.
    fn started(&self, step: &Step, attempt: u32) -> bool {
        self.steps
            .get(step)
            .is_some_and(|s| s.attempt == attempt && s.status == StepStatus::Started)
    }

    fn observe(&self, source: &SourceRef, fact: &Fact, now: DateTime<Utc>) -> Vec<SagaEvent> {
        if self
            .seen
            .get(&source.stream_id)
            .is_some_and(|&seen| seen >= source.version)
        {
            return vec![];
        }
        vec![SagaEvent::SagaEventObserved {
            source: source.clone(),
            fact: fact.clone(),
            at: now,
        }]
    }

    fn fail(
        &self,
        step: &Step,
        attempt: u32,
        error: &str,
        now: DateTime<Utc>,
        retry_at: DateTime<Utc>,
        max_attempts: u32,
    ) -> Vec<SagaEvent> {
        if !self.started(step, attempt) {
            return vec![];
        }
        let failures = self.steps.get(step).map_or(0, |s| s.failures) + 1;
        let mut events = vec![SagaEvent::SagaStepFailed {
            step: step.clone(),
            attempt,
            error: error.to_owned(),
            at: now,
            retry_at,
        }];
        if failures >= max_attempts.max(1) && self.status != SagaStatus::Aborted {
            events.push(SagaEvent::SagaStuck {
                step: step.clone(),
                attempts: failures,
                error: error.to_owned(),
                at: now,
            });
        }
        events
    }

    fn time_out(&self, step: &Step, attempt: u32, now: DateTime<Utc>) -> Vec<SagaEvent> {
        if !self.started(step, attempt) {
            return vec![];
        }
        let mut events = vec![SagaEvent::SagaStepTimedOut {
            step: step.clone(),
            attempt,
            at: now,
        }];
        if self.failure.is_none() && *step == Step::AuthorizePayment {
            events.push(SagaEvent::SagaCompensationStarted {
                reason: CancelReason::PaymentTimeout,
                at: now,
            });
        }
        events
    }
}

impl Saga {
    /// An operator's retry by `by` at `now`: only a stuck saga can be
    /// retried.
    fn decide_retry(&self, by: &str, now: DateTime<Utc>) -> Result<Vec<SagaEvent>, DomainError> {
        if !self.started {
            return Err(self.not_started());
        }
        if self.status != SagaStatus::Stuck {
            return Err(self.conflict("be retried (only a stuck saga can)"));
        }
        Ok(vec![SagaEvent::SagaRetried {
            by: by.to_owned(),
            at: now,
        }])
    }

    /// An operator's abort by `by` at `now`, for `reason`: a saga that has
    /// ended cannot be aborted.
    fn decide_abort(
        &self,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, DomainError> {
        validate_text(reason, MAX_TEXT_CHARS)
            .map_err(|message| DomainError::invalid("reason", message))?;
        if !self.started {
            return Err(self.not_started());
        }
        if matches!(
            self.status,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Aborted
        ) {
            return Err(self.conflict("be aborted"));
        }
        Ok(vec![SagaEvent::SagaAborted {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: now,
        }])
    }
}

impl Aggregate for Saga {
    const KIND: crate::StreamKind = crate::StreamKind::Saga;
    type Command = SagaCommand;
    type Event = SagaEvent;

    fn decide(&self, command: &SagaCommand) -> Result<Vec<SagaEvent>, DomainError> {
        match command {
            SagaCommand::Start {
                order_id,
                customer_id,
                lines,
                total,
                currency,
                shipping_address,
                payment_method,
                correlation_id,
            } => {
                if self.started {
                    return Ok(vec![]);
                }
                Ok(vec![SagaEvent::SagaStarted {
                    order_id: *order_id,
                    customer_id: customer_id.clone(),
                    lines: lines.clone(),
                    total: *total,
                    currency: currency.clone(),
                    shipping_address: shipping_address.clone(),
                    payment_method: payment_method.clone(),
                    correlation_id: correlation_id.clone(),
                }])
            }
            SagaCommand::Observe { source, fact, now } => Ok(self.observe(source, fact, *now)),
            SagaCommand::Advance { now, timings } => Ok(self.advance(*now, *timings)),
            SagaCommand::Recheck {
                step,
                attempt,
                now,
                check_at,
            } => Ok(if self.started(step, *attempt) {
                vec![SagaEvent::SagaStepRechecked {
                    step: step.clone(),
                    attempt: *attempt,
                    at: *now,
                    check_at: *check_at,
                }]
            } else {
                vec![]
            }),
            SagaCommand::Fail {
                step,
                attempt,
                error,
                now,
                retry_at,
                max_attempts,
            } => Ok(self.fail(step, *attempt, error, *now, *retry_at, *max_attempts)),
            SagaCommand::TimeOut { step, attempt, now } => Ok(self.time_out(step, *attempt, *now)),
            SagaCommand::Retry { by, now } => self.decide_retry(by, *now),
            SagaCommand::Abort { by, reason, now } => self.decide_abort(by, reason, *now),
        }
    }

    fn evolve(self, event: &SagaEvent) -> Self {
        state::evolve(self, event)
    }
}
