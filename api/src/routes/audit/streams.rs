//! One stream's audit: its events, the verification of its hash chain and
//! its state at any point of its history (time travel).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use commands::history::{self, At, HistoryError};
use eventstore::{RecordedEvent, Verification};
use serde::Serialize;
use serde_json::Value;

use super::{internal, parse_time};
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::queries::Params;
use crate::startup::AppState;

/// A stream's events.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StreamEvents {
    /// The stream.
    pub stream_id: String,
    /// Every event, by version.
    pub events: Vec<RecordedEvent>,
}

/// `GET /api/v1/audit/streams/{stream_id}/events`: every event of the stream
/// in version order; 404 for a stream with no events.
#[tracing::instrument(skip(state))]
pub async fn stream_events(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(stream_id): Segment,
) -> Result<Json<StreamEvents>, ApiError> {
    let events = state
        .store
        .read_stream_to_end(&stream_id, None)
        .await
        .map_err(internal)?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    Ok(Json(StreamEvents { stream_id, events }))
}

/// `GET /api/v1/audit/streams/{stream_id}/verify`: recomputes the stream's
/// hash chain; `first_invalid_version` names the first altered, missing or
/// re-ordered event. 404 for a stream with no events and no head.
#[tracing::instrument(skip(state))]
pub async fn verify_stream(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(stream_id): Segment,
) -> Result<Json<Verification>, ApiError> {
    let verification = eventstore::verify_stream(state.store.pool(), &stream_id)
        .await
        .map_err(internal)?;
    if verification.events_checked == 0 && verification.valid {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    Ok(Json(verification))
}

/// A stream's state at a point of its history.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StreamState {
    /// The stream.
    pub stream_id: String,
    /// The version the state stands at (0: before the first event).
    pub version: u64,
    /// The aggregate's state folded up to `version` (null at 0).
    pub state: Option<Value>,
}

/// `GET /api/v1/audit/streams/{stream_id}/state?version=N` or `?at=TIME`:
/// the aggregate's state folded (with upcasting) up to version N, or up to
/// its last event recorded at or before TIME; without either, its current
/// state.
#[tracing::instrument(skip(state, params))]
pub async fn stream_state(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(stream_id): Segment,
    params: Params,
) -> Result<Json<StreamState>, ApiError> {
    let at = point_of_history(&params)?;
    match history::state_at(&state.store, &stream_id, at).await {
        Ok(past) => Ok(Json(StreamState {
            stream_id,
            version: past.version,
            state: past.state,
        })),
        Err(HistoryError::NoStream(_)) => Err(ApiError::NotFound(format!("no stream {stream_id}"))),
        Err(error @ HistoryError::BeyondHead { .. }) => {
            Err(ApiError::invalid("version", error.to_string()))
        }
        Err(error @ HistoryError::UnknownType(_)) => {
            Err(ApiError::invalid("stream_id", error.to_string()))
        }
        Err(error @ HistoryError::Undecodable { .. }) => Err(ApiError::Conflict(format!(
            "the state cannot be folded: {error}"
        ))),
        Err(HistoryError::Store(error)) => Err(internal(error)),
    }
}

/// The point of history the time-travel query asks for: `version`, `at`
/// (not both), or the head when it names neither.
fn point_of_history(params: &Params) -> Result<At, ApiError> {
    let mut query = params.check_exact(&["version", "at"]);
    let version = query.get("version", |v| {
        v.parse::<u64>()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| "must be a stream version, 1 or more".to_owned())
    });
    let time = query.get("at", parse_time);
    if version.is_some() && time.is_some() {
        query.reject("at", "give version or at, not both");
    }
    query.finish()?;
    Ok(match (version, time) {
        (Some(version), _) => At::Version(version),
        (None, Some(time)) => At::Time(time),
        (None, None) => At::Head,
    })
}

/// The path of a stream's audit routes.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct StreamPath {
    /// The stream, `<aggregate>-<id>` (e.g. `order-<uuid>`, `inventory-<sku>`).
    pub stream_id: String,
}

/// The query of the time-travel route: `version` or `at`, not both.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct StateQuery {
    /// Fold up to this version (1 or more).
    #[schemars(range(min = 1))]
    pub version: Option<u64>,
    /// Fold up to the last event recorded at or before this time (RFC 3339).
    pub at: Option<DateTime<Utc>>,
}
