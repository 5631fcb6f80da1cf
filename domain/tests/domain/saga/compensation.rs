//! Undoing what succeeded, newest first: the payment, then the stock, then
//! the order.

use domain::saga::StepStatus;
use domain::SagaStatus;

use super::*;
use crate::given::Scenario;

fn compensation_started(reason: CancelReason, seconds: i64) -> SagaEvent {
    SagaEvent::SagaCompensationStarted {
        reason,
        at: at(seconds),
    }
}

fn compensated(seconds: i64) -> SagaEvent {
    SagaEvent::SagaCompensated { at: at(seconds) }
}

fn time_out(attempt: u32, seconds: i64) -> SagaCommand {
    SagaCommand::TimeOut {
        step: Step::AuthorizePayment,
        attempt,
        now: at(seconds),
    }
}

/// Line 1 reserved, line 2 out of stock.
fn second_line_out_of_stock() -> History {
    reserving()
        .observed(reserved(MUG))
        .observed(out_of_stock(TEA))
}

#[test]
fn a_line_out_of_stock_releases_only_the_lines_reserved() {
    let saga = Saga::given(second_line_out_of_stock().events())
        .when(advance(1))
        .then_events([
            compensation_started(CancelReason::OutOfStock, 1),
            step_started(release(MUG), 1, 1),
        ]);
    assert_eq!(saga.status, SagaStatus::Compensating);
    assert_eq!(saga.failure, Some(CancelReason::OutOfStock));
}

#[test]
fn released_stock_cancels_the_order() {
    let given = second_line_out_of_stock()
        .advanced(1)
        .observed(released(MUG));
    Saga::given(given.events())
        .when(advance(2))
        .then_events([step_started(Step::CancelOrder, 1, 2)]);
}

#[test]
fn a_cancelled_order_compensates_the_saga() {
    let given = second_line_out_of_stock()
        .advanced(1)
        .observed(released(MUG))
        .advanced(2)
        .observed(cancelled(CancelReason::OutOfStock));
    let saga = Saga::given(given.events())
        .when(advance(3))
        .then_events([compensated(3)]);
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert_eq!(saga.wanted(), vec![]);
}

#[test]
fn a_declined_payment_releases_the_stock_without_payment_steps() {
    let given = paying().observed(Fact::PaymentDeclined {
        reason: "card declined".into(),
    });
    Saga::given(given.events()).when(advance(2)).then_events([
        compensation_started(CancelReason::PaymentDeclined, 2),
        step_started(release(MUG), 1, 2),
        step_started(release(TEA), 1, 2),
    ]);
}

#[test]
fn a_rejected_shipment_voids_the_payment_then_releases_then_cancels() {
    let rejected = requesting_shipment().observed(Fact::ShipmentRejected {
        reason: "unsupported destination".into(),
    });
    Saga::given(rejected.events())
        .when(advance(3))
        .then_events([
            compensation_started(CancelReason::ShipmentRejected, 3),
            step_started(Step::VoidPayment, 1, 3),
        ]);

    let voided = rejected.advanced(3).observed(Fact::PaymentVoided);
    Saga::given(voided.events()).when(advance(4)).then_events([
        step_started(release(MUG), 1, 4),
        step_started(release(TEA), 1, 4),
    ]);

    let released_both = voided
        .advanced(4)
        .observed(released(MUG))
        .observed(released(TEA));
    Saga::given(released_both.events())
        .when(advance(5))
        .then_events([step_started(Step::CancelOrder, 1, 5)]);

    let cancelled = released_both
        .advanced(5)
        .observed(cancelled(CancelReason::ShipmentRejected));
    Saga::given(cancelled.events())
        .when(advance(6))
        .then_events([compensated(6)]);
}

#[test]
fn a_confirmed_order_cancelled_by_the_customer_is_refunded_then_released() {
    let cancelled = confirmed().observed(cancelled(CancelReason::CustomerCancelled));
    Saga::given(cancelled.events())
        .when(advance(6))
        .then_events([
            compensation_started(CancelReason::CustomerCancelled, 6),
            step_started(Step::RefundPayment, 1, 6),
        ]);

    let refunded = cancelled
        .advanced(6)
        .observed(Fact::PaymentRefunded { amount: TOTAL });
    Saga::given(refunded.events())
        .when(advance(7))
        .then_events([
            step_started(release(MUG), 1, 7),
            step_started(release(TEA), 1, 7),
        ]);

    let released_both = refunded
        .advanced(7)
        .observed(released(MUG))
        .observed(released(TEA));
    let saga = Saga::given(released_both.events())
        .when(advance(8))
        .then_events([compensated(8)]);
    // The order was cancelled already: the saga never asks to cancel it.
    let cancel_order = &saga.steps[&Step::CancelOrder];
    assert_eq!((cancel_order.attempt, cancel_order.command_id), (0, None));
    assert!(!saga.steps.contains_key(&Step::VoidPayment));
}

#[test]
fn the_started_payment_attempt_timing_out_compensates_the_saga() {
    let saga = Saga::given(paying().events())
        .when(time_out(1, 31))
        .then_events([
            SagaEvent::SagaStepTimedOut {
                step: Step::AuthorizePayment,
                attempt: 1,
                at: at(31),
            },
            compensation_started(CancelReason::PaymentTimeout, 31),
        ]);
    assert!(saga.payment.timed_out);
    assert_eq!(
        saga.steps[&Step::AuthorizePayment].status,
        StepStatus::TimedOut
    );
}

#[test]
fn a_stale_payment_attempt_timing_out_does_nothing() {
    Saga::given(paying().events())
        .when(time_out(2, 31))
        .then_nothing();
}

#[test]
fn the_payment_is_overdue_only_from_its_deadline() {
    let saga = paying().saga();
    assert_eq!(saga.payment_overdue(at(30)), None);
    assert_eq!(saga.payment_overdue(at(31)), Some(1));
    assert_eq!(requesting_shipment().saga().payment_overdue(at(60)), None);
}

/// The payment timed out at 31 s and the saga compensated at 34 s.
fn compensated_after_a_payment_timeout() -> History {
    paying()
        .then(time_out(1, 31))
        .advanced(32)
        .observed(released(MUG))
        .observed(released(TEA))
        .advanced(33)
        .observed(cancelled(CancelReason::PaymentTimeout))
        .advanced(34)
}

#[test]
fn a_payment_timeout_releases_the_stock_and_cancels_the_order() {
    let history = compensated_after_a_payment_timeout();
    assert!(history.events().ends_with(&[
        step_started(Step::CancelOrder, 1, 33),
        SagaEvent::SagaEventObserved {
            source: source(&cancelled(CancelReason::PaymentTimeout), 1),
            fact: cancelled(CancelReason::PaymentTimeout),
            at: at(0),
        },
        compensated(34),
    ]));
    assert_eq!(history.saga().status, SagaStatus::Compensated);
}

#[test]
fn a_late_authorisation_after_compensation_reopens_it_to_void_the_payment() {
    let late = compensated_after_a_payment_timeout().observed(authorized());
    let saga = Saga::given(late.events())
        .when(advance(40))
        .then_events([step_started(Step::VoidPayment, 1, 40)]);
    assert_eq!(saga.status, SagaStatus::Compensating);

    let voided = late.advanced(40).observed(Fact::PaymentVoided);
    let saga = Saga::given(voided.events())
        .when(advance(41))
        .then_events([compensated(41)]);
    assert_eq!(saga.status, SagaStatus::Compensated);
}
