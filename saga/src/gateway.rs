//! The payment gateway port, and the in-process sandbox behind it.
//!
//! The saga reaches payment providers only through [`PaymentGateway`]. As with a
//! real provider, an authorisation is answered asynchronously:
//! [`PaymentGateway::authorize`] only accepts the request, the answer arrives
//! later as a [`Callback`] (the webhook), and [`PaymentGateway::status`] asks
//! for it by idempotency key when a callback may have been lost.
//!
//! [`SandboxGateway`] answers by payment-method token (see [`SandboxGateway`]),
//! keeps its ledger in memory and records every movement of money, so tests can
//! check that no retry ever moved money twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

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

/// Everything the sandbox remembers; one lock, never held across an await.
#[derive(Default)]
struct Ledger {
    requests: HashMap<String, Accepted>,
    flaky_attempts: HashMap<String, u32>,
    authorizations: HashMap<String, Authorization>,
    faults: HashMap<Operation, u32>,
    /// Capture, void and refund calls that took effect: (authorization id, amount) by key
    /// (amount 0 for a void).
    done: HashMap<(Operation, String), (String, i64)>,
    captures: Vec<(String, String, i64)>,
    voids: Vec<(String, String)>,
    refunds: Vec<(String, String, i64)>,
}

/// An accepted authorisation request and what became of it.
struct Accepted {
    request: AuthorizationRequest,
    status: RequestStatus,
}

struct Authorization {
    amount: i64,
    captured: i64,
    refunded: i64,
    voided: bool,
}

impl Authorization {
    fn new(amount: i64) -> Self {
        Self {
            amount,
            captured: 0,
            refunded: 0,
            voided: false,
        }
    }
}

impl Ledger {
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

    /// Whether a call with this key already took effect with the same
    /// parameters (so there is nothing more to do); a key reused with other
    /// parameters is refused.
    fn already_done(
        &mut self,
        operation: Operation,
        key: &str,
        authorization_id: &str,
        amount: i64,
    ) -> Result<bool, GatewayError> {
        match self.done.get(&(operation, key.to_owned())) {
            None => Ok(false),
            Some((id, done)) if id == authorization_id && *done == amount => Ok(true),
            Some(_) => Err(key_reused(key)),
        }
    }

    fn done(&mut self, operation: Operation, key: &str, authorization_id: &str, amount: i64) {
        let record = (authorization_id.to_owned(), amount);
        self.done.insert((operation, key.to_owned()), record);
    }

