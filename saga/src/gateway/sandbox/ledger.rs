//! The sandbox's books: accepted requests, authorisations and every
//! movement of money. [`Books`] is where they live: [`MemoryBooks`] in one
//! process, [`PgBooks`](super::PgBooks) in Postgres, shared by every process
//! of a deployment (as a real provider's books are). The rules that decide
//! whether money may move are here once, as [`Rule`]s, and each kind of
//! books applies them atomically.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::gateway::{AuthorizationRequest, GatewayAnswer, GatewayError, Operation};

/// An accepted authorisation request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The request as first accepted.
    pub request: AuthorizationRequest,
    /// When its answer is due (`None`: never, as for `tok_timeout`).
    pub due_at: Option<DateTime<Utc>>,
    /// The answer, once given; it never changes afterwards.
    pub answer: Option<GatewayAnswer>,
}

/// An approved authorisation and the money moved against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// The amount held.
    pub amount: i64,
    /// Captured so far.
    pub captured: i64,
    /// Refunded so far.
    pub refunded: i64,
    /// Whether the hold was released.
    pub voided: bool,
}

impl Authorization {
    /// A fresh hold of `amount`.
    pub fn new(amount: i64) -> Self {
        Self {
            amount,
            captured: 0,
            refunded: 0,
            voided: false,
        }
    }
}

/// A capture, void or refund that took effect (a void's amount is 0: the
/// whole hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// Capture, void or refund.
    pub operation: Operation,
    /// The call's idempotency key.
    pub idempotency_key: String,
    /// The authorisation it moved money on.
    pub authorization_id: String,
    /// The amount moved.
    pub amount: i64,
}

/// Checks a movement against an authorisation and applies it, or refuses.
pub type Rule = fn(&mut Authorization, i64) -> Result<(), GatewayError>;

/// Where the sandbox keeps its books. Every method is atomic on its own; an
/// `Err` is [`GatewayError::Transient`] when the books could not be reached
/// (worth retrying), and nothing changed.
#[async_trait::async_trait]
pub trait Books: Send + Sync + 'static {
    /// Accepts `accepted` unless its key is known; answers what was known
    /// (`None` when it is newly accepted).
    async fn accept(&self, accepted: &Accepted) -> Result<Option<Accepted>, GatewayError>;

    /// The request accepted under `key`, if any.
    async fn request(&self, key: &str) -> Result<Option<Accepted>, GatewayError>;

    /// Gives the request under `key` its answer (opening the authorisation
    /// when it is an approval for `amount`), unless it already has one;
    /// answers the request's answer from then on, the first one given.
    async fn answer(
        &self,
        key: &str,
        answer: GatewayAnswer,
        amount: i64,
    ) -> Result<GatewayAnswer, GatewayError>;

    /// Moves money: unless a call with the same operation and key already
    /// took effect (then, with the same authorisation and amount, nothing
    /// more happens; with others it is refused), applies `rule` to the
    /// authorisation and records the movement, as one step.
    async fn apply(&self, movement: &Movement, rule: Rule) -> Result<(), GatewayError>;

    /// Every movement of `operation` that took effect, in order.
    async fn movements(&self, operation: Operation) -> Result<Vec<Movement>, GatewayError>;
}

/// Books in this process's memory, behind one lock never held across an
/// await: for a single process and for tests.
#[derive(Default)]
pub struct MemoryBooks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    requests: HashMap<String, Accepted>,
    authorizations: HashMap<String, Authorization>,
    movements: Vec<Movement>,
}

