//! Audit reads: searching the global order under filters, everything one
//! request caused (and how its events caused each other), and single
//! events by id.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::metadata::EventMetadata;
use crate::model::{Checkpoint, RecordedEvent};
use crate::read::{decode, COLUMNS};
use crate::StoreError;

/// Filters of an audit search, combined with AND; `None` matches anything.
/// Each is served by an index (see `migrations/*_audit.sql`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Events of this type, e.g. `OrderPlaced`.
    pub event_type: Option<String>,
    /// Events of streams of this type, e.g. `order`.
    pub stream_type: Option<String>,
    /// Events of this stream.
    pub stream_id: Option<String>,
    /// Events whose metadata names this acting user.
    pub user_id: Option<String>,
    /// Events whose metadata carries this correlation id.
    pub correlation_id: Option<String>,
    /// Events recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Events recorded before this time.
    pub to: Option<DateTime<Utc>>,
}

/// Up to `limit` events after `after` that match `filter`, in gap-free
/// global order: the same order and the same guarantees as
/// [`crate::read_all`] (paging by the checkpoint of the last event returned
/// never skips a match nor returns one twice, while writes go on).
#[tracing::instrument(skip(db))]
pub async fn search<'e>(
    db: impl PgExecutor<'e>,
    filter: &SearchFilter,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = search_query("", filter, after, limit)
        .build()
        .fetch_all(db)
        .await?;
    rows.iter().map(decode).collect()
}

/// The plan Postgres runs [`search`] with, executed: the lines of
/// `EXPLAIN (ANALYZE, BUFFERS)` of exactly that query (for the index
/// evidence in docs/audit.md and for operators checking a slow search).
pub async fn explain_search<'e>(
    db: impl PgExecutor<'e>,
    filter: &SearchFilter,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let lines: Vec<String> = search_query("EXPLAIN (ANALYZE, BUFFERS) ", filter, after, limit)
        .build_query_scalar()
        .fetch_all(db)
        .await?;
    Ok(lines)
}

fn search_query<'a>(
    prefix: &str,
    filter: &'a SearchFilter,
    after: Checkpoint,
    limit: i64,
) -> QueryBuilder<'a, Postgres> {
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "{prefix}SELECT {COLUMNS} FROM events WHERE (tx_id, position) > ("
    ));
    query.push_bind(after.tx_id);
    query.push(", ");
    query.push_bind(after.position);
    query.push(") AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint");
    let equals = [
        ("event_type", &filter.event_type),
        ("stream_type", &filter.stream_type),
        ("stream_id", &filter.stream_id),
        ("metadata->>'user_id'", &filter.user_id),
        ("metadata->>'correlation_id'", &filter.correlation_id),
    ];
    for (column, value) in equals {
        if let Some(value) = value {
            query.push(format!(" AND {column} = "));
            query.push_bind(value.as_str());
        }
    }
    if let Some(from) = filter.from {
        query.push(" AND recorded_at >= ");
        query.push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND recorded_at < ");
        query.push_bind(to);
    }
    query.push(" ORDER BY tx_id, position LIMIT ");
    query.push_bind(limit.max(0));
    query
}

/// Every event whose metadata carries `correlation_id`, across all streams,
/// by global position: at most `limit`.
#[tracing::instrument(skip(db))]
pub async fn correlated<'e>(
    db: impl PgExecutor<'e>,
    correlation_id: &str,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE metadata->>'correlation_id' = $1
         ORDER BY position LIMIT $2"
    ))
    .bind(correlation_id)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// For `events` in global order, each one's cause: the index of the
/// earlier event whose id is its `causation_id`, or `None` (a root) when
/// no earlier event has that id (the cause is a command, comes later in
/// `events`, or is not in them). A parent always comes before its child,
/// so following parents never loops, whatever the metadata says.
pub fn causal_parents(events: &[RecordedEvent]) -> Vec<Option<usize>> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(events.len());
    let mut parents = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let cause = EventMetadata::of(&event.metadata)
            .causation_id
            .and_then(|id| seen.get(&id).copied());
        parents.push(cause);
        seen.insert(event.event_id.to_string(), i);
    }
    parents
}

/// The event with id `event_id`, if stored.
pub async fn event_by_id<'e>(
    db: impl PgExecutor<'e>,
    event_id: Uuid,
) -> Result<Option<RecordedEvent>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE event_id = $1"))
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// The events of `stream_id` up to and including the last one recorded at
/// or before `at`, in version order: always a prefix of the stream, even
/// where writers' clocks disagreed.
pub async fn read_stream_until<'e>(
    db: impl PgExecutor<'e>,
    stream_id: &str,
    at: DateTime<Utc>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version <= (
             SELECT max(version) FROM events WHERE stream_id = $1 AND recorded_at <= $2)
         ORDER BY version"
    ))
    .bind(stream_id)
    .bind(at)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caused_by(cause: Option<&RecordedEvent>) -> RecordedEvent {
        let causation_id = cause.map(|c| c.event_id.to_string());
        RecordedEvent::placed_with(json!({"correlation_id": "c-1", "causation_id": causation_id}))
    }

    #[test]
    fn an_event_hangs_under_the_earlier_event_that_caused_it() {
        let root = caused_by(None);
        let child = caused_by(Some(&root));
        let grandchild = caused_by(Some(&child));
        let sibling = caused_by(Some(&root));
        let events = [root, child, grandchild, sibling];
        assert_eq!(causal_parents(&events), [None, Some(0), Some(1), Some(0)]);
    }

    #[test]
    fn a_cause_that_comes_later_or_not_at_all_makes_a_root() {
        let later = caused_by(None);
        let early = caused_by(Some(&later));
        let elsewhere = caused_by(Some(&caused_by(None)));
        let mut itself = caused_by(None);
        itself.metadata = json!({"causation_id": itself.event_id.to_string()});
        let events = [early, later, elsewhere, itself];
        assert_eq!(causal_parents(&events), [None, None, None, None]);
    }
}
