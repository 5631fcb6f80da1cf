//! Search over the audit trail: events in gap-free global order under
//! filters, a page at a time.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use eventstore::audit::SearchFilter;
use eventstore::{Checkpoint, RecordedEvent};
use serde::Serialize;

use super::{internal, parse_time};
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::routes::paging::{Limit, DEFAULT_LIMIT, MAX_LIMIT};
use crate::routes::queries::{parse_limit, Params};
use crate::startup::AppState;

/// One page of events.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Page {
    /// The events, in gap-free global order.
    pub items: Vec<RecordedEvent>,
    /// Pass back as `after=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The filters of `GET /api/v1/audit/events`, besides paging.
const FILTERS: &[&str] = &[
    "event_type",
    "stream_type",
    "stream_id",
    "user_id",
    "correlation_id",
    "from",
    "to",
];

/// `GET /api/v1/audit/events`: events in gap-free global order, filtered by
/// `event_type`, `stream_type`, `stream_id`, `user_id`, `correlation_id`,
/// `from` (inclusive) and `to` (exclusive) (RFC 3339), combined with AND.
/// `after` is a `next_cursor` of an earlier page or a global position; an
/// empty value counts as absent, like every query parameter. `next_cursor`
/// is null on the last page.
#[tracing::instrument(skip_all)]
pub async fn events(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    params: Params,
) -> Result<Json<Page>, ApiError> {
    let mut allowed = FILTERS.to_vec();
    allowed.extend(["after", "limit"]);
    let mut query = params.check_exact(&allowed);
    let text = |v: &str| -> Result<String, String> {
        if v.len() > 255 || v.chars().any(char::is_control) {
            Err("must be at most 255 characters, without control characters".into())
        } else {
            Ok(v.to_owned())
        }
    };
    let filter = SearchFilter {
        event_type: query.get("event_type", text),
        stream_type: query.get("stream_type", text),
        stream_id: query.get("stream_id", text),
        user_id: query.get("user_id", text),
        correlation_id: query.get("correlation_id", text),
        from: query.get("from", parse_time),
        to: query.get("to", parse_time),
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from > to {
            query.reject("to", "must not be before from");
        }
    }
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
                .map_err(internal)?
        }
    };
    // One more than asked tells whether a next page exists.
    let mut items = eventstore::audit::search(state.store.pool(), &filter, after, limit + 1)
        .await
        .map_err(internal)?;
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

/// The query of `GET /api/v1/audit/events` (filters combine with AND).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SearchQuery {
    /// Only events of this type, e.g. `OrderPlaced`.
    pub event_type: Option<String>,
    /// Only events of streams of this type, e.g. `order`.
    pub stream_type: Option<String>,
    /// Only events of this stream.
    pub stream_id: Option<String>,
    /// Only events whose acting user (JWT subject) is this.
    pub user_id: Option<String>,
    /// Only events of this request (its `X-Correlation-Id`).
    pub correlation_id: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339), not before `from`.
    pub to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page, or a global position.
    pub after: Option<String>,
    /// Page size.
    #[serde(flatten)]
    pub limit: Limit,
}