impl MemoryBooks {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock (every check comes before the
        // first write), so a poisoned lock still guards consistent books.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Books for MemoryBooks {
    async fn accept(&self, accepted: &Accepted) -> Result<Option<Accepted>, GatewayError> {
        let mut state = self.state();
        let key = &accepted.request.idempotency_key;
        if let Some(known) = state.requests.get(key) {
            return Ok(Some(known.clone()));
        }
        state.requests.insert(key.clone(), accepted.clone());
        Ok(None)
    }

    async fn request(&self, key: &str) -> Result<Option<Accepted>, GatewayError> {
        Ok(self.state().requests.get(key).cloned())
    }

    async fn answer(
        &self,
        key: &str,
        answer: GatewayAnswer,
        amount: i64,
    ) -> Result<GatewayAnswer, GatewayError> {
        let mut state = self.state();
        let entry = state
            .requests
            .get_mut(key)
            .ok_or_else(|| refused(&format!("no request with key {key}")))?;
        if let Some(given) = &entry.answer {
            return Ok(given.clone());
        }
        entry.answer = Some(answer.clone());
        if let GatewayAnswer::Approved { authorization_id } = &answer {
            state
                .authorizations
                .insert(authorization_id.clone(), Authorization::new(amount));
        }
        Ok(answer)
    }

    async fn apply(&self, movement: &Movement, rule: Rule) -> Result<(), GatewayError> {
        let mut state = self.state();
        if let Some(done) = state.movements.iter().find(|m| {
            m.operation == movement.operation && m.idempotency_key == movement.idempotency_key
        }) {
            return same_call(done, movement);
        }
        let authorization = state
            .authorizations
            .get_mut(&movement.authorization_id)
            .ok_or_else(|| unknown_authorization(&movement.authorization_id))?;
        rule(authorization, movement.amount)?;
        state.movements.push(movement.clone());
        Ok(())
    }

    async fn movements(&self, operation: Operation) -> Result<Vec<Movement>, GatewayError> {
        let state = self.state();
        Ok(state
            .movements
            .iter()
            .filter(|m| m.operation == operation)
            .cloned()
            .collect())
    }
}

/// A repeat of a call that took effect: nothing more to do when it names
/// the same authorisation and amount, refused when it reuses the key.
pub(super) fn same_call(done: &Movement, repeat: &Movement) -> Result<(), GatewayError> {
    if done.authorization_id == repeat.authorization_id && done.amount == repeat.amount {
        Ok(())
    } else {
        Err(key_reused(&repeat.idempotency_key))
    }
}

/// A capture: of an unvoided hold, within what is not captured yet.
pub(super) fn capture(authorization: &mut Authorization, amount: i64) -> Result<(), GatewayError> {
    if authorization.voided {
        return Err(refused("authorization is voided"));
    }
    if amount > authorization.amount - authorization.captured {
        return Err(refused("capture exceeds the uncaptured authorized amount"));
    }
    authorization.captured += amount;
    Ok(())
}

/// A void: of a hold neither captured nor voided.
pub(super) fn void(authorization: &mut Authorization, _: i64) -> Result<(), GatewayError> {
    if authorization.captured > 0 {
        return Err(refused("authorization is captured; refund it instead"));
    }
    if authorization.voided {
        return Err(refused("authorization is already voided"));
    }
    authorization.voided = true;
    Ok(())
}

/// A refund: within what is captured and not yet refunded.
pub(super) fn refund(authorization: &mut Authorization, amount: i64) -> Result<(), GatewayError> {
    if amount > authorization.captured - authorization.refunded {
        return Err(refused(
            "refund exceeds the captured amount not yet refunded",
        ));
    }
    authorization.refunded += amount;
    Ok(())
}

pub(super) fn require_positive(amount: i64) -> Result<(), GatewayError> {
    if amount > 0 {
        Ok(())
    } else {
        Err(refused(&format!("amount must be positive, got {amount}")))
    }
}

pub(super) fn refused(reason: &str) -> GatewayError {
    GatewayError::Refused(reason.to_owned())
}

pub(super) fn unknown_authorization(id: &str) -> GatewayError {
    refused(&format!("unknown authorization {id}"))
}

pub(super) fn key_reused(key: &str) -> GatewayError {
    refused(&format!(
        "idempotency key {key} was already used with different parameters"
    ))
}
