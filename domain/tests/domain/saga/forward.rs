//! Moving the order forward: fact by fact, in any order, checking on steps
//! that get no answer.

use domain::SagaStatus;

use super::*;
use crate::given::Scenario;

#[test]
fn starting_a_saga_takes_charge_of_the_order() {
    let saga = Saga::given([]).when(start()).then_events([saga_started()]);
    assert!(saga.started);
    assert_eq!(saga.status, SagaStatus::Running);
    assert_eq!(saga.wanted(), vec![reserve(MUG), reserve(TEA)]);
}

#[test]
fn starting_a_started_saga_does_nothing() {
    Saga::given(History::started().events())
        .when(start())
        .then_nothing();
}

#[test]
fn a_started_saga_reserves_every_line_with_a_first_attempt() {
    Saga::given(History::started().events())
        .when(advance(0))
        .then_events([
            step_started(reserve(MUG), 1, 0),
            step_started(reserve(TEA), 1, 0),
        ]);
}

#[test]
fn command_ids_are_the_same_for_the_same_saga_step_and_attempt_only() {
    let first = command_id(order_id(), &reserve(MUG), 1);

    assert_eq!(first, command_id(order_id(), &reserve(MUG), 1));
    assert_ne!(first, command_id(order_id(), &reserve(MUG), 2));
    assert_ne!(first, command_id(order_id(), &reserve(TEA), 1));
    assert_ne!(
        first,
        command_id(uuid::Uuid::from_u128(43), &reserve(MUG), 1)
    );
}

#[test]
fn advancing_a_saga_never_started_does_nothing() {
    Saga::given([]).when(advance(0)).then_nothing();
}

#[test]
fn every_line_reserved_asks_for_the_payment() {
    let given = reserving().observed(reserved(MUG)).observed(reserved(TEA));
    Saga::given(given.events())
        .when(advance(1))
        .then_events([step_started(Step::AuthorizePayment, 1, 1)]);
}

#[test]
fn one_line_reserved_of_two_asks_for_nothing_new() {
    let given = reserving().observed(reserved(MUG));
    Saga::given(given.events()).when(advance(1)).then_nothing();
}

#[test]
fn an_authorised_payment_requests_the_shipment() {
    let given = paying().observed(authorized());
    Saga::given(given.events())
        .when(advance(2))
        .then_events([step_started(Step::RequestShipment, 1, 2)]);
}

#[test]
fn a_requested_shipment_captures_the_payment() {
    let given = requesting_shipment().observed(Fact::ShipmentRequested);
    Saga::given(given.events())
        .when(advance(3))
        .then_events([step_started(Step::CapturePayment, 1, 3)]);
}

#[test]
fn a_captured_payment_confirms_the_order() {
    let given = capturing().observed(Fact::PaymentCaptured { amount: TOTAL });
    Saga::given(given.events())
        .when(advance(4))
        .then_events([step_started(Step::ConfirmOrder, 1, 4)]);
}

#[test]
fn a_confirmed_order_waits_for_the_ship_notice() {
    let given = confirming().observed(Fact::OrderConfirmed);
    let saga = Saga::given(given.events()).when(advance(5)).then_events([]);
    assert_eq!(saga.status, SagaStatus::Running);
    assert_eq!(saga.wanted(), vec![]);
}

#[test]
fn a_shipped_order_commits_every_line_and_ships_the_shipment() {
    let given = confirmed().observed(Fact::OrderShipped {
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
    });
    let saga = Saga::given(given.events()).when(advance(6)).then_events([
        step_started(commit(MUG), 1, 6),
        step_started(commit(TEA), 1, 6),
        step_started(Step::ShipShipment, 1, 6),
    ]);
    assert_eq!(saga.carrier, Some(("DHL".into(), "JD0001".into())));
}

#[test]
fn a_delivered_order_with_its_shipment_shipped_delivers_the_shipment() {
    let given = shipping()
        .observed(committed(MUG))
        .observed(committed(TEA))
        .observed(Fact::ShipmentShipped)
        .observed(Fact::OrderDelivered);
    Saga::given(given.events())
        .when(advance(7))
        .then_events([step_started(Step::DeliverShipment, 1, 7)]);
}

#[test]
fn a_delivered_shipment_completes_the_saga() {
    let given = delivering().observed(Fact::ShipmentDelivered);
    let saga = Saga::given(given.events())
        .when(advance(8))
        .then_events([SagaEvent::SagaCompleted { at: at(8) }]);
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(saga.wanted(), vec![]);
}

#[test]
fn advancing_a_completed_saga_does_nothing() {
    Saga::given(completed().events())
        .when(advance(9))
        .then_nothing();
}

#[test]
fn reservations_arriving_out_of_order_ask_for_the_same_payment() {
    let in_order = reserving().observed(reserved(MUG)).observed(reserved(TEA));
    let out_of_order = reserving().observed(reserved(TEA)).observed(reserved(MUG));

    let expected = [step_started(Step::AuthorizePayment, 1, 1)];
    let a = Saga::given(in_order.events())
        .when(advance(1))
        .then_events(expected.clone());
    let b = Saga::given(out_of_order.events())
        .when(advance(1))
        .then_events(expected);
    assert_eq!(a, b);
}

#[test]
fn a_fact_redelivered_from_its_stream_records_nothing() {
    let given = reserving().then(observe_as(reserved(MUG), 3));

    Saga::given(given.events())
        .when(observe_as(reserved(MUG), 3))
        .then_nothing();
    Saga::given(given.events())
        .when(observe_as(reserved(MUG), 2))
        .then_nothing();
}

