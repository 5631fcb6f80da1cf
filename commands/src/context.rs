//! Who asked for a command, why, and under which idempotency key.

use eventstore::EventMetadata;
use serde_json::Value;
use uuid::Uuid;

/// The circumstances of one command, recorded on every event it causes.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Unique id of this command.
    pub command_id: Uuid,
    /// Ties together everything one request caused, across aggregates.
    pub correlation_id: String,
    /// What caused this command: the command itself for a client request,
    /// or the event a saga reacted to.
    pub causation_id: String,
    /// The acting user (JWT subject).
    pub user_id: String,
    /// Set when the client sent an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
    /// A free-text note from the client (e.g. why it cancels), recorded as `note`.
    pub note: Option<String>,
    /// The W3C `traceparent` of the trace this command belongs to, recorded
    /// as `traceparent` (see [`eventstore::trace`]).
    pub traceparent: Option<String>,
}

/// A client's idempotency key for one command.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key, already scoped by the caller (e.g. prefixed with the user id)
    /// so that two clients cannot collide.
    pub key: String,
    /// Hash of the request as the client sent it (see
    /// [`eventstore::idempotency::request_hash`]): tells a retry from another
    /// request that reuses the key.
    pub request_hash: Vec<u8>,
}

impl CommandContext {
    /// A context for a client request by `user_id`; the command is its own cause.
    pub fn new(user_id: impl Into<String>, correlation_id: impl Into<String>) -> Self {
        let command_id = Uuid::new_v4();
        CommandContext {
            command_id,
            correlation_id: correlation_id.into(),
            causation_id: command_id.to_string(),
            user_id: user_id.into(),
            idempotency: None,
            note: None,
            traceparent: None,
        }
    }

    /// This context within the trace `traceparent`.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// This context with a client's note, recorded in the events' metadata.
    pub fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }

    /// This context under an idempotency key.
    pub fn with_idempotency(mut self, key: String, request_hash: Vec<u8>) -> Self {
        self.idempotency = Some(Idempotency { key, request_hash });
        self
    }

    /// The metadata recorded on every event this command causes.
    pub fn metadata(&self) -> Value {
        EventMetadata {
            correlation_id: Some(self.correlation_id.clone()),
            causation_id: Some(self.causation_id.clone()),
            user_id: Some(self.user_id.clone()),
            command_id: Some(self.command_id),
            note: self.note.clone(),
            traceparent: self.traceparent.clone(),
        }
        .to_value()
    }
}
