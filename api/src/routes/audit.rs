//! Audit routes (operator, admin): a stream's history, its verification and
//! its state at any point; search over the global order; everything one
//! request caused; seals and inclusion proofs.
//!
//! Every route checks the role first (a customer gets 403 before any
//! lookup), then its query string by the shared rules of
//! [`crate::routes::queries::Params`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use commands::history::{self, At, HistoryError};
use eventstore::audit::SearchFilter;
use eventstore::seal::{self, Proof, ProofError, Seal};
use eventstore::{Checkpoint, EventMetadata, RecordedEvent, Verification};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::paging::{Limit, DEFAULT_LIMIT, MAX_LIMIT};
use crate::routes::queries::{parse_limit, Params};
use crate::startup::AppState;

/// Most events the correlation view answers.
pub const MAX_CORRELATED: i64 = 10_000;

/// Who may read the audit side.
const AUDITORS: &[Role] = &[Role::Operator, Role::Admin];

fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(error.into())
}

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
#[tracing::instrument(skip(state, caller))]
pub async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    Segment(stream_id): Segment,
) -> Result<Json<StreamEvents>, ApiError> {
    caller.require(AUDITORS)?;
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
#[tracing::instrument(skip(state, caller))]
pub async fn verify_stream(
    State(state): State<AppState>,
    caller: Caller,
    Segment(stream_id): Segment,
) -> Result<Json<Verification>, ApiError> {
    caller.require(AUDITORS)?;
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
#[tracing::instrument(skip(state, caller, params))]
pub async fn stream_state(
    State(state): State<AppState>,
    caller: Caller,
    Segment(stream_id): Segment,
    params: Params,
) -> Result<Json<StreamState>, ApiError> {
    caller.require(AUDITORS)?;
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
    let at = match (version, time) {
        (Some(version), _) => At::Version(version),
        (None, Some(time)) => At::Time(time),
        (None, None) => At::Head,
    };
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
    caller: Caller,
    params: Params,
) -> Result<Json<Page>, ApiError> {
    caller.require(AUDITORS)?;
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

fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 time, e.g. 2026-12-02T10:00:00Z".to_owned())
}

/// Everything one request caused.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Correlated {
    /// The correlation id.
    pub correlation_id: String,
    /// Every event that carries it, across streams, by global position;
    /// each event's `metadata.causation_id` names the event (or the
    /// command) that caused it.
    pub events: Vec<RecordedEvent>,
    /// True when there were more than the answer holds (10,000).
    pub truncated: bool,
}

/// The causal tree of one request.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CorrelationTree {
    /// The correlation id.
    pub correlation_id: String,
    /// How many events the tree holds.
    pub events: usize,
    /// Events whose cause is not an event of this request (the request's
    /// own command, or an operator's), each with what it caused.
    pub roots: Vec<CausalNode>,
    /// True when there were more events than the tree holds (10,000).
    pub truncated: bool,
}

/// One event and the events it caused.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CausalNode {
    /// The event.
    pub event: RecordedEvent,
    /// Events whose `causation_id` is this event's id, by global position.
    pub caused: Vec<CausalNode>,
}

/// The correlation view: the list (default) or the causal tree.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum CorrelationAnswer {
    /// `format=list` (the default).
    List(Correlated),
    /// `format=tree`.
    Tree(CorrelationTree),
}

/// `GET /api/v1/audit/correlations/{correlation_id}`: every event one
/// request caused, across streams, by global position; `?format=tree`
/// answers the causal tree (parent = the event whose id is the
/// `causation_id`). 404 when no event carries the id.
#[tracing::instrument(skip(state, caller, params))]
pub async fn correlation(
    State(state): State<AppState>,
    caller: Caller,
    Segment(correlation_id): Segment,
    params: Params,
) -> Result<Json<CorrelationAnswer>, ApiError> {
    caller.require(AUDITORS)?;
    let mut query = params.check_exact(&["format"]);
    let tree = query
        .get("format", |v| match v {
            "list" => Ok(false),
            "tree" => Ok(true),
            _ => Err("must be list or tree".to_owned()),
        })
        .unwrap_or(false);
    query.finish()?;
    let mut events =
        eventstore::audit::correlated(state.store.pool(), &correlation_id, MAX_CORRELATED + 1)
            .await
            .map_err(internal)?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no event carries correlation id {correlation_id}"
        )));
    }
    let truncated = events.len() as i64 > MAX_CORRELATED;
    events.truncate(MAX_CORRELATED as usize);
    if tree {
        let count = events.len();
        Ok(Json(CorrelationAnswer::Tree(CorrelationTree {
            correlation_id,
            events: count,
            roots: causal_tree(events),
            truncated,
        })))
    } else {
        Ok(Json(CorrelationAnswer::List(Correlated {
            correlation_id,
            events,
            truncated,
        })))
    }
}

/// Arranges `events` (by global position) as a forest: an event hangs under
/// the earlier event whose id is its `causation_id`; the rest are roots.
/// An event can only hang under an earlier one, so the result has no cycle
/// whatever the metadata says.
fn causal_tree(events: Vec<RecordedEvent>) -> Vec<CausalNode> {
    use std::collections::HashMap;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let cause = EventMetadata::of(&event.metadata)
            .causation_id
            .and_then(|c| index.get(&c).copied());
        parent.push(cause);
        index.insert(event.event_id.to_string(), i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    let mut slots: Vec<Option<RecordedEvent>> = events.into_iter().map(Some).collect();
    // Children always come after their parent: build from the back.
    let mut built: Vec<Option<CausalNode>> = (0..slots.len()).map(|_| None).collect();
    for i in (0..slots.len()).rev() {
        let caused = children[i]
            .iter()
            .filter_map(|c| built[*c].take())
            .collect();
        if let Some(event) = slots[i].take() {
            built[i] = Some(CausalNode { event, caused });
        }
    }
    roots.into_iter().filter_map(|r| built[r].take()).collect()
}

/// One page of seals.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SealPage {
    /// Seals, oldest first.
    pub items: Vec<Seal>,
    /// Pass back as `after=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Hex Ed25519 public key this server seals with (null when it has no
    /// seal key).
    pub public_key: Option<String>,
}

