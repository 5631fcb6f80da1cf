//! The sandbox's books: accepted requests, authorisations, injected faults
//! and every movement of money, behind one lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::gateway::{AuthorizationRequest, GatewayError, Operation, RequestStatus};

/// Everything the sandbox remembers; one lock, never held across an await.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) requests: HashMap<String, Accepted>,
    pub(super) flaky_attempts: HashMap<String, u32>,
    pub(super) authorizations: HashMap<String, Authorization>,
    pub(super) faults: HashMap<Operation, u32>,
    /// Capture, void and refund calls that took effect: (authorization id, amount) by key
    /// (amount 0 for a void).
    pub(super) done: HashMap<(Operation, String), (String, i64)>,
    pub(super) captures: Vec<(String, String, i64)>,
    pub(super) voids: Vec<(String, String)>,
    pub(super) refunds: Vec<(String, String, i64)>,
}

/// An accepted authorisation request and what became of it.
pub(super) struct Accepted {
    pub(super) request: AuthorizationRequest,
    pub(super) status: RequestStatus,
}

/// An approved authorisation and the money moved against it.
pub(super) struct Authorization {
    pub(super) amount: i64,
    pub(super) captured: i64,
    pub(super) refunded: i64,
    pub(super) voided: bool,
}

impl Authorization {
    pub(super) fn new(amount: i64) -> Self {
        Self {
            amount,
            captured: 0,
            refunded: 0,
            voided: false,
        }
    }
}

impl Ledger {
    pub(super) fn take_fault(&mut self, operation: Operation) -> Result<(), GatewayError> {
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
    pub(super) fn already_done(
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

    pub(super) fn done(
        &mut self,
        operation: Operation,
        key: &str,
        authorization_id: &str,
        amount: i64,
    ) {
        let record = (authorization_id.to_owned(), amount);
        self.done.insert((operation, key.to_owned()), record);
    }

    pub(super) fn authorization(&mut self, id: &str) -> Result<&mut Authorization, GatewayError> {
        self.authorizations
            .get_mut(id)
            .ok_or_else(|| refused(&format!("unknown authorization {id}")))
    }
}

pub(super) fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // Nothing panics while holding the lock (every check comes before the
    // first write), so a poisoned ledger is still consistent.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
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

pub(super) fn key_reused(key: &str) -> GatewayError {
    refused(&format!(
        "idempotency key {key} was already used with different parameters"
    ))
}
