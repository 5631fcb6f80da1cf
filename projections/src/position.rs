//! Per-stream positions: what makes applying an event idempotent, and what
//! "has position N" means for a read model.

use eventstore::{EventStore, RecordedEvent};
use sqlx::{PgConnection, PgPool};

use crate::{schema, Projection, ProjectionError};

/// What to do with an event of a stream whose last applied version is `stored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next version: apply it.
    Apply,
    /// Already applied: change nothing.
    Duplicate,
    /// Earlier versions are missing: change nothing; `expected` is needed next.
    Gap {
        /// The version the read model needs next.
        expected: u64,
    },
}

/// Classifies `version` against the stored version (0 for a stream never applied).
pub(crate) fn classify(stored: u64, version: u64) -> Step {
    if version <= stored {
        Step::Duplicate
    } else if version > stored + 1 {
        Step::Gap {
            expected: stored + 1,
        }
    } else {
        Step::Apply
    }
}

/// The last applied version of `stream_id` in schema `q` (quoted), 0 if none.
pub(crate) async fn stored_version(
    conn: &mut PgConnection,
    q: &str,
    stream_id: &str,
) -> Result<u64, ProjectionError> {
    let version: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM {q}.stream_positions WHERE stream_id = $1"
    ))
    .bind(stream_id)
    .fetch_optional(conn)
    .await?;
    Ok(version.map_or(0, to_u64))
}

/// Moves `event`'s stream position to the event, if the stored version is
/// still the one before it. False when a concurrent applier moved it first
/// (this call then waited for that applier's transaction to end).
pub(crate) async fn advance(
    conn: &mut PgConnection,
    q: &str,
    event: &RecordedEvent,
) -> Result<bool, ProjectionError> {
    let version = to_i64(event.version);
    let sql = if event.version == 1 {
        format!(
            "INSERT INTO {q}.stream_positions (stream_id, version, global_position)
             VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING"
        )
    } else {
        format!(
            "UPDATE {q}.stream_positions SET version = $2, global_position = $3
             WHERE stream_id = $1 AND version = $2 - 1"
        )
    };
    let done = sqlx::query(&sql)
        .bind(&event.stream_id)
        .bind(version)
        .bind(event.global_position)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// "Has position N": true when the event at global position `position`,
/// and every earlier event of its stream, is applied in `schema`. True as
/// well when that event's stream type is not consumed by `projection` (it
/// can never change the read model), and for `position` 0 or below (before
/// the first event). False when no committed event has that position (yet).
#[tracing::instrument(skip(pool))]
pub async fn has_position(
    pool: &PgPool,
    projection: Projection,
    schema: &str,
    position: i64,
) -> Result<bool, ProjectionError> {
    let q = schema::quoted(schema)?;
    if position <= 0 {
        return Ok(true);
    }
    let row: Option<(String, i64, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT e.stream_type, e.version, p.version
           FROM events e
           LEFT JOIN {q}.stream_positions p ON p.stream_id = e.stream_id
          WHERE e.position = $1"
    ))
    .bind(position)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => false,
        Some((stream_type, _, _)) if !projection.consumes(&stream_type) => true,
        Some((_, version, applied)) => applied.is_some_and(|applied| applied >= version),
    })
}

/// The read model's position: the highest global position applied in
/// `schema` (0 if none). Every event at or below it is not necessarily
/// applied (see [`has_position`]); it is what answers carry as
/// `X-Fulcrum-Position`.
#[tracing::instrument(skip(pool))]
pub async fn position(pool: &PgPool, schema: &str) -> Result<i64, ProjectionError> {
    let q = schema::quoted(schema)?;
    let position: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT max(global_position) FROM {q}.stream_positions"
    ))
    .fetch_one(pool)
    .await?;
    Ok(position.unwrap_or(0))
}

/// Whether every event in `events` that `projection` consumes is applied
/// in its live tables already (for the projectors: the local feed applies
/// this process's writes ahead of their Kafka copies), read in one
/// statement, outside any transaction. True for events it does not consume.
///
/// False whenever the projection is not `running`. That is what makes the
/// answer safe without the projection's lock: a rebuild marks it
/// `rebuilding` before it catches its fresh tables up under the exclusive
/// lock and swaps them in, and its last catch-up may miss an event that a
/// later relay read published and the old tables had (the local feed
/// applies ahead of the gap-free order). Such an event must still be
/// applied to the fresh tables, so while a rebuild runs the answer is
/// false, and a batch goes the whole way, under the lock.
pub async fn applied_already(
    pool: &PgPool,
    projection: Projection,
    events: &[&RecordedEvent],
) -> Result<bool, ProjectionError> {
    let mut needed: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for event in events
        .iter()
        .filter(|e| projection.consumes(&e.stream_type))
    {
        let version = needed.entry(event.stream_id.as_str()).or_default();
        *version = (*version).max(event.version);
    }
    if needed.is_empty() {
        return Ok(true);
    }
    let q = schema::quoted(&projection.live_schema())?;
    let ids: Vec<&str> = needed.keys().copied().collect();
    let stored: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT stream_id, version FROM {q}.stream_positions
          WHERE stream_id = ANY($1)
            AND EXISTS (SELECT 1 FROM projection_status WHERE name = $2 AND status = $3)"
    ))
    .bind(&ids)
    .bind(projection.name())
    .bind(crate::status::Status::Running.as_str())
    .fetch_all(pool)
    .await?;
    let applied = stored
        .iter()
        .filter(|(stream_id, version)| {
            needed
                .get(stream_id.as_str())
                .is_some_and(|needed| to_u64(*version) >= *needed)
        })
        .count();
    Ok(applied == needed.len())
}

/// A stored version as u64 (versions are positive; the table checks it).
pub(crate) fn to_u64(version: i64) -> u64 {
    u64::try_from(version).unwrap_or(0)
}

/// A version as a Postgres bigint (event store versions fit).
pub(crate) fn to_i64(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// `Some(how many it consumes)` when the whole batch is applied already
/// ([`applied_already`]: the local feed went ahead): one statement instead
/// of a transaction. `None` when it has to go the whole way, as it does
/// with any message that is not an event envelope.
pub(crate) async fn passed_over(
    store: &EventStore,
    projection: Projection,
    events: &[Result<RecordedEvent, Box<RecordedEvent>>],
) -> Result<Option<u64>, ProjectionError> {
    let Some(events) = events
        .iter()
        .map(|e| e.as_ref().ok())
        .collect::<Option<Vec<&RecordedEvent>>>()
    else {
        return Ok(None);
    };
    if !applied_already(store.pool(), projection, &events).await? {
        return Ok(None);
    }
    let consumed = events
        .iter()
        .filter(|e| projection.consumes(&e.stream_type))
        .count();
    Ok(Some(u64::try_from(consumed).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_applies_older_ones_are_duplicates_and_later_ones_gaps() {
        assert_eq!(classify(0, 1), Step::Apply);
        assert_eq!(classify(3, 4), Step::Apply);
        assert_eq!(classify(3, 3), Step::Duplicate);
        assert_eq!(classify(3, 1), Step::Duplicate);
        assert_eq!(classify(3, 5), Step::Gap { expected: 4 });
        assert_eq!(classify(0, 2), Step::Gap { expected: 1 });
    }
}
