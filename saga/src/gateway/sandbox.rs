//! The in-process sandbox gateway: answers by payment-method token, after a
//! delay, from books kept in memory ([`MemoryBooks`]) or in Postgres
//! ([`PgBooks`], shared by every process of a deployment).

mod ledger;
mod pg;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use super::{
    AuthorizationRequest, Callback, GatewayAnswer, GatewayError, Operation, PaymentGateway,
    RequestStatus,
};
use ledger::{key_reused, require_positive};
pub use ledger::{Accepted, Authorization, Books, MemoryBooks, Movement, Rule};
pub use pg::PgBooks;

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Delay before an approval or decline is called back (default 5 ms).
    pub answer_delay: Duration,
    /// Delay before `tok_late` is approved (default 31 s; the server sets it past the payment deadline, FULCRUM_PAYMENT_DEADLINE_MS + 1 s).
    pub late_delay: Duration,
}

impl Default for SandboxConfig {
    /// 5 ms answers; `tok_late` 1 s past the default 30 s payment deadline.
    fn default() -> Self {
        Self {
            answer_delay: Duration::from_millis(5),
            late_delay: Duration::from_secs(31),
        }
    }
}

/// How long past its due time an answer may stay undelivered before a
/// status call gives it: the process that accepted the request stopped
/// before its answer task ran.
const OVERDUE: Duration = Duration::from_secs(1);

/// The built-in sandbox gateway: answers by payment-method token.
///
/// `tok_visa` is approved; `tok_declined` is declined ("card declined");
/// `tok_timeout` is accepted and never answered; `tok_flaky` fails its first
/// two `authorize` calls per key (in each process) with
/// [`GatewayError::Transient`], then is approved; `tok_late` is approved only
/// after [`SandboxConfig::late_delay`]; any other token is declined ("unknown
/// payment method"). Answers are sent by a spawned Tokio task after the
/// delay, so `authorize` needs a Tokio runtime; the status turns
/// [`RequestStatus::Answered`] at that moment. An answer still missing a
/// second after it was due (its process stopped) is given by the first
/// [`PaymentGateway::status`] call that finds it, in any process sharing the
/// books.
///
/// A key reused with different parameters is [`GatewayError::Refused`], for
/// every operation. Capture, void and refund are refused for an unknown
/// authorisation, a non-positive amount, a capture past the authorised amount
/// or of a voided authorisation, a void of a captured (or already voided)
/// authorisation, and a refund past what is captured and not yet refunded.
/// Injected faults (per process) come before every other rule.
pub struct SandboxGateway {
    config: SandboxConfig,
    books: Arc<dyn Books>,
    local: Mutex<Local>,
    callbacks: UnboundedSender<Callback>,
}

/// What each process keeps for itself: injected faults and `tok_flaky`'s
/// failed attempts.
#[derive(Default)]
struct Local {
    faults: HashMap<Operation, u32>,
    flaky_attempts: HashMap<String, u32>,
}

