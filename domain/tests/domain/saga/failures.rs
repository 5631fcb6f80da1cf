//! Attempts that fail, a saga stuck on them, and what operators can do.

use domain::saga::StepStatus;
use domain::SagaStatus;

use super::*;
use crate::given::Scenario;

const ERROR: &str = "inventory unavailable";

/// Attempt `attempt` of reserving line 1 failed at `seconds`, to be retried
/// 2 s later; the saga is stuck after 3 failures.
fn fail(attempt: u32, seconds: i64) -> SagaCommand {
    SagaCommand::Fail {
        step: reserve(MUG),
        attempt,
        error: ERROR.into(),
        now: at(seconds),
        retry_at: at(seconds + 2),
        max_attempts: 3,
    }
}

fn failed(attempt: u32, seconds: i64) -> SagaEvent {
    SagaEvent::SagaStepFailed {
        step: reserve(MUG),
        attempt,
        error: ERROR.into(),
        at: at(seconds),
        retry_at: at(seconds + 2),
    }
}

/// The first reservation of line 1 failed at 1 s; it is retried at 3 s.
fn failed_once() -> History {
    reserving().then(fail(1, 1))
}

/// Line 1's reservation failed three times, the last at 5 s.
fn stuck() -> History {
    failed_once()
        .advanced(3)
        .then(fail(2, 3))
        .advanced(5)
        .then(fail(3, 5))
}

fn retry(seconds: i64) -> SagaCommand {
    SagaCommand::Retry {
        by: "ops-1".into(),
        now: at(seconds),
    }
}

fn abort(reason: &str) -> SagaCommand {
    SagaCommand::Abort {
        by: "ops-1".into(),
        reason: reason.into(),
        now: at(9),
    }
}

#[test]
fn a_failed_attempt_below_the_limit_is_retried_later() {
    let saga = Saga::given(reserving().events())
        .when(fail(1, 1))
        .then_events([failed(1, 1)]);
    let step = &saga.steps[&reserve(MUG)];
    assert_eq!(
        (step.status, step.retry_at),
        (StepStatus::Failed, Some(at(3)))
    );
    assert_eq!(saga.status, SagaStatus::Running);
}

#[test]
fn a_stale_attempt_failing_does_nothing() {
    Saga::given(reserving().events())
        .when(fail(2, 1))
        .then_nothing();
}

#[test]
fn a_failed_step_is_not_tried_again_before_its_retry_time() {
    Saga::given(failed_once().events())
        .when(advance(2))
        .then_nothing();
}

#[test]
fn a_failed_step_is_tried_again_from_its_retry_time_with_a_new_command_id() {
    Saga::given(failed_once().events())
        .when(advance(3))
        .then_events([step_started(reserve(MUG), 2, 3)]);
    assert_ne!(
        command_id(order_id(), &reserve(MUG), 2),
        command_id(order_id(), &reserve(MUG), 1)
    );
}

#[test]
fn a_failed_saga_wakes_at_the_retry_time() {
    // Line 2's check (5 s) comes after line 1's retry (3 s).
    assert_eq!(failed_once().saga().wake_at(), Some(at(3)));
}

#[test]
fn the_last_allowed_attempt_failing_leaves_the_saga_stuck() {
    let given = failed_once().advanced(3).then(fail(2, 3)).advanced(5);
    let saga = Saga::given(given.events()).when(fail(3, 5)).then_events([
        failed(3, 5),
        SagaEvent::SagaStuck {
            step: reserve(MUG),
            attempts: 3,
            error: ERROR.into(),
            at: at(5),
        },
    ]);
    assert_eq!(saga.status, SagaStatus::Stuck);
    assert_eq!(saga.steps[&reserve(MUG)].status, StepStatus::Stuck);
}

#[test]
fn a_stuck_saga_wants_nothing_and_advancing_it_does_nothing() {
    let saga = stuck().saga();
    assert_eq!(saga.wanted(), vec![]);
    assert_eq!(saga.wake_at(), None);
    Saga::given(stuck().events())
        .when(advance(60))
        .then_nothing();
}

#[test]
fn retrying_a_saga_never_started_is_not_found() {
    Saga::given([]).when(retry(6)).then_not_found();
}

#[test]
fn retrying_a_saga_that_is_not_stuck_is_a_conflict() {
    Saga::given(failed_once().events())
        .when(retry(6))
        .then_conflict();
}

#[test]
fn retrying_a_stuck_saga_makes_its_step_due_again() {
    let saga = Saga::given(stuck().events())
        .when(retry(6))
        .then_events([SagaEvent::SagaRetried {
            by: "ops-1".into(),
            at: at(6),
        }]);
    assert_eq!(saga.status, SagaStatus::Running);
    assert_eq!(saga.steps[&reserve(MUG)].failures, 0);
    assert_eq!(saga.wake_at(), Some(at(6)));

    let retried = stuck().then(retry(6));
    Saga::given(retried.events())
        .when(advance(6))
        .then_events([step_started(reserve(MUG), 4, 6)]);
}

#[test]
fn aborting_with_a_blank_reason_is_invalid() {
    Saga::given(reserving().events())
        .when(abort("  "))
        .then_invalid(&["reason"]);
}

#[test]
fn aborting_a_saga_never_started_is_not_found() {
    Saga::given([])
        .when(abort("duplicate order"))
        .then_not_found();
}

#[test]
fn aborting_records_who_stopped_the_saga_and_why() {
    let saga = Saga::given(stuck().events())
        .when(abort("duplicate order"))
        .then_events([SagaEvent::SagaAborted {
            by: "ops-1".into(),
            reason: "duplicate order".into(),
            at: at(9),
        }]);
    assert_eq!(saga.status, SagaStatus::Aborted);
    assert_eq!(
        saga.aborted,
        Some(("ops-1".into(), "duplicate order".into()))
    );
}

#[test]
fn an_aborted_saga_wants_nothing_and_advancing_it_does_nothing() {
    let aborted = reserving().then(abort("duplicate order"));
    assert_eq!(aborted.saga().wanted(), vec![]);
    assert_eq!(aborted.saga().wake_at(), None);
    Saga::given(aborted.events())
        .when(advance(60))
        .then_nothing();
}

#[test]
fn aborting_a_finished_saga_is_a_conflict() {
    let compensated = reserving()
        .observed(out_of_stock(MUG))
        .observed(out_of_stock(TEA))
        .advanced(1)
        .observed(cancelled(CancelReason::OutOfStock))
        .advanced(2);
    assert_eq!(compensated.saga().status, SagaStatus::Compensated);
    let aborted = reserving().then(abort("duplicate order"));

    for finished in [completed(), compensated, aborted] {
        Saga::given(finished.events())
            .when(abort("too late"))
            .then_conflict();
    }
}
