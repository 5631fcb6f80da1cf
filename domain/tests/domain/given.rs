//! A tiny given/when/then harness: fold the given events, decide the command,
//! then assert on the outcome.

use domain::{Aggregate, DomainError};

/// Starts a scenario on any aggregate: `Product::given([...])`.
pub trait Scenario: Aggregate {
    /// The state after `events`.
    fn given(events: impl IntoIterator<Item = Self::Event>) -> Given<Self> {
        let events: Vec<_> = events.into_iter().collect();
        Given {
            state: Self::replay(&events),
        }
    }
}

impl<A: Aggregate> Scenario for A {}

/// An aggregate state built from past events.
pub struct Given<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub fn when(self, command: A::Command) -> When<A> {
        let outcome = self.state.decide(&command);
        When {
            state: self.state,
            outcome,
        }
    }
}

/// The outcome of one decision, waiting for assertions.
pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq,
{
    /// Asserts exactly `expected` were decided; returns the state after them.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected);
                events.iter().fold(self.state, A::evolve)
            }
            Err(error) => panic!("expected events {expected:?}, got error {error:?}"),
        }
    }

    /// Asserts the command was accepted with at least one event; returns the
    /// state after them.
    #[track_caller]
    pub fn then_accepted(self) -> A {
        match self.outcome {
            Ok(events) if !events.is_empty() => events.iter().fold(self.state, A::evolve),
            other => panic!("expected events, got {other:?}"),
        }
    }

    /// Asserts the command was an idempotent no-op.
    #[track_caller]
    pub fn then_nothing(self) {
        self.then_events([]);
    }

    /// Asserts a Conflict.
    #[track_caller]
    pub fn then_conflict(self) {
        match self.outcome {
            Err(DomainError::Conflict(_)) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    /// Asserts NotFound.
    #[track_caller]
    pub fn then_not_found(self) {
        match self.outcome {
            Err(DomainError::NotFound(_)) => {}
            other => panic!("expected not found, got {other:?}"),
        }
    }

    /// Asserts Invalid naming exactly `fields`, in order.
    #[track_caller]
    pub fn then_invalid(self, fields: &[&str]) {
        match self.outcome {
            Err(DomainError::Invalid(errors)) => {
                let named: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(named, fields, "{errors:?}");
            }
            other => panic!("expected invalid {fields:?}, got {other:?}"),
        }
    }
}