impl Local {
    fn take_fault(&mut self, operation: Operation) -> Result<(), GatewayError> {
        match self.faults.get_mut(&operation) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Err(GatewayError::Transient(format!(
                    "sandbox: injected fault on {operation:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// When and how the sandbox answers a token: after a delay, an approval
/// (`None`) or a decline with its reason; `None` for never.
type Plan = Option<(Duration, Option<&'static str>)>;

impl SandboxGateway {
    /// A sandbox with books in this process's memory, and the receiving end
    /// of its callbacks (the "webhook").
    pub fn new(config: SandboxConfig) -> (Arc<SandboxGateway>, UnboundedReceiver<Callback>) {
        Self::with_books(config, Arc::new(MemoryBooks::default()))
    }

    /// A sandbox keeping its books in `books` (e.g. [`PgBooks`], for several
    /// processes), and the receiving end of its callbacks.
    pub fn with_books(
        config: SandboxConfig,
        books: Arc<dyn Books>,
    ) -> (Arc<SandboxGateway>, UnboundedReceiver<Callback>) {
        let (callbacks, receiver) = mpsc::unbounded_channel();
        let gateway = SandboxGateway {
            config,
            books,
            local: Mutex::default(),
            callbacks,
        };
        (Arc::new(gateway), receiver)
    }

    /// Makes the next `times` calls of `operation` in this process fail with
    /// GatewayError::Transient (fault injection for tests). Replaces any count
    /// left from an earlier call for the same operation.
    pub fn fail_next(&self, operation: Operation, times: u32) {
        self.local().faults.insert(operation, times);
    }

    /// Clears injected faults.
    pub fn clear_faults(&self) {
        self.local().faults.clear();
    }

    /// Every capture that took effect, in order: for invariants in tests
    /// (no retry ever moved money twice).
    pub async fn captures(&self) -> Result<Vec<Movement>, GatewayError> {
        self.books.movements(Operation::Capture).await
    }

    /// Every void that took effect, in order (amount 0: the whole hold).
    pub async fn voids(&self) -> Result<Vec<Movement>, GatewayError> {
        self.books.movements(Operation::Void).await
    }

    /// Every refund that took effect, in order.
    pub async fn refunds(&self) -> Result<Vec<Movement>, GatewayError> {
        self.books.movements(Operation::Refund).await
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // Nothing panics while holding the lock, so a poisoned one is still
        // consistent.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self, payment_method: &str) -> Plan {
        let (answer_delay, late_delay) = (self.config.answer_delay, self.config.late_delay);
        match payment_method {
            TOK_VISA | TOK_FLAKY => Some((answer_delay, None)),
            TOK_LATE => Some((late_delay, None)),
            TOK_TIMEOUT => None,
            TOK_DECLINED => Some((answer_delay, Some("card declined"))),
            _ => Some((answer_delay, Some("unknown payment method"))),
        }
    }

    /// A repeat of an accepted request: re-sends its answer if it has one;
    /// refused when the key came with other parameters.
    fn repeat(&self, request: &AuthorizationRequest, known: Accepted) -> Result<(), GatewayError> {
        if known.request != *request {
            return Err(key_reused(&request.idempotency_key));
        }
        if let Some(answer) = known.answer {
            let callback = Callback {
                idempotency_key: request.idempotency_key.clone(),
                order_id: request.order_id,
                answer,
            };
            deliver(&self.callbacks, callback);
        }
        Ok(())
    }

    /// Answers `request` after `delay`, from a task of its own, as a webhook
    /// would: approves it when `decline` is None, else declines it with that
    /// reason. If the books already hold an answer, that one is sent.
    fn answer_later(
        &self,
        request: &AuthorizationRequest,
        delay: Duration,
        decline: Option<&'static str>,
    ) {
        let books = Arc::clone(&self.books);
        let callbacks = self.callbacks.clone();
        let (key, order_id, amount) = (
            request.idempotency_key.clone(),
            request.order_id,
            request.amount,
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match books.answer(&key, decision(decline), amount).await {
                Ok(answer) => deliver(
                    &callbacks,
                    Callback {
                        idempotency_key: key,
                        order_id,
                        answer,
                    },
                ),
                // A status call gives it once it is overdue.
                Err(error) => {
                    tracing::warn!(%error, idempotency_key = %key, "sandbox could not record its answer");
                }
            }
        });
    }
}

/// The answer a plan gives: an approval with a fresh authorisation id, or a
/// decline with its reason.
fn decision(decline: Option<&str>) -> GatewayAnswer {
    match decline {
        None => GatewayAnswer::Approved {
            authorization_id: format!("auth_{}", Uuid::new_v4().simple()),
        },
        Some(reason) => GatewayAnswer::Declined {
            reason: reason.to_owned(),
        },
    }
}

#[async_trait::async_trait]
impl PaymentGateway for SandboxGateway {
    #[tracing::instrument(skip_all, fields(idempotency_key = %request.idempotency_key, payment_method = %request.payment_method))]
    async fn authorize(&self, request: &AuthorizationRequest) -> Result<(), GatewayError> {
        self.local().take_fault(Operation::Authorize)?;
        require_positive(request.amount)?;
        let key = &request.idempotency_key;
        if let Some(known) = self.books.request(key).await? {
            return self.repeat(request, known);
        }
        if request.payment_method == TOK_FLAKY {
            let mut local = self.local();
            let attempts = local.flaky_attempts.entry(key.clone()).or_default();
            *attempts += 1;
            if *attempts <= 2 {
                return Err(GatewayError::Transient(format!(
                    "sandbox: flaky card, attempt {attempts} failed"
                )));
            }
        }
        let plan = self.plan(&request.payment_method);
        let due_at = match plan {
            Some((delay, _)) => Some(
                Utc::now()
                    + chrono::Duration::from_std(delay)
                        .map_err(|_| GatewayError::Refused("answer delay out of range".into()))?,
            ),
            None => None,
        };
        let accepted = Accepted {
            request: request.clone(),
            due_at,
            answer: None,
        };
        // Another call with this key may have been accepted meanwhile.
        if let Some(known) = self.books.accept(&accepted).await? {
            return self.repeat(request, known);
        }
        if let Some((delay, decline)) = plan {
            self.answer_later(request, delay, decline);
        }
        Ok(())
    }

    async fn status(&self, idempotency_key: &str) -> Result<RequestStatus, GatewayError> {
        let Some(accepted) = self.books.request(idempotency_key).await? else {
            return Ok(RequestStatus::Unknown);
        };
        if let Some(answer) = accepted.answer {
            return Ok(RequestStatus::Answered(answer));
        }
        let overdue = accepted.due_at.is_some_and(|due| {
            Utc::now() - due > chrono::Duration::from_std(OVERDUE).unwrap_or_default()
        });
        match self.plan(&accepted.request.payment_method) {
            Some((_, decline)) if overdue => {
                let answer = self
                    .books
                    .answer(idempotency_key, decision(decline), accepted.request.amount)
                    .await?;
                Ok(RequestStatus::Answered(answer))
            }
            _ => Ok(RequestStatus::Pending),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn capture(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError> {
        self.local().take_fault(Operation::Capture)?;
        require_positive(amount)?;
        let movement = movement(
            Operation::Capture,
            idempotency_key,
            authorization_id,
            amount,
        );
        self.books.apply(&movement, ledger::capture).await
    }

    #[tracing::instrument(skip(self))]
    async fn void(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
    ) -> Result<(), GatewayError> {
        self.local().take_fault(Operation::Void)?;
        // A void has no amount of its own; 0 stands for "the whole hold".
        let movement = movement(Operation::Void, idempotency_key, authorization_id, 0);
        self.books.apply(&movement, ledger::void).await
    }

    #[tracing::instrument(skip(self))]
    async fn refund(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError> {
        self.local().take_fault(Operation::Refund)?;
        require_positive(amount)?;
        let movement = movement(Operation::Refund, idempotency_key, authorization_id, amount);
        self.books.apply(&movement, ledger::refund).await
    }
}

fn movement(operation: Operation, key: &str, authorization_id: &str, amount: i64) -> Movement {
    Movement {
        operation,
        idempotency_key: key.to_owned(),
        authorization_id: authorization_id.to_owned(),
        amount,
    }
}

const TOK_VISA: &str = "tok_visa";
const TOK_DECLINED: &str = "tok_declined";
const TOK_TIMEOUT: &str = "tok_timeout";
const TOK_FLAKY: &str = "tok_flaky";
const TOK_LATE: &str = "tok_late";

fn deliver(callbacks: &UnboundedSender<Callback>, callback: Callback) {
    if callbacks.send(callback).is_err() {
        tracing::warn!("sandbox gateway callback dropped: the receiver is gone");
    }
}
