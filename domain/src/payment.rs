//! The payment for one order (stream `payment-<order uuid>`): the gateway's
//! authorisation or decline, then capture, void or refunds.
//!
//! The gateway is called outside the domain; these commands record its
//! answers and guard the order in which money may move:
//! authorised → captured → refunded (partially, repeatedly, up to the captured
//! amount), or authorised → voided. Recording the same authorisation or
//! decline twice, capturing a captured payment and voiding a voided one are
//! no-ops; refunds are not (each one moves money).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::impl_domain_event;
use crate::validate::{
    validate_currency, validate_positive_amount, validate_text, Violations, MAX_TEXT_CHARS,
};
use crate::{Aggregate, DomainError};

/// What can be asked of a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum PaymentCommand {
    /// Records the gateway's approval. A no-op if the same authorisation is
    /// already recorded; Conflict if another outcome is.
    AuthorizePayment {
        /// The order paid for.
        order_id: Uuid,
        /// Amount authorised in minor units; positive.
        amount: i64,
        /// ISO 4217 code.
        currency: String,
        /// The gateway's reference; non-blank.
        authorization_id: String,
    },
    /// Records the gateway's refusal. A no-op if the same decline is already
    /// recorded; Conflict if another outcome is.
    DeclinePayment {
        /// The order paid for.
        order_id: Uuid,
        /// The gateway's reason; non-blank.
        reason: String,
    },
    /// Takes the authorised amount. Conflict unless authorised; a no-op if
    /// already captured.
    CapturePayment,
    /// Releases an uncaptured authorisation. Conflict unless authorised; a
    /// no-op if already voided.
    VoidPayment,
    /// Returns part or all of the captured amount. Conflict unless captured or
    /// when more than the captured amount not yet refunded is asked for.
    RefundPayment {
        /// Amount to return in minor units; positive.
        amount: i64,
    },
}

/// What a payment records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum PaymentEvent {
    /// The gateway approved the payment.
    PaymentAuthorized {
        /// The order paid for.
        order_id: Uuid,
        /// Amount authorised in minor units.
        amount: i64,
        /// ISO 4217 code.
        currency: String,
        /// The gateway's reference.
        authorization_id: String,
    },
    /// The gateway refused the payment.
    PaymentDeclined {
        /// The order paid for.
        order_id: Uuid,
        /// The gateway's reason.
        reason: String,
    },
    /// The authorised amount was taken.
    PaymentCaptured {
        /// The order paid for.
        order_id: Uuid,
        /// Amount captured in minor units.
        amount: i64,
    },
    /// The authorisation was released without taking money.
    PaymentVoided {
        /// The order paid for.
        order_id: Uuid,
    },
    /// Captured money was returned.
    PaymentRefunded {
        /// The order paid for.
        order_id: Uuid,
        /// Amount returned in minor units.
        amount: i64,
    },
}

impl_domain_event!(PaymentEvent, &[], {
    PaymentAuthorized = 1,
    PaymentDeclined = 1,
    PaymentCaptured = 1,
    PaymentVoided = 1,
    PaymentRefunded = 1,
});

/// Where a payment is. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Approved, money not yet taken.
    Authorized,
    /// Refused by the gateway (final).
    Declined,
    /// Money taken; refunds possible.
    Captured,
    /// Authorisation released (final).
    Voided,
}

/// A payment's state. The default value (`status == None`) is a payment with
/// no recorded gateway answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// The order paid for; nil until the first event.
    pub order_id: Uuid,
    /// `None` until authorised or declined.
    pub status: Option<PaymentStatus>,
    /// Amount authorised in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The gateway's reference, once authorised.
    pub authorization_id: Option<String>,
    /// The gateway's reason, once declined.
    pub decline_reason: Option<String>,
    /// Amount captured in minor units (0 until captured).
    pub captured: i64,
    /// Sum of all refunds in minor units.
    pub refunded: i64,
}

impl Payment {
    /// Captured money not yet refunded, in minor units.
    pub fn refundable(&self) -> i64 {
        self.captured - self.refunded
    }

    fn conflict(&self, what: &str) -> DomainError {
        let status = match self.status {
            None => "not authorised",
            Some(PaymentStatus::Authorized) => "authorised",
            Some(PaymentStatus::Declined) => "declined",
            Some(PaymentStatus::Captured) => "captured",
            Some(PaymentStatus::Voided) => "voided",
        };
        DomainError::conflict(format!(
            "payment for order {} is {status}; cannot {what}",
            self.order_id
        ))
    }

