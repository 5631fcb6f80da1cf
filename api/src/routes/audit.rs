//! Audit reads (operator, admin): a stream's full history, and every event
//! in gap-free global order with cursor paging.

use axum::extract::State;
use axum::Json;
use eventstore::Checkpoint;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::queries::{parse_limit, Params};
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
    Segment(stream_id): Segment,
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

/// One page of events.
#[derive(Debug, Serialize)]
pub struct Page {
    items: Vec<eventstore::RecordedEvent>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/audit/events?after=&limit=`: events in gap-free global order.
/// `after` is a `next_cursor` of an earlier page or a global position; an
/// empty value counts as absent, like every query parameter. `next_cursor`
/// is null on the last page.
#[tracing::instrument(skip_all)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<Page>, ApiError> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let mut query = params.check_exact(&["after", "limit"]);
    let after = query.get("after", parse_after);
    let limit = query
        .get("limit", |v| parse_limit(v, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    query.finish()?;
    let after = match after {
        None => Checkpoint::START,
        Some(After::Cursor(checkpoint)) => checkpoint,
        Some(After::Position(position)) => {
            eventstore::checkpoint_at_or_before(state.store.pool(), position)
                .await
                .map_err(anyhow::Error::from)?
        }
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

/// Where an audit page starts.
enum After {
    /// A `next_cursor` (`<tx>.<position>`).
    Cursor(Checkpoint),
    /// A plain global position.
    Position(i64),
}

fn parse_after(value: &str) -> Result<After, String> {
    if let Ok(checkpoint) = value.parse::<Checkpoint>() {
        return Ok(After::Cursor(checkpoint));
    }
    value
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .map(After::Position)
        .ok_or_else(|| "must be a next_cursor or a global position (0 or more)".to_owned())
}
