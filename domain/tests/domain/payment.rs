use domain::{PaymentCommand::*, PaymentEvent::*, *};
use uuid::Uuid;

use crate::given::Scenario;

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn authorize() -> PaymentCommand {
    AuthorizePayment {
        order_id: id(),
        amount: 3700,
        currency: "EUR".into(),
        authorization_id: "auth-1".into(),
    }
}

fn authorized() -> PaymentEvent {
    PaymentAuthorized {
        order_id: id(),
        amount: 3700,
        currency: "EUR".into(),
        authorization_id: "auth-1".into(),
    }
}

fn declined() -> PaymentEvent {
    PaymentDeclined {
        order_id: id(),
        reason: "card declined".into(),
    }
}

fn captured() -> PaymentEvent {
    PaymentCaptured {
        order_id: id(),
        amount: 3700,
    }
}

fn refunded(amount: i64) -> PaymentEvent {
    PaymentRefunded {
        order_id: id(),
        amount,
    }
}

#[test]
fn authorising_records_the_gateway_approval() {
    let payment = Payment::given([])
        .when(authorize())
        .then_events([authorized()]);
    assert_eq!(payment.status, Some(PaymentStatus::Authorized));
    assert_eq!(payment.amount, 3700);
}

#[test]
fn authorising_twice_with_the_same_approval_does_nothing() {
    Payment::given([authorized()])
        .when(authorize())
        .then_nothing();
}

#[test]
fn authorising_again_with_another_approval_is_a_conflict() {
    Payment::given([authorized()])
        .when(AuthorizePayment {
            order_id: id(),
            amount: 3700,
            currency: "EUR".into(),
            authorization_id: "auth-2".into(),
        })
        .then_conflict();
}

#[test]
fn authorising_a_declined_payment_is_a_conflict() {
    Payment::given([declined()])
        .when(authorize())
        .then_conflict();
}

#[test]
fn authorising_a_non_positive_amount_in_a_bad_currency_is_invalid() {
    Payment::given([])
        .when(AuthorizePayment {
            order_id: Uuid::nil(),
            amount: 0,
            currency: "euro".into(),
            authorization_id: "".into(),
        })
        .then_invalid(&["order_id", "amount", "currency", "authorization_id"]);
}

#[test]
fn declining_records_the_gateway_refusal() {
    let payment = Payment::given([])
        .when(DeclinePayment {
            order_id: id(),
            reason: "card declined".into(),
        })
        .then_events([declined()]);
    assert_eq!(payment.status, Some(PaymentStatus::Declined));
}

#[test]
fn declining_twice_with_the_same_reason_does_nothing() {
    Payment::given([declined()])
        .when(DeclinePayment {
            order_id: id(),
            reason: "card declined".into(),
        })
        .then_nothing();
}

#[test]
fn declining_an_authorised_payment_is_a_conflict() {
    Payment::given([authorized()])
        .when(DeclinePayment {
            order_id: id(),
            reason: "card declined".into(),
        })
        .then_conflict();
}

#[test]
fn declining_without_a_reason_is_invalid() {
    Payment::given([])
        .when(DeclinePayment {
            order_id: id(),
            reason: " ".into(),
        })
        .then_invalid(&["reason"]);
}

#[test]
fn capturing_an_authorised_payment_takes_the_authorised_amount() {
    let payment = Payment::given([authorized()])
        .when(CapturePayment)
        .then_events([captured()]);
    assert_eq!(payment.status, Some(PaymentStatus::Captured));
    assert_eq!(payment.refundable(), 3700);
}

#[test]
fn capturing_a_captured_payment_does_nothing() {
    Payment::given([authorized(), captured()])
        .when(CapturePayment)
        .then_nothing();
}

#[test]
fn capturing_before_authorising_is_a_conflict() {
    Payment::given([]).when(CapturePayment).then_conflict();
}

#[test]
fn capturing_a_declined_or_voided_payment_is_a_conflict() {
    Payment::given([declined()])
        .when(CapturePayment)
        .then_conflict();
    Payment::given([authorized(), PaymentVoided { order_id: id() }])
        .when(CapturePayment)
        .then_conflict();
}

#[test]
fn voiding_an_uncaptured_authorisation_releases_it() {
    let payment = Payment::given([authorized()])
        .when(VoidPayment)
        .then_events([PaymentVoided { order_id: id() }]);
    assert_eq!(payment.status, Some(PaymentStatus::Voided));
}

#[test]
fn voiding_twice_does_nothing() {
    Payment::given([authorized(), PaymentVoided { order_id: id() }])
        .when(VoidPayment)
        .then_nothing();
}

#[test]
fn voiding_a_captured_payment_is_a_conflict() {
    Payment::given([authorized(), captured()])
        .when(VoidPayment)
        .then_conflict();
}

#[test]
fn voiding_before_authorising_is_a_conflict() {
    Payment::given([]).when(VoidPayment).then_conflict();
}

#[test]
fn refunding_part_of_a_captured_payment_records_it() {
    let payment = Payment::given([authorized(), captured()])
        .when(RefundPayment { amount: 1000 })
        .then_events([refunded(1000)]);
    assert_eq!(payment.refunded, 1000);
    assert_eq!(payment.refundable(), 2700);
}

#[test]
fn refunding_the_rest_after_a_partial_refund_is_allowed() {
    let payment = Payment::given([authorized(), captured(), refunded(1000)])
        .when(RefundPayment { amount: 2700 })
        .then_events([refunded(2700)]);
    assert_eq!(payment.refundable(), 0);
}

#[test]
fn refunding_more_than_captured_minus_refunded_is_a_conflict() {
    Payment::given([authorized(), captured(), refunded(1000)])
        .when(RefundPayment { amount: 2701 })
        .then_conflict();
}

#[test]
fn refunding_an_uncaptured_payment_is_a_conflict() {
    Payment::given([authorized()])
        .when(RefundPayment { amount: 100 })
        .then_conflict();
}

#[test]
fn refunding_a_non_positive_amount_is_invalid() {
    Payment::given([authorized(), captured()])
        .when(RefundPayment { amount: 0 })
        .then_invalid(&["amount"]);
}
