//! Reading one stream, and reading the whole store in gap-free global order.

use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use crate::append::to_u64;
use crate::model::{Checkpoint, RecordedEvent};
use crate::StoreError;

pub(crate) const COLUMNS: &str =
    "position, tx_id, stream_id, stream_type, version, event_id, event_type, \
     schema_version, data, metadata, recorded_at, hash";

/// Events of `stream_id` with version >= `from_version`, in version order, at most `limit`.
#[tracing::instrument(skip(db))]
pub async fn read_stream<'e>(
    db: impl PgExecutor<'e>,
    stream_id: &str,
    from_version: u64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
    ))
    .bind(stream_id)
    .bind(i64::try_from(from_version).unwrap_or(i64::MAX))
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// Up to `limit` events after `after`, in gap-free global order.
///
/// Only events written by transactions older than every transaction still
/// running are returned, ordered by (transaction id, position). So an event
/// whose transaction commits late is never skipped, even when it took a lower
/// position than events already returned, and no event is returned twice as
/// long as the caller passes the checkpoint of the last event it received.
#[tracing::instrument(skip(db))]
pub async fn read_all<'e>(
    db: impl PgExecutor<'e>,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events
         WHERE (tx_id, position) > ($1, $2)
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
         ORDER BY tx_id, position
         LIMIT $3"
    ))
    .bind(after.tx_id)
    .bind(after.position)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// What a tailing reader read ([`read_tail`]).
pub(crate) struct Tail {
    /// As [`read_all`] returns them.
    pub(crate) events: Vec<RecordedEvent>,
    /// Whether committed events lie beyond the readable horizon (held back
    /// by an older transaction still running): read again once it ends.
    pub(crate) held_back: bool,
}

/// [`read_all`], saying whether committed events were held back: the
/// readable events, and at most one beyond the horizon, in one statement.
pub(crate) async fn read_tail<'e>(
    db: impl PgExecutor<'e>,
    after: Checkpoint,
    limit: i64,
) -> Result<Tail, StoreError> {
    let rows = sqlx::query(&format!(
        "WITH h AS MATERIALIZED
              (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon)
         SELECT * FROM (
             (SELECT {COLUMNS}, false AS held_back FROM events, h
               WHERE (tx_id, position) > ($1, $2) AND tx_id < h.horizon
               ORDER BY tx_id, position LIMIT $3)
             UNION ALL
             (SELECT {COLUMNS}, true FROM events, h
               WHERE (tx_id, position) > ($1, $2) AND tx_id >= h.horizon
               ORDER BY tx_id, position LIMIT 1)
         ) t
         ORDER BY held_back, tx_id, position"
    ))
    .bind(after.tx_id)
    .bind(after.position)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    let readable = rows
        .iter()
        .position(|row| row.try_get("held_back").unwrap_or(true))
        .unwrap_or(rows.len());
    Ok(Tail {
        events: rows[..readable]
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?,
        held_back: readable < rows.len(),
    })
}

/// Up to `limit` committed events with a position above `position`, or
/// one of the positions in `also`, in position order. Not gap-free: a
/// transaction still running may commit later with a lower position, which
/// a later call above this page's last position never returns unless the
/// caller passes it in `also` (the holes it saw). For readers that only go
/// ahead of a gap-free one and tolerate a missed event (the projections'
/// local feed); tail the store with [`read_all`] otherwise.
#[tracing::instrument(skip(db, also))]
pub async fn read_after_position<'e>(
    db: impl PgExecutor<'e>,
    position: i64,
    also: &[i64],
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE position > $1 OR position = ANY($3)
          ORDER BY position LIMIT $2"
    ))
    .bind(position)
    .bind(limit.max(0))
    .bind(also)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// Where a reader handed a plain global position `position` goes on from:
/// the checkpoint of the event at that position, or when none has it (a
/// position a rolled-back transaction took, or one beyond the head) of the
/// last event before it; the start when there is none.
///
/// Reading on from there returns every event the global order puts after
/// that event. The global order is (transaction, position): where two
/// transactions committed out of position order, an event with a higher
/// position can come before that event (it was on an earlier page) and one
/// with a lower position after it. Paging by checkpoint has no such seams.
pub async fn checkpoint_at_or_before<'e>(
    db: impl PgExecutor<'e>,
    position: i64,
) -> Result<Checkpoint, StoreError> {
    let row = sqlx::query(
        "SELECT tx_id, position FROM events WHERE position <= $1 ORDER BY position DESC LIMIT 1",
    )
    .bind(position)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok(Checkpoint {
            tx_id: r.try_get("tx_id")?,
            position: r.try_get("position")?,
        }),
        None => Ok(Checkpoint::START),
    }
}

/// The highest global position stored (0 when empty).
pub async fn head_position<'e>(db: impl PgExecutor<'e>) -> Result<i64, StoreError> {
    let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(db)
        .await?;
    Ok(head.unwrap_or(0))
}

pub(crate) fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let hash: Vec<u8> = row.try_get("hash")?;
    let schema_version: i32 = row.try_get("schema_version")?;
    Ok(RecordedEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_type: row.try_get("stream_type")?,
        version: to_u64(row.try_get("version")?)?,
        global_position: row.try_get("position")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        hash: hex::encode(hash),
        tx_id: row.try_get("tx_id")?,
    })
}