    fn authorize(
        &self,
        order_id: Uuid,
        amount: i64,
        currency: &str,
        authorization_id: &str,
    ) -> Result<Vec<PaymentEvent>, DomainError> {
        let mut violations = Violations::new();
        if order_id.is_nil() {
            violations.add("order_id", "must not be the nil UUID");
        }
        violations.check("amount", validate_positive_amount(amount));
        violations.check("currency", validate_currency(currency));
        violations.check(
            "authorization_id",
            validate_text(authorization_id, MAX_TEXT_CHARS),
        );
        violations.into_result()?;
        if self.status.is_none() {
            return Ok(vec![PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                currency: currency.to_owned(),
                authorization_id: authorization_id.to_owned(),
            }]);
        }
        let same = self.order_id == order_id
            && self.amount == amount
            && self.currency == currency
            && self.authorization_id.as_deref() == Some(authorization_id);
        if same {
            Ok(vec![])
        } else {
            Err(self.conflict("record another authorisation"))
        }
    }

    fn decline(&self, order_id: Uuid, reason: &str) -> Result<Vec<PaymentEvent>, DomainError> {
        let mut violations = Violations::new();
        if order_id.is_nil() {
            violations.add("order_id", "must not be the nil UUID");
        }
        violations.check("reason", validate_text(reason, MAX_TEXT_CHARS));
        violations.into_result()?;
        match self.status {
            None => Ok(vec![PaymentEvent::PaymentDeclined {
                order_id,
                reason: reason.to_owned(),
            }]),
            Some(PaymentStatus::Declined)
                if self.order_id == order_id && self.decline_reason.as_deref() == Some(reason) =>
            {
                Ok(vec![])
            }
            Some(_) => Err(self.conflict("record another decline")),
        }
    }

    fn refund(&self, amount: i64) -> Result<Vec<PaymentEvent>, DomainError> {
        validate_positive_amount(amount)
            .map_err(|message| DomainError::invalid("amount", message))?;
        if self.status != Some(PaymentStatus::Captured) {
            return Err(self.conflict("refund"));
        }
        if amount > self.refundable() {
            return Err(DomainError::conflict(format!(
                "cannot refund {amount}: only {} of the captured amount is left",
                self.refundable()
            )));
        }
        Ok(vec![PaymentEvent::PaymentRefunded {
            order_id: self.order_id,
            amount,
        }])
    }
}

impl Aggregate for Payment {
    const KIND: crate::StreamKind = crate::StreamKind::Payment;
    type Command = PaymentCommand;
    type Event = PaymentEvent;

    fn decide(&self, command: &PaymentCommand) -> Result<Vec<PaymentEvent>, DomainError> {
        let order_id = self.order_id;
        match command {
            PaymentCommand::AuthorizePayment {
                order_id,
                amount,
                currency,
                authorization_id,
            } => self.authorize(*order_id, *amount, currency, authorization_id),
            PaymentCommand::DeclinePayment { order_id, reason } => self.decline(*order_id, reason),
            PaymentCommand::CapturePayment => match self.status {
                Some(PaymentStatus::Authorized) => Ok(vec![PaymentEvent::PaymentCaptured {
                    order_id,
                    amount: self.amount,
                }]),
                Some(PaymentStatus::Captured) => Ok(vec![]),
                _ => Err(self.conflict("capture")),
            },
            PaymentCommand::VoidPayment => match self.status {
                Some(PaymentStatus::Authorized) => {
                    Ok(vec![PaymentEvent::PaymentVoided { order_id }])
                }
                Some(PaymentStatus::Voided) => Ok(vec![]),
                _ => Err(self.conflict("void")),
            },
            PaymentCommand::RefundPayment { amount } => self.refund(*amount),
        }
    }

    fn evolve(self, event: &PaymentEvent) -> Self {
        match event {
            PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                currency,
                authorization_id,
            } => Self {
                order_id: *order_id,
                status: Some(PaymentStatus::Authorized),
                amount: *amount,
                currency: currency.clone(),
                authorization_id: Some(authorization_id.clone()),
                ..self
            },
            PaymentEvent::PaymentDeclined { order_id, reason } => Self {
                order_id: *order_id,
                status: Some(PaymentStatus::Declined),
                decline_reason: Some(reason.clone()),
                ..self
            },
            PaymentEvent::PaymentCaptured { amount, .. } => Self {
                status: Some(PaymentStatus::Captured),
                captured: *amount,
                ..self
            },
            PaymentEvent::PaymentVoided { .. } => Self {
                status: Some(PaymentStatus::Voided),
                ..self
            },
            PaymentEvent::PaymentRefunded { amount, .. } => Self {
                refunded: self.refunded.saturating_add(*amount),
                ..self
            },
        }
    }
}
