//! What every command route shares: the command context from the request,
//! and the answer with the position the write reached.

use commands::{CommandContext, Outcome};
use eventstore::idempotency::Scope;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::answer::Written;
use crate::error::ApiError;

use crate::auth::Caller;
use crate::extract::{CorrelationId, IdempotencyKey};

/// The context of a command from `caller`: correlation id, and the
/// idempotency key scoped to the caller, with a hash of the route and body
/// that tells a retry from a different request under the same key.
pub fn context(
    caller: &Caller,
    correlation: CorrelationId,
    key: IdempotencyKey,
    route: &str,
    body: &Value,
) -> CommandContext {
    let context = CommandContext::new(caller.user_id.clone(), correlation.0)
        .with_traceparent(eventstore::trace::next_hop());
    match key.0 {
        Some(key) => {
            let hash =
                eventstore::idempotency::request_hash(&json!({"route": route, "body": body}));
            context.with_idempotency(scoped_key(&caller.user_id, &key), hash)
        }
        None => context,
    }
}

/// The stored idempotency key of `key` sent by `user_id` (see
/// [`Scope::stored_key`]).
fn scoped_key(user_id: &str, key: &str) -> String {
    Scope::Client { user_id, key }.stored_key()
}

/// The outcome's reply (as the handler gave it, or as first recorded
/// under the idempotency key) plus the global `position` it reached.
pub fn written<T: DeserializeOwned>(outcome: Outcome) -> Result<Written<T>, ApiError> {
    let reply = serde_json::from_value(outcome.reply).map_err(|error| {
        ApiError::Internal(anyhow::Error::new(error).context("a command's reply"))
    })?;
    Ok(Written {
        reply,
        position: outcome.position,
    })
}

/// A command's reply as the command handler records it.
pub fn reply<T: serde::Serialize>(reply: &T) -> Result<Value, ApiError> {
    serde_json::to_value(reply).map_err(|error| ApiError::Internal(error.into()))
}

#[cfg(test)]
mod tests {
    use super::scoped_key;

    #[test]
    fn a_scoped_key_always_fits_the_store_and_keeps_users_apart() {
        assert_eq!(scoped_key("alice", "k-1"), "5:alice:k-1");
        assert_ne!(scoped_key("mallory", "x:k1"), scoped_key("mallory:x", "k1"));
        let long_user = "u".repeat(200);
        let key = "k".repeat(200);
        let scoped = scoped_key(&long_user, &key);
        assert!(
            scoped.len() <= eventstore::idempotency::MAX_KEY_LEN,
            "{scoped}"
        );
        assert_ne!(scoped, scoped_key(&"v".repeat(200), &key));
        assert_eq!(scoped, scoped_key(&long_user, &key));
    }
}
