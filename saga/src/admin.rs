//! What operators see of sagas and what they may do: the list by status,
//! one saga's step history, retry (a stuck saga) and abort.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::saga::{SagaCommand, StepKind, StepStatus};
use domain::SagaStatus;
use eventstore::EventMetadata;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::store::{stream_id, Cause, Changed};
use crate::{SagaError, SagaStore};

/// One saga in the list.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SagaSummary {
    /// The order.
    pub order_id: Uuid,
    /// Where the saga is.
    pub status: String,
    /// The step sent last, e.g. `reserve_stock:SKU-1`.
    pub step: Option<String>,
    /// The last error of that step, if any.
    pub last_error: Option<String>,
    /// When the saga started.
    pub started_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A page of sagas, newest first.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SagaPage {
    /// The sagas.
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor=` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// How many sagas have each status, over all sagas (not only this page;
    /// statuses no saga has are absent).
    pub counts: BTreeMap<String, i64>,
}

/// A position in the list: the last item's start time and order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    started_at: DateTime<Utc>,
    order_id: Uuid,
}

impl Cursor {
    /// Parses a `next_cursor`; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (micros, order_id) = text.split_once('_')?;
        let started_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor {
            started_at,
            order_id: order_id.parse().ok()?,
        })
    }

    fn render(&self) -> String {
        format!("{}_{}", self.started_at.timestamp_micros(), self.order_id)
    }
}

/// Sagas, newest first, optionally only those in `status`; at most
/// `limit` (1 to 500) after `cursor`.
pub async fn list(
    pool: &PgPool,
    status: Option<SagaStatus>,
    limit: i64,
    cursor: Option<Cursor>,
) -> Result<SagaPage, SagaError> {
    let rows = sqlx::query(
        "SELECT order_id, status, step, last_error, started_at, updated_at FROM saga_instances
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::timestamptz IS NULL OR (started_at, order_id) < ($2, $3))
         ORDER BY started_at DESC, order_id DESC
         LIMIT $4",
    )
    .bind(status.map(SagaStatus::as_str))
    .bind(cursor.map(|c| c.started_at))
    .bind(cursor.map(|c| c.order_id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut items = rows
        .iter()
        .map(|row| {
            Ok(SagaSummary {
                order_id: row.try_get("order_id")?,
                status: row.try_get("status")?,
                step: row.try_get("step")?,
                last_error: row.try_get("last_error")?,
                started_at: row.try_get("started_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more.then(|| items.last()).flatten().map(|last| {
        Cursor {
            started_at: last.started_at,
            order_id: last.order_id,
        }
        .render()
    });
    let counts = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM saga_instances GROUP BY status",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(SagaPage {
        items,
        next_cursor,
        counts,
    })
}

/// One step of a saga's history.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepView {
    /// The step, e.g. `reserve_stock`.
    pub name: String,
    /// Its SKU, for per-line steps.
    pub sku: Option<String>,
    /// `action` or `compensation`.
    pub kind: StepKind,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts sent.
    pub attempts: u32,
    /// The last error.
    pub error: Option<String>,
    /// When it last changed.
    pub at: Option<DateTime<Utc>>,
    /// Its deadline, while started.
    pub deadline: Option<DateTime<Utc>>,
}

/// One event of the saga's stream.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    /// Its version in the saga stream.
    pub version: u64,
    /// Its type, e.g. `SagaStepStarted`.
    pub event_type: String,
    /// Its payload.
    pub data: Value,
    /// Who caused it (`saga`, or an operator).
    pub user_id: Option<String>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A saga with its steps and its full history.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SagaDetail {
    /// The order.
    pub order_id: Uuid,
    /// Where the saga is.
    pub status: SagaStatus,
    /// The reason the order is (being) cancelled with, once compensating.
    pub reason: Option<String>,
    /// The steps, in the order they were first taken.
    pub steps: Vec<StepView>,
    /// The operator who aborted the saga.
    pub aborted_by: Option<String>,
    /// Why it was aborted.
    pub abort_reason: Option<String>,
    /// Every event of the saga's stream, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// The saga of `order_id`, or `None` if there is none.
pub async fn detail(sagas: &SagaStore, order_id: Uuid) -> Result<Option<SagaDetail>, SagaError> {
    let loaded = sagas.load(order_id).await?;
    let saga = &loaded.state;
    if !saga.started {
        return Ok(None);
    }
    let mut steps: Vec<(Option<DateTime<Utc>>, StepView)> = saga
        .steps
        .iter()
        .map(|(step, state)| {
            (
                state.first_at.or(state.at),
                StepView {
                    name: step.name().to_owned(),
                    sku: step.sku().map(str::to_owned),
                    kind: step.kind(),
                    status: state.status,
                    attempts: state.attempt,
                    error: state.error.clone(),
                    at: state.at,
                    deadline: (state.status == StepStatus::Started)
                        .then_some(state.deadline)
                        .flatten(),
                },
            )
        })
        .collect();
    steps.sort_by_key(|(first, _)| *first);
    let history = eventstore::read_stream(sagas.events().pool(), &stream_id(order_id), 1, 10_000)
        .await?
        .into_iter()
        .map(|e| HistoryEntry {
            version: e.version,
            user_id: EventMetadata::of(&e.metadata).user_id,
            event_type: e.event_type,
            data: e.data,
            recorded_at: e.recorded_at,
        })
        .collect();
    Ok(Some(SagaDetail {
        order_id,
        status: saga.status,
        reason: saga.failure.map(|r| r.as_str().to_owned()),
        steps: steps.into_iter().map(|(_, view)| view).collect(),
        aborted_by: saga.aborted.as_ref().map(|(by, _)| by.clone()),
        abort_reason: saga.aborted.as_ref().map(|(_, why)| why.clone()),
        history,
    }))
}

/// An operator's retry of a stuck saga: its failing step is due again at
/// once (the orchestrator's timer sends it). Conflict unless stuck.
pub async fn retry(
    sagas: &SagaStore,
    order_id: Uuid,
    by: &str,
    correlation_id: &str,
) -> Result<Changed, SagaError> {
    let cause = operator(by, correlation_id);
    let by = by.to_owned();
    sagas
        .change(order_id, &cause, move |_, now| {
            vec![SagaCommand::Retry {
                by: by.clone(),
                now,
            }]
        })
        .await
}

/// An operator's abort: the saga takes no further step; who and why are
/// recorded. Conflict once the saga finished.
pub async fn abort(
    sagas: &SagaStore,
    order_id: Uuid,
    by: &str,
    reason: &str,
    correlation_id: &str,
) -> Result<Changed, SagaError> {
    let cause = operator(by, correlation_id);
    let (by, reason) = (by.to_owned(), reason.to_owned());
    sagas
        .change(order_id, &cause, move |_, now| {
            vec![SagaCommand::Abort {
                by: by.clone(),
                reason: reason.clone(),
                now,
            }]
        })
        .await
}

fn operator(by: &str, correlation_id: &str) -> Cause {
    Cause {
        actor: by.to_owned(),
        causation_id: correlation_id.to_owned(),
        correlation_id: Some(correlation_id.to_owned()),
    }
}
