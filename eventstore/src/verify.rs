//! Recomputing a stream's hash chain to detect altered or removed events.

use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::hash;
use crate::read::{decode, COLUMNS};
use crate::StoreError;

/// The outcome of [`verify_stream`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Verification {
    /// The stream checked.
    pub stream_id: String,
    /// True when every event's stored hash matches the recomputed chain.
    pub valid: bool,
    /// How many events were read.
    pub events_checked: u64,
    /// The first version whose content, hash or position in the chain is wrong.
    pub first_invalid_version: Option<u64>,
}

/// Recomputes the hash chain of `stream_id` from its first event and names
/// the first version that does not match: an altered field, a missing
/// version, or a stream head that disagrees with its last event.
///
/// The events and the head are read in one snapshot, so an append that
/// commits while a stream is verified is either wholly seen or not at all
/// (read apart, a head one version ahead of the events looks like a removed
/// event).
#[tracing::instrument(skip(pool))]
pub async fn verify_stream(pool: &PgPool, stream_id: &str) -> Result<Verification, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version"
    ))
    .bind(stream_id)
    .fetch_all(&mut *tx)
    .await?;
    let head = sqlx::query("SELECT version, last_hash FROM streams WHERE stream_id = $1")
        .bind(stream_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut previous = hash::GENESIS.to_vec();
    let mut first_invalid = None;
    let mut checked = 0u64;
    for row in &rows {
        checked += 1;
        let expected_version = checked;
        let event = decode(row)?;
        let recomputed = hash::chain_recorded(&previous, &event, expected_version);
        let stored: Vec<u8> = row.try_get("hash")?;
        if event.version != expected_version || stored != recomputed {
            first_invalid = Some(expected_version);
            break;
        }
        previous = stored;
    }
    if first_invalid.is_none() {
        if let Some(head) = head {
            let version: i64 = head.try_get("version")?;
            let last_hash: Vec<u8> = head.try_get("last_hash")?;
            if u64::try_from(version).ok() != Some(checked) || last_hash != previous {
                // Events after `checked` were removed, or the head was rewritten.
                first_invalid = Some(checked + 1);
            }
        }
    }
    Ok(Verification {
        stream_id: stream_id.to_owned(),
        valid: first_invalid.is_none(),
        events_checked: checked,
        first_invalid_version: first_invalid,
    })
}
