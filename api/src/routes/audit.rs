//! Audit reads (operator, admin): a stream's full history, and every event
//! in gap-free global order with cursor paging.

use axum::extract::{Path, Query, State};
use axum::Json;
use eventstore::Checkpoint;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::startup::AppState;

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 500;

/// `GET /api/v1/audit/streams/{stream_id}/events`: every event of the stream
/// in version order; 404 for a stream with no events.
#[tracing::instrument(skip(state, caller))]
pub async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let mut events = Vec::new();
    loop {
        let page = state
            .store
            .read_stream(&stream_id, events.len() as u64 + 1, 1000)
            .await
            .map_err(anyhow::Error::from)?;
        let done = page.len() < 1000;
        events.extend(page);
        if done {
            break;
        }
    }
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    Ok(Json(json!({"stream_id": stream_id, "events": events})))
}

/// Query of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// A `next_cursor` from an earlier page, or a global position.
    after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// One page of events.
#[derive(Debug, Serialize)]
pub struct Page {
    items: Vec<eventstore::RecordedEvent>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/audit/events?after=&limit=`: events in gap-free global order.
/// `next_cursor` is null on the last page.
#[tracing::instrument(skip(state, caller))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match query.after.as_deref() {
        None | Some("") => Checkpoint::START,
        Some(cursor) => resolve_cursor(&state, cursor).await?,
    };
    // One more than asked tells whether a next page exists.
    let mut items = state
        .store
        .read_all(after, limit + 1)
        .await
        .map_err(anyhow::Error::from)?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|e| e.checkpoint().to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// A cursor is a checkpoint (`<tx>.<position>`) or a plain global position
/// of a stored event.
async fn resolve_cursor(state: &AppState, cursor: &str) -> Result<Checkpoint, ApiError> {
    if let Ok(checkpoint) = cursor.parse::<Checkpoint>() {
        return Ok(checkpoint);
    }
    let invalid = || {
        ApiError::invalid(
            "after",
            "must be a next_cursor or the global position of an event",
        )
    };
    let position: i64 = cursor.parse().map_err(|_| invalid())?;
    if position == 0 {
        return Ok(Checkpoint::START);
    }
    eventstore::checkpoint_at(state.store.pool(), position)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(invalid)
}
