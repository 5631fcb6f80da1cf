//! Naming the first place where the events differ from what was sealed:
//! missing, altered, inserted or re-ordered.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::sealed::Sealed;
use super::{Finding, FindingKind};
use crate::seal::merkle::Hash;
use crate::{RecordedEvent, StoreError};

/// The first place where the events differ from what was sealed.
pub(super) struct Mismatch {
    pub(super) index: u64,
    /// The event found there (and its stored hash); none past the end.
    pub(super) event: Option<(RecordedEvent, Hash)>,
}

/// What `mismatch` is: the finding, naming the seal that catches it.
pub(super) async fn classify(
    tx: &mut PgConnection,
    sealed: &Sealed,
    mismatch: Mismatch,
) -> Result<Finding, StoreError> {
    let i = mismatch.index as usize;
    let seal_id = sealed.seal_of(mismatch.index);
    let sealed_position = sealed.positions[i];
    let position_index: HashMap<i64, usize> = sealed
        .positions
        .iter()
        .enumerate()
        .map(|(j, p)| (*p, j))
        .collect();
    let Some((event, stored)) = mismatch.event else {
        let (kind, detail) = missing_at(tx, sealed, i).await?;
        return Ok(Finding {
            kind,
            seal_id,
            leaf_index: Some(mismatch.index),
            global_position: Some(sealed_position),
            event_id: None,
            stream_id: None,
            version: None,
            detail,
        });
    };
    let (kind, detail, position) = if event.global_position == sealed_position {
        replaced(sealed, i, &event, stored)
    } else {
        displaced(tx, sealed, i, &position_index, &event).await?
    };
    let names_event = position == event.global_position;
    Ok(Finding {
        kind,
        seal_id,
        leaf_index: Some(mismatch.index),
        global_position: Some(position),
        event_id: names_event.then_some(event.event_id),
        stream_id: names_event.then(|| event.stream_id.clone()),
        version: names_event.then_some(event.version),
        detail,
    })
}

/// The event at leaf `i`'s sealed position is not the one sealed there
/// (its stored hash is `stored`): another sealed event, or an altered one.
fn replaced(
    sealed: &Sealed,
    i: usize,
    event: &RecordedEvent,
    stored: Hash,
) -> (FindingKind, String, i64) {
    let sealed_position = sealed.positions[i];
    let elsewhere = sealed.hashes.iter().position(|h| *h == stored);
    match elsewhere {
        Some(j) if j != i => (
            FindingKind::Reordered,
            format!(
                "position {sealed_position} holds the event sealed as leaf {j}, not the one sealed here"
            ),
            sealed_position,
        ),
        _ => (
            FindingKind::Altered,
            format!(
                "{} version {} at position {sealed_position}: its stored hash {} is not the sealed {}",
                event.stream_id,
                event.version,
                hex::encode(stored),
                hex::encode(sealed.hashes[i])
            ),
            sealed_position,
        ),
    }
}

/// An event from another position stands where leaf `i` was sealed:
/// leaf `i` is missing, or the event was sealed elsewhere, or never.
async fn displaced(
    tx: &mut PgConnection,
    sealed: &Sealed,
    i: usize,
    position_index: &HashMap<i64, usize>,
    event: &RecordedEvent,
) -> Result<(FindingKind, String, i64), StoreError> {
    let sealed_position = sealed.positions[i];
    Ok(match position_index.get(&event.global_position) {
        Some(&j) if j > i => {
            let (kind, detail) = missing_at(tx, sealed, i).await?;
            (kind, detail, sealed_position)
        }
        Some(&j) => (
            FindingKind::Reordered,
            format!(
                "{} version {} (position {}) was sealed as leaf {j} but now comes at leaf {i}",
                event.stream_id, event.version, event.global_position
            ),
            event.global_position,
        ),
        None => (
            FindingKind::Inserted,
            format!(
                "{} version {} (position {}) stands among sealed events but was never sealed",
                event.stream_id, event.version, event.global_position
            ),
            event.global_position,
        ),
    })
}

/// Whether the event sealed as leaf `i` is gone, or stored elsewhere in
/// the order.
async fn missing_at(
    tx: &mut PgConnection,
    sealed: &Sealed,
    i: usize,
) -> Result<(FindingKind, String), StoreError> {
    let sealed_position = sealed.positions[i];
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE position = $1)")
            .bind(sealed_position)
            .fetch_one(&mut *tx)
            .await?;
    Ok(if exists {
        (
            FindingKind::Reordered,
            format!(
                "the event sealed at position {sealed_position} as leaf {i} is stored, but no longer in its place in the global order"
            ),
        )
    } else {
        (
            FindingKind::Missing,
            format!(
                "the event sealed at position {sealed_position} as leaf {i} (hash {}) is gone",
                hex::encode(sealed.hashes[i])
            ),
        )
    })
}
