//! The in-process sandbox gateway: answers by payment-method token, after a
//! delay, from a ledger kept in memory.

mod ledger;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use super::{
    AuthorizationRequest, Callback, GatewayAnswer, GatewayError, Operation, PaymentGateway,
    RequestStatus,
};
use ledger::{key_reused, lock, refused, require_positive, Accepted, Authorization, Ledger};

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

/// The built-in sandbox gateway: answers by payment-method token, in memory.
///
/// `tok_visa` is approved; `tok_declined` is declined ("card declined");
/// `tok_timeout` is accepted and never answered; `tok_flaky` fails its first
/// two `authorize` calls per key with [`GatewayError::Transient`], then is
/// approved; `tok_late` is approved only after [`SandboxConfig::late_delay`];
/// any other token is declined ("unknown payment method"). Answers are sent
/// by a spawned Tokio task after the delay, so `authorize` needs a Tokio
/// runtime; the status turns [`RequestStatus::Answered`] only at that moment.
///
/// A key reused with different parameters is [`GatewayError::Refused`], for
/// every operation. Capture, void and refund are refused for an unknown
/// authorisation, a non-positive amount, a capture past the authorised amount
/// or of a voided authorisation, a void of a captured (or already voided)
/// authorisation, and a refund past what is captured and not yet refunded.
/// Injected faults come before every other rule.
pub struct SandboxGateway {
    config: SandboxConfig,
    ledger: Arc<Mutex<Ledger>>,
    callbacks: UnboundedSender<Callback>,
}

impl SandboxGateway {
    /// A sandbox, and the receiving end of its callbacks (the "webhook").
    pub fn new(config: SandboxConfig) -> (Arc<SandboxGateway>, UnboundedReceiver<Callback>) {
        let (callbacks, receiver) = mpsc::unbounded_channel();
        let gateway = SandboxGateway {
            config,
            ledger: Arc::default(),
            callbacks,
        };
        (Arc::new(gateway), receiver)
    }

    /// Makes the next `times` calls of `operation` fail with GatewayError::Transient (fault injection for tests).
    /// Replaces any count left from an earlier call for the same operation.
    pub fn fail_next(&self, operation: Operation, times: u32) {
        self.ledger().faults.insert(operation, times);
    }

    /// Clears injected faults.
    pub fn clear_faults(&self) {
        self.ledger().faults.clear();
    }

    /// How many times money actually moved, per operation kind and key: for invariants in tests
    /// (e.g. `captures()` lists (idempotency_key, authorization_id, amount) of every capture that took effect; same for voids and refunds).
    pub fn captures(&self) -> Vec<(String, String, i64)> {
        self.ledger().captures.clone()
    }

    /// (idempotency_key, authorization_id) of every void that took effect, in order.
    pub fn voids(&self) -> Vec<(String, String)> {
        self.ledger().voids.clone()
    }

    /// (idempotency_key, authorization_id, amount) of every refund that took effect, in order.
    pub fn refunds(&self) -> Vec<(String, String, i64)> {
        self.ledger().refunds.clone()
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Answers `request` after `delay`, from a task of its own, as a webhook would:
    /// approves it when `decline` is None, else declines it with that reason.
    fn answer_later(
        &self,
        request: &AuthorizationRequest,
        delay: Duration,
        decline: Option<&'static str>,
    ) {
        let ledger = Arc::clone(&self.ledger);
        let callbacks = self.callbacks.clone();
        let (key, order_id, amount) = (
            request.idempotency_key.clone(),
            request.order_id,
            request.amount,
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let answer = match decline {
                None => GatewayAnswer::Approved {
                    authorization_id: format!("auth_{}", Uuid::new_v4().simple()),
                },
                Some(reason) => GatewayAnswer::Declined {
                    reason: reason.to_owned(),
                },
            };
            let mut ledger = lock(&ledger);
            if let GatewayAnswer::Approved { authorization_id } = &answer {
                let authorization = Authorization::new(amount);
                ledger
                    .authorizations
                    .insert(authorization_id.clone(), authorization);
            }
            if let Some(entry) = ledger.requests.get_mut(&key) {
                entry.status = RequestStatus::Answered(answer.clone());
            }
            // Sent under the lock, so a concurrent repeat cannot overtake the first callback.
            deliver(
                &callbacks,
                Callback {
                    idempotency_key: key,
                    order_id,
                    answer,
                },
            );
        });
    }
}

