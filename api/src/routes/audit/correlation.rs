//! The correlation view: everything one request caused, across streams, as
//! a list by global position or as the causal tree.

use axum::extract::State;
use axum::Json;
use eventstore::audit::causal_parents;
use eventstore::RecordedEvent;
use serde::Serialize;

use super::internal;
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::queries::Params;
use crate::startup::AppState;

/// Most events the correlation view answers.
pub const MAX_CORRELATED: i64 = 10_000;

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
#[tracing::instrument(skip(state, params))]
pub async fn correlation(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(correlation_id): Segment,
    params: Params,
) -> Result<Json<CorrelationAnswer>, ApiError> {
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
/// its cause by [`causal_parents`]; the rest are roots. An event can only
/// hang under an earlier one, so the result has no cycle whatever the
/// metadata says.
fn causal_tree(events: Vec<RecordedEvent>) -> Vec<CausalNode> {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    let mut roots = Vec::new();
    for (i, parent) in causal_parents(&events).into_iter().enumerate() {
        match parent {
            Some(parent) => children[parent].push(i),
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

/// The path of the correlation view.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CorrelationPath {
    /// The request's correlation id (its `X-Correlation-Id`).
    pub correlation_id: String,
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