/// `GET /api/v1/audit/seals?after=&limit=`: the seals, oldest first, and
/// the public key they are checked with.
#[tracing::instrument(skip_all)]
pub async fn seals(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<SealPage>, ApiError> {
    caller.require(AUDITORS)?;
    let mut query = params.check_exact(&["after", "limit"]);
    let after = query
        .get("after", |v| {
            v.parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| "must be a seal id (0 or more)".to_owned())
        })
        .unwrap_or(0);
    let limit = query
        .get("limit", |v| parse_limit(v, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    query.finish()?;
    let mut items = seal::list_seals(state.store.pool(), after, limit + 1)
        .await
        .map_err(internal)?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|s| s.seal_id.to_string()))
        .flatten();
    Ok(Json(SealPage {
        items,
        next_cursor,
        public_key: state.seal_key.as_ref().map(|k| k.public_key_hex()),
    }))
}

/// What sealing on demand did.
#[derive(Debug)]
pub enum SealOutcome {
    /// 201: a new seal.
    Sealed(Seal),
    /// 200: nothing was new; the latest seal.
    Latest(Seal),
}

impl IntoResponse for SealOutcome {
    fn into_response(self) -> Response {
        match self {
            SealOutcome::Sealed(seal) => (StatusCode::CREATED, Json(seal)).into_response(),
            SealOutcome::Latest(seal) => Json(seal).into_response(),
        }
    }
}

/// The path of a stream's audit routes.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct StreamPath {
    /// The stream, `<aggregate>-<id>` (e.g. `order-<uuid>`, `inventory-<sku>`).
    pub stream_id: String,
}

/// The path of the correlation view.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CorrelationPath {
    /// The request's correlation id (its `X-Correlation-Id`).
    pub correlation_id: String,
}

/// The path of an event's proof.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EventPath {
    /// The event's id.
    pub event_id: Uuid,
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

/// The query of the time-travel route: `version` or `at`, not both.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct StateQuery {
    /// Fold up to this version (1 or more).
    #[schemars(range(min = 1))]
    pub version: Option<u64>,
    /// Fold up to the last event recorded at or before this time (RFC 3339).
    pub at: Option<DateTime<Utc>>,
}

/// The answer format of the correlation view.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationFormat {
    /// The events by global position (the default).
    List,
    /// The causal tree.
    Tree,
}

/// The query of the correlation view.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CorrelationQuery {
    /// `list` (default) or `tree`.
    pub format: Option<CorrelationFormat>,
}

/// The query of `GET /api/v1/audit/seals`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SealListQuery {
    /// The `next_cursor` (a seal id) of the previous page.
    #[schemars(range(min = 0))]
    pub after: Option<i64>,
    /// Page size.
    #[serde(flatten)]
    pub limit: Limit,
}

/// `POST /api/v1/audit/seals`: seals what is new now, without waiting for
/// the sealer's interval. 201 with the new seal; 200 with the latest seal
/// when nothing is new; 409 when the store has no events; 503 when this
/// server has no seal key.
#[tracing::instrument(skip_all)]
pub async fn seal_now(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<SealOutcome, ApiError> {
    caller.require(AUDITORS)?;
    let key = state.seal_key.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this server has no seal key (FULCRUM_SEAL_KEY)".into())
    })?;
    if let Some(sealed) = seal::seal_now(state.store.pool(), key)
        .await
        .map_err(internal)?
    {
        return Ok(SealOutcome::Sealed(sealed));
    }
    match seal::latest_seal(state.store.pool())
        .await
        .map_err(internal)?
    {
        Some(latest) => Ok(SealOutcome::Latest(latest)),
        None => Err(ApiError::Conflict(
            "nothing to seal: the store has no events yet".into(),
        )),
    }
}

/// `GET /api/v1/audit/events/{event_id}/proof`: the inclusion proof of the
/// event in the latest seal. 404 for an unknown event; 409 when no seal
/// covers it yet, or when it was altered after it was sealed.
#[tracing::instrument(skip(state, caller))]
pub async fn proof(
    State(state): State<AppState>,
    caller: Caller,
    Segment(event_id): Segment,
) -> Result<Json<Proof>, ApiError> {
    caller.require(AUDITORS)?;
    let event_id = Uuid::parse_str(&event_id)
        .map_err(|_| ApiError::NotFound(format!("no event {event_id}")))?;
    match seal::proof_for(state.store.pool(), event_id).await {
        Ok(proof) => Ok(Json(proof)),
        Err(error @ ProofError::NoSuchEvent(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ (ProofError::NotSealed(_) | ProofError::AlteredSinceSealed(_))) => {
            Err(ApiError::Conflict(error.to_string()))
        }
        Err(ProofError::SealData(message)) => Err(internal(anyhow::anyhow!(message))),
        Err(ProofError::Store(error)) => Err(internal(error)),
    }
}