#[async_trait::async_trait]
impl PaymentGateway for SandboxGateway {
    #[tracing::instrument(skip_all, fields(idempotency_key = %request.idempotency_key, payment_method = %request.payment_method))]
    async fn authorize(&self, request: &AuthorizationRequest) -> Result<(), GatewayError> {
        {
            let mut ledger = self.ledger();
            ledger.take_fault(Operation::Authorize)?;
            require_positive(request.amount)?;
            let key = &request.idempotency_key;
            if let Some(known) = ledger.requests.get(key) {
                if known.request != *request {
                    return Err(key_reused(key));
                }
                if let RequestStatus::Answered(answer) = &known.status {
                    let callback = Callback {
                        idempotency_key: key.clone(),
                        order_id: request.order_id,
                        answer: answer.clone(),
                    };
                    deliver(&self.callbacks, callback);
                }
                return Ok(());
            }
            if request.payment_method == TOK_FLAKY {
                let attempts = ledger.flaky_attempts.entry(key.clone()).or_default();
                *attempts += 1;
                if *attempts <= 2 {
                    return Err(GatewayError::Transient(format!(
                        "sandbox: flaky card, attempt {attempts} failed"
                    )));
                }
            }
            let accepted = Accepted {
                request: request.clone(),
                status: RequestStatus::Pending,
            };
            ledger.requests.insert(key.clone(), accepted);
        }
        let (answer_delay, late_delay) = (self.config.answer_delay, self.config.late_delay);
        match request.payment_method.as_str() {
            TOK_VISA | TOK_FLAKY => self.answer_later(request, answer_delay, None),
            TOK_LATE => self.answer_later(request, late_delay, None),
            TOK_TIMEOUT => {}
            TOK_DECLINED => self.answer_later(request, answer_delay, Some("card declined")),
            _ => self.answer_later(request, answer_delay, Some("unknown payment method")),
        }
        Ok(())
    }

    async fn status(&self, idempotency_key: &str) -> Result<RequestStatus, GatewayError> {
        let ledger = self.ledger();
        Ok(ledger
            .requests
            .get(idempotency_key)
            .map_or(RequestStatus::Unknown, |entry| entry.status.clone()))
    }

    #[tracing::instrument(skip(self))]
    async fn capture(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError> {
        let mut ledger = self.ledger();
        let operation = Operation::Capture;
        ledger.take_fault(operation)?;
        require_positive(amount)?;
        if ledger.already_done(operation, idempotency_key, authorization_id, amount)? {
            return Ok(());
        }
        let authorization = ledger.authorization(authorization_id)?;
        if authorization.voided {
            return Err(refused("authorization is voided"));
        }
        if amount > authorization.amount - authorization.captured {
            return Err(refused("capture exceeds the uncaptured authorized amount"));
        }
        authorization.captured += amount;
        ledger.done(operation, idempotency_key, authorization_id, amount);
        let capture = (
            idempotency_key.to_owned(),
            authorization_id.to_owned(),
            amount,
        );
        ledger.captures.push(capture);
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn void(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
    ) -> Result<(), GatewayError> {
        let mut ledger = self.ledger();
        let operation = Operation::Void;
        ledger.take_fault(operation)?;
        // A void has no amount of its own; 0 stands for "the whole hold".
        if ledger.already_done(operation, idempotency_key, authorization_id, 0)? {
            return Ok(());
        }
        let authorization = ledger.authorization(authorization_id)?;
        if authorization.captured > 0 {
            return Err(refused("authorization is captured; refund it instead"));
        }
        if authorization.voided {
            return Err(refused("authorization is already voided"));
        }
        authorization.voided = true;
        ledger.done(operation, idempotency_key, authorization_id, 0);
        let void = (idempotency_key.to_owned(), authorization_id.to_owned());
        ledger.voids.push(void);
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn refund(
        &self,
        idempotency_key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<(), GatewayError> {
        let mut ledger = self.ledger();
        let operation = Operation::Refund;
        ledger.take_fault(operation)?;
        require_positive(amount)?;
        if ledger.already_done(operation, idempotency_key, authorization_id, amount)? {
            return Ok(());
        }
        let authorization = ledger.authorization(authorization_id)?;
        if amount > authorization.captured - authorization.refunded {
            return Err(refused(
                "refund exceeds the captured amount not yet refunded",
            ));
        }
        authorization.refunded += amount;
        ledger.done(operation, idempotency_key, authorization_id, amount);
        let refund = (
            idempotency_key.to_owned(),
            authorization_id.to_owned(),
            amount,
        );
        ledger.refunds.push(refund);
        Ok(())
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
