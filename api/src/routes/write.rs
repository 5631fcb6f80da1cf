//! What every command route shares: the command context from the request,
//! and the answer with the position the write reached.

use axum::http::StatusCode;
use axum::Json;
use commands::{CommandContext, Outcome};
use serde_json::{json, Value};

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
    let context = CommandContext::new(caller.user_id.clone(), correlation.0);
    match key.0 {
        Some(key) => {
            let hash =
                eventstore::idempotency::request_hash(&json!({"route": route, "body": body}));
            context.with_idempotency(format!("{}:{key}", caller.user_id), hash)
        }
        None => context,
    }
}

/// `status` with the outcome's reply plus the global `position` it reached.
pub fn answer(status: StatusCode, outcome: Outcome) -> (StatusCode, Json<Value>) {
    let mut body = match outcome.reply {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    body.insert("position".into(), json!(outcome.position));
    (status, Json(Value::Object(body)))
}
