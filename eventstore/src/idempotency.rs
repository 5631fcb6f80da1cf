//! Idempotency keys: the first outcome of a request, replayed to its retries.
//!
//! A caller claims a key inside the transaction that does the work and
//! records the outcome before committing. A concurrent claim of the same key
//! waits for that transaction: if it commits, the waiter gets the recorded
//! outcome; if it rolls back, the waiter claims the key itself.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};

use crate::hash::write_canonical;
use crate::StoreError;

/// The longest accepted idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Whose a stored idempotency key is: the one type that knows the stored
/// forms, so that keys of different scopes can never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A client's `Idempotency-Key` header, scoped by the caller.
    Client {
        /// The caller (a token's subject).
        user_id: &'a str,
        /// The header's value.
        key: &'a str,
    },
    /// A command a process (the saga) sends, keyed by its deterministic id.
    Process(uuid::Uuid),
}

impl Scope<'_> {
    /// The key as stored: `<length of user>:<user>:<key>` for a client,
    /// readable for operators and unambiguous (without the length, user
    /// `a` with key `b:c` and user `a:b` with key `c` would share a
    /// record), or, when that would exceed [`MAX_KEY_LEN`] (a long `sub`),
    /// `sha256:<hex of [user, key]>`, so that any valid token and header
    /// make a valid key; `process/<id>` for a process. Client keys always
    /// hold a colon and process keys never do, so the two cannot collide.
    pub fn stored_key(&self) -> String {
        match *self {
            Scope::Client { user_id, key } => {
                let plain = format!("{}:{user_id}:{key}", user_id.len());
                if plain.len() <= MAX_KEY_LEN {
                    return plain;
                }
                let digest = request_hash(&serde_json::json!([user_id, key]));
                format!("sha256:{}", hex::encode(digest))
            }
            Scope::Process(command_id) => format!("process/{command_id}"),
        }
    }
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is new and now held by this transaction: do the work, then [`record`].
    New,
    /// The key was used before for the same request: here is its outcome.
    Replay(Value),
}

/// SHA-256 of the canonical JSON of `request`: what tells a retry from a
/// different request that reuses a key.
pub fn request_hash(request: &Value) -> Vec<u8> {
    let mut canonical = String::new();
    write_canonical(&mut canonical, request);
    Sha256::digest(canonical.as_bytes()).to_vec()
}

/// Claims `key` for a request with `request_hash` inside the caller's transaction.
///
/// Fails with [`StoreError::IdempotencyKeyReused`] when the key was used for
/// a request with another hash.
#[tracing::instrument(skip(conn, request_hash))]
pub async fn claim(
    conn: &mut PgConnection,
    key: &str,
    request_hash: &[u8],
) -> Result<Claim, StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(StoreError::InvalidEvent {
            index: 0,
            reason: format!("idempotency key must be 1 to {MAX_KEY_LEN} printable bytes"),
        });
    }
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, outcome) VALUES ($1, $2, 'null')
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(request_hash)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query("SELECT request_hash, outcome FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    let stored_hash: Vec<u8> = row.try_get("request_hash")?;
    if stored_hash != request_hash {
        return Err(StoreError::IdempotencyKeyReused {
            key: key.to_owned(),
        });
    }
    Ok(Claim::Replay(row.try_get("outcome")?))
}

/// Records the outcome of the request that claimed `key` in this transaction.
pub async fn record(conn: &mut PgConnection, key: &str, outcome: &Value) -> Result<(), StoreError> {
    sqlx::query("UPDATE idempotency_keys SET outcome = $2 WHERE key = $1")
        .bind(key)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_process_keys_cannot_collide() {
        let id = uuid::Uuid::new_v4();
        let process = Scope::Process(id).stored_key();
        assert_eq!(process, format!("process/{id}"));
        assert!(!process.contains(':'));
        for user_id in ["alice", &"u".repeat(300)] {
            let client = Scope::Client {
                user_id,
                key: "process/x",
            }
            .stored_key();
            assert!(client.contains(':') && client.len() <= MAX_KEY_LEN);
        }
    }
}