    fn authorization(&mut self, id: &str) -> Result<&mut Authorization, GatewayError> {
        self.authorizations
            .get_mut(id)
            .ok_or_else(|| refused(&format!("unknown authorization {id}")))
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // Nothing panics while holding the lock (every check comes before the
    // first write), so a poisoned ledger is still consistent.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

fn deliver(callbacks: &UnboundedSender<Callback>, callback: Callback) {
    if callbacks.send(callback).is_err() {
        tracing::warn!("sandbox gateway callback dropped: the receiver is gone");
    }
}

fn require_positive(amount: i64) -> Result<(), GatewayError> {
    if amount > 0 {
        Ok(())
    } else {
        Err(refused(&format!("amount must be positive, got {amount}")))
    }
}

fn refused(reason: &str) -> GatewayError {
    GatewayError::Refused(reason.to_owned())
}

fn key_reused(key: &str) -> GatewayError {
    refused(&format!(
        "idempotency key {key} was already used with different parameters"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::time::{timeout, Instant};

    /// Long enough for any callback the sandbox sends, so a test never hangs.
    const PATIENCE: Duration = Duration::from_secs(5);

    fn sandbox() -> (Arc<SandboxGateway>, UnboundedReceiver<Callback>) {
        SandboxGateway::new(SandboxConfig::default())
    }

    fn request(key: &str, token: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            idempotency_key: key.to_owned(),
            order_id: Uuid::new_v4(),
            amount: 1_000,
            currency: "EUR".to_owned(),
            payment_method: token.to_owned(),
        }
    }

    async fn next_callback(callbacks: &mut UnboundedReceiver<Callback>) -> Callback {
        timeout(PATIENCE, callbacks.recv())
            .await
            .expect("a callback in time")
            .expect("the sandbox is alive")
    }

    async fn no_callback_within(callbacks: &mut UnboundedReceiver<Callback>, wait: Duration) {
        let received = timeout(wait, callbacks.recv()).await;
        assert!(received.is_err(), "unexpected callback: {received:?}");
    }

    /// Authorises 1000 with `tok_visa` and waits for the approval.
    async fn approved(
        gateway: &SandboxGateway,
        callbacks: &mut UnboundedReceiver<Callback>,
        key: &str,
    ) -> String {
        gateway.authorize(&request(key, TOK_VISA)).await.unwrap();
        match next_callback(callbacks).await.answer {
            GatewayAnswer::Approved { authorization_id } => authorization_id,
            other => panic!("expected an approval, got {other:?}"),
        }
    }

    fn declined(reason: &str) -> GatewayAnswer {
        GatewayAnswer::Declined {
            reason: reason.to_owned(),
        }
    }

    fn is_refused(result: Result<(), GatewayError>) -> bool {
        matches!(result, Err(GatewayError::Refused(_)))
    }

    #[tokio::test]
    async fn a_visa_card_is_approved_by_callback_with_a_fresh_authorization_id() {
        let (gateway, mut callbacks) = sandbox();
        let visa = request("pay-1", TOK_VISA);

        gateway.authorize(&visa).await.unwrap();
        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Pending
        );
        let callback = next_callback(&mut callbacks).await;

        assert_eq!(callback.idempotency_key, "pay-1");
        assert_eq!(callback.order_id, visa.order_id);
        let GatewayAnswer::Approved { authorization_id } = &callback.answer else {
            panic!("expected an approval, got {:?}", callback.answer);
        };
        let suffix = authorization_id.strip_prefix("auth_").unwrap();
        assert!(Uuid::try_parse(suffix).is_ok() && suffix.len() == 32);
        let status = gateway.status("pay-1").await.unwrap();
        assert_eq!(status, RequestStatus::Answered(callback.answer.clone()));
        let other = approved(&gateway, &mut callbacks, "pay-2").await;
        assert_ne!(&other, authorization_id);
    }

    #[tokio::test]
    async fn a_declined_card_is_declined_by_callback() {
        let (gateway, mut callbacks) = sandbox();

        gateway
            .authorize(&request("pay-1", TOK_DECLINED))
            .await
            .unwrap();
        let callback = next_callback(&mut callbacks).await;

        assert_eq!(callback.answer, declined("card declined"));
        let status = gateway.status("pay-1").await.unwrap();
        assert_eq!(status, RequestStatus::Answered(declined("card declined")));
    }

    #[tokio::test]
    async fn an_unknown_token_is_declined_as_an_unknown_payment_method() {
        let (gateway, mut callbacks) = sandbox();

        gateway
            .authorize(&request("pay-1", "tok_mystery"))
            .await
            .unwrap();

        let answer = next_callback(&mut callbacks).await.answer;
        assert_eq!(answer, declined("unknown payment method"));
    }

    #[tokio::test]
    async fn a_timeout_card_is_accepted_but_never_answered() {
        let (gateway, mut callbacks) = sandbox();

        gateway
            .authorize(&request("pay-1", TOK_TIMEOUT))
            .await
            .unwrap();

        // Forty answer delays: any answer would have come by now.
        no_callback_within(&mut callbacks, Duration::from_millis(200)).await;
        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Pending
        );
    }

    #[tokio::test]
    async fn a_flaky_card_fails_twice_per_key_then_is_approved() {
        let (gateway, mut callbacks) = sandbox();
        let flaky = request("pay-1", TOK_FLAKY);

        for _ in 0..2 {
            let attempt = gateway.authorize(&flaky).await;
            assert!(matches!(attempt, Err(GatewayError::Transient(_))));
            assert_eq!(
                gateway.status("pay-1").await.unwrap(),
                RequestStatus::Unknown
            );
        }
        let other_key = gateway.authorize(&request("pay-2", TOK_FLAKY)).await;
        gateway.authorize(&flaky).await.unwrap();

        assert!(matches!(other_key, Err(GatewayError::Transient(_))));
        let callback = next_callback(&mut callbacks).await;
        assert_eq!(callback.idempotency_key, "pay-1");
        assert!(matches!(callback.answer, GatewayAnswer::Approved { .. }));
    }

    #[tokio::test]
    async fn a_late_card_is_approved_only_after_the_late_delay() {
        let late_delay = Duration::from_millis(300);
        let config = SandboxConfig {
            late_delay,
            ..SandboxConfig::default()
        };
        let (gateway, mut callbacks) = SandboxGateway::new(config);
        let started = Instant::now();

        gateway
            .authorize(&request("pay-1", TOK_LATE))
            .await
            .unwrap();

        no_callback_within(&mut callbacks, Duration::from_millis(100)).await;
        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Pending
        );
        let callback = next_callback(&mut callbacks).await;
        assert!(started.elapsed() >= late_delay);
        assert!(matches!(callback.answer, GatewayAnswer::Approved { .. }));
        let status = gateway.status("pay-1").await.unwrap();
        assert_eq!(status, RequestStatus::Answered(callback.answer));
    }