#[test]
fn a_fact_from_a_newer_version_of_its_stream_is_recorded() {
    let given = reserving().then(observe_as(reserved(MUG), 3));
    let saga = Saga::given(given.events())
        .when(observe_as(released(MUG), 4))
        .then_accepted();
    assert_eq!(saga.seen[&format!("inventory-{MUG}")], 4);
}

#[test]
fn a_started_step_past_its_check_time_is_rechecked_with_the_same_attempt() {
    Saga::given(reserving().events())
        .when(advance(5))
        .then_events([
            SagaEvent::SagaStepRechecked {
                step: reserve(MUG),
                attempt: 1,
                at: at(5),
                check_at: at(10),
            },
            SagaEvent::SagaStepRechecked {
                step: reserve(TEA),
                attempt: 1,
                at: at(5),
                check_at: at(10),
            },
        ]);
}

#[test]
fn a_started_step_before_its_check_time_is_left_alone() {
    Saga::given(reserving().events())
        .when(advance(4))
        .then_nothing();
}

#[test]
fn the_payment_step_past_its_check_time_is_not_rechecked() {
    Saga::given(paying().events())
        .when(advance(40))
        .then_nothing();
}

#[test]
fn rechecking_the_started_attempt_records_when_to_look_next() {
    let recheck = |attempt| SagaCommand::Recheck {
        step: Step::AuthorizePayment,
        attempt,
        now: at(31),
        check_at: at(36),
    };
    let saga = Saga::given(paying().events())
        .when(recheck(1))
        .then_events([SagaEvent::SagaStepRechecked {
            step: Step::AuthorizePayment,
            attempt: 1,
            at: at(31),
            check_at: at(36),
        }]);
    assert_eq!(saga.steps[&Step::AuthorizePayment].check_at, Some(at(36)));
    Saga::given(paying().events())
        .when(recheck(2))
        .then_nothing();
}

#[test]
fn a_saga_that_only_waits_for_facts_needs_no_wake_up() {
    assert_eq!(confirmed().saga().wake_at(), None);
    assert_eq!(completed().saga().wake_at(), None);
}

#[test]
fn a_saga_with_a_step_not_yet_sent_needs_waking_now() {
    assert_eq!(
        History::started().saga().wake_at(),
        Some(chrono::DateTime::UNIX_EPOCH)
    );
}

#[test]
fn a_saga_with_a_started_step_wakes_at_its_check_time() {
    assert_eq!(reserving().saga().wake_at(), Some(at(5)));
    assert_eq!(paying().saga().wake_at(), Some(at(31)));
}

#[test]
fn a_fact_that_arrives_before_the_order_was_seen_is_kept_and_used_once_it_is() {
    // A replay from the earliest offsets can deliver a reservation before
    // the `OrderPlaced` of its order (another topic).
    let early = Saga::given([])
        .when(observe_as(reserved(MUG), 1))
        .then_accepted();
    assert!(!early.started);
    assert!(
        early.wanted().is_empty(),
        "nothing is done before the order is known"
    );
    let mut saga = early;
    for event in saga.decide(&start()).unwrap() {
        saga = saga.evolve(&event);
    }
    // Only the line not reserved yet is asked for.
    assert_eq!(saga.wanted(), vec![reserve(TEA)]);
}

/// `history` with each step's start and the observation of its answer
/// folded into one `SagaStepCompleted` at the start's place, as a saga
/// change that carries the step out itself records them.
fn folded(history: &History) -> Vec<SagaEvent> {
    let mut events = history.events();
    let mut i = 0;
    while i < events.len() {
        if let SagaEvent::SagaStepStarted {
            step,
            attempt,
            command_id,
            at,
            ..
        } = events[i].clone()
        {
            let answer = events[i + 1..].iter().position(|e| {
                matches!(e, SagaEvent::SagaEventObserved { fact, .. }
                    if fact.answers().is_some_and(|(answered, _)| answered == step))
            });
            if let Some(offset) = answer {
                let SagaEvent::SagaEventObserved { source, fact, .. } =
                    events.remove(i + 1 + offset)
                else {
                    unreachable!("matched above")
                };
                events[i] = SagaEvent::SagaStepCompleted {
                    step,
                    attempt,
                    command_id,
                    at,
                    source,
                    fact,
                };
            }
        }
        i += 1;
    }
    events
}

/// A saga without what differs between the two records of a finished
/// step: the deadline only a started step keeps, and when it last changed
/// (these scenarios observe every answer at 0 s; a change that carries a
/// step out starts and answers it at one time).
fn settled(mut saga: Saga) -> Saga {
    for state in saga.steps.values_mut() {
        if state.status != domain::saga::StepStatus::Started {
            state.deadline = None;
            state.at = None;
        }
    }
    saga
}

#[test]
fn a_step_completed_in_one_event_leaves_the_saga_where_its_start_and_its_answer_would() {
    for stage in [
        paying(),
        requesting_shipment(),
        capturing(),
        confirming(),
        confirmed(),
        shipping(),
        delivering(),
        completed(),
    ] {
        let events = folded(&stage);
        assert!(events.len() < stage.events().len(), "something was folded");
        let plain = stage.saga();
        let folded = Saga::replay(&events);
        assert_eq!(settled(folded.clone()), settled(plain.clone()));
        assert_eq!(folded.wanted(), plain.wanted());
        for later in [advance(9), advance(60)] {
            assert_eq!(folded.decide(&later), plain.decide(&later));
        }
    }
}