    #[tokio::test]
    async fn an_unseen_key_has_unknown_status() {
        let (gateway, _callbacks) = sandbox();

        let status = gateway.status("never-sent").await.unwrap();

        assert_eq!(status, RequestStatus::Unknown);
    }

    #[tokio::test]
    async fn repeating_an_answered_authorisation_resends_the_same_callback() {
        let (gateway, mut callbacks) = sandbox();
        let visa = request("pay-1", TOK_VISA);
        gateway.authorize(&visa).await.unwrap();
        let first = next_callback(&mut callbacks).await;

        gateway.authorize(&visa).await.unwrap();

        assert_eq!(next_callback(&mut callbacks).await, first);
        no_callback_within(&mut callbacks, Duration::from_millis(50)).await;
        let status = gateway.status("pay-1").await.unwrap();
        assert_eq!(status, RequestStatus::Answered(first.answer));
    }

    #[tokio::test]
    async fn repeating_a_pending_authorisation_sends_nothing_new() {
        let (gateway, mut callbacks) = sandbox();
        let visa = request("pay-1", TOK_VISA);

        gateway.authorize(&visa).await.unwrap();
        gateway.authorize(&visa).await.unwrap();

        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Pending
        );
        next_callback(&mut callbacks).await;
        no_callback_within(&mut callbacks, Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_key_reused_for_a_different_authorisation_is_refused() {
        let (gateway, _callbacks) = sandbox();
        gateway
            .authorize(&request("pay-1", TOK_VISA))
            .await
            .unwrap();

        let reused = gateway.authorize(&request("pay-1", TOK_VISA)).await;

        assert!(is_refused(reused), "another order under the same key");
    }

    #[tokio::test]
    async fn injected_faults_fail_the_next_calls_and_then_wear_off() {
        let (gateway, mut callbacks) = sandbox();
        let visa = request("pay-1", TOK_VISA);
        gateway.fail_next(Operation::Authorize, 2);

        for _ in 0..2 {
            let attempt = gateway.authorize(&visa).await;
            assert!(matches!(attempt, Err(GatewayError::Transient(_))));
        }
        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Unknown
        );
        gateway.authorize(&visa).await.unwrap();

        next_callback(&mut callbacks).await;
    }

    #[tokio::test]
    async fn injected_faults_come_before_every_other_rule_and_move_no_money() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway.fail_next(Operation::Capture, 1);
        gateway.fail_next(Operation::Void, 1);

        let capture = gateway.capture("cap-1", &authorization, 1_000).await;
        let void_unknown = gateway.void("void-1", "auth_unknown").await;

        assert!(matches!(capture, Err(GatewayError::Transient(_))));
        assert!(matches!(void_unknown, Err(GatewayError::Transient(_))));
        assert!(gateway.captures().is_empty());
        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();
        assert_eq!(gateway.captures().len(), 1);
    }

    #[tokio::test]
    async fn clearing_faults_lets_calls_through_again() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway.fail_next(Operation::Capture, 5);
        gateway.fail_next(Operation::Refund, 5);

        gateway.clear_faults();

        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();
        gateway
            .refund("ref-1", &authorization, 1_000)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_repeated_capture_moves_money_once() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;

        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();
        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();

        let expected = vec![("cap-1".to_owned(), authorization, 1_000)];
        assert_eq!(gateway.captures(), expected);
    }

    #[tokio::test]
    async fn a_key_reused_with_other_parameters_is_refused() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway.capture("cap-1", &authorization, 400).await.unwrap();

        let reused = gateway.capture("cap-1", &authorization, 600).await;

        assert!(is_refused(reused));
        assert_eq!(gateway.captures().len(), 1);
    }

    #[tokio::test]
    async fn money_calls_on_an_unknown_authorisation_are_refused() {
        let (gateway, mut callbacks) = sandbox();
        gateway
            .authorize(&request("pay-1", TOK_DECLINED))
            .await
            .unwrap();
        next_callback(&mut callbacks).await;

        assert!(is_refused(gateway.capture("cap-1", "auth_nope", 1).await));
        assert!(is_refused(gateway.void("void-1", "auth_nope").await));
        assert!(is_refused(gateway.refund("ref-1", "auth_nope", 1).await));
        assert!(gateway.captures().is_empty() && gateway.voids().is_empty());
    }

    #[tokio::test]
    async fn non_positive_amounts_are_refused() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        let mut free = request("pay-2", TOK_VISA);
        free.amount = 0;

        assert!(is_refused(gateway.authorize(&free).await));
        assert!(is_refused(
            gateway.capture("cap-1", &authorization, 0).await
        ));
        assert!(is_refused(
            gateway.refund("ref-1", &authorization, -5).await
        ));
        assert_eq!(
            gateway.status("pay-2").await.unwrap(),
            RequestStatus::Unknown
        );
    }

    #[tokio::test]
    async fn capturing_more_than_authorised_is_refused() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway.capture("cap-1", &authorization, 700).await.unwrap();

        let over = gateway.capture("cap-2", &authorization, 301).await;

        assert!(is_refused(over));
        gateway.capture("cap-3", &authorization, 300).await.unwrap();
    }

    #[tokio::test]
    async fn a_captured_authorisation_cannot_be_voided() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();

        assert!(is_refused(gateway.void("void-1", &authorization).await));
        assert!(gateway.voids().is_empty());
    }

    #[tokio::test]
    async fn a_voided_authorisation_cannot_be_captured_and_voids_once() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;

        gateway.void("void-1", &authorization).await.unwrap();
        gateway.void("void-1", &authorization).await.unwrap();

        assert!(is_refused(gateway.void("void-2", &authorization).await));
        let capture = gateway.capture("cap-1", &authorization, 1_000).await;
        assert!(is_refused(capture));
        assert_eq!(gateway.voids(), vec![("void-1".to_owned(), authorization)]);
        assert!(gateway.captures().is_empty());
    }

    #[tokio::test]
    async fn refunds_never_exceed_what_was_captured_and_not_yet_refunded() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        let uncaptured = gateway.refund("ref-0", &authorization, 1).await;
        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();

        gateway.refund("ref-1", &authorization, 600).await.unwrap();
        let too_much = gateway.refund("ref-2", &authorization, 401).await;
        gateway.refund("ref-3", &authorization, 400).await.unwrap();
        let nothing_left = gateway.refund("ref-4", &authorization, 1).await;

        assert!(is_refused(uncaptured));
        assert!(is_refused(too_much));
        assert!(is_refused(nothing_left));
        let amounts: Vec<i64> = gateway.refunds().into_iter().map(|r| r.2).collect();
        assert_eq!(amounts, vec![600, 400]);
    }

    #[tokio::test]
    async fn a_repeated_refund_moves_no_more_money() {
        let (gateway, mut callbacks) = sandbox();
        let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
        gateway
            .capture("cap-1", &authorization, 1_000)
            .await
            .unwrap();

        gateway
            .refund("ref-1", &authorization, 1_000)
            .await
            .unwrap();
        gateway
            .refund("ref-1", &authorization, 1_000)
            .await
            .unwrap();

        let expected = vec![("ref-1".to_owned(), authorization, 1_000)];
        assert_eq!(gateway.refunds(), expected);
    }
}
