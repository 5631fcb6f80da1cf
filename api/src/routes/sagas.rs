//! Admin routes for order sagas: the list by status, one saga's step
//! history, and an operator's retry or abort.

use axum::extract::State;
use axum::Json;
use domain::SagaStatus;
use saga::admin::{self, Cursor, SagaDetail, SagaPage};
use saga::SagaError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::answer::{Accepted, Answer};
use super::paging::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::auth::{Admins, Admitted, Staff};
use crate::error::ApiError;
use crate::extract::{ApiJson, CorrelationId, OptionalApiJson, Segment};
use crate::routes::queries::{parse_limit, Params};
use crate::startup::AppState;

/// The body of an abort.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Why the operator stops the saga (recorded with who did it).
    reason: String,
}

/// The (empty) body of a retry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {}

/// The answer to a retry or an abort.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SagaChanged {
    /// The saga's order.
    pub order_id: Uuid,
    /// The saga's status after the change.
    pub status: SagaStatus,
}

/// `GET /api/v1/admin/sagas?status=&limit=&cursor=` (operator, admin):
/// sagas newest first, `{"items":[{"order_id","status","step","updated_at",
/// ...}],"next_cursor"}`; `status` is one of running, compensating,
/// completed, compensated, stuck, aborted; `limit` 1 to 500 (default 50).
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    params: Params,
) -> Result<Json<SagaPage>, ApiError> {
    let mut query = params.check_exact(&["status", "limit", "cursor"]);
    let status = query.get("status", |v| {
        SagaStatus::parse(v).ok_or_else(|| {
            let names: Vec<&str> = SagaStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("must be one of {}", names.join(", "))
        })
    });
    let limit = query
        .get("limit", |v| parse_limit(v, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    let cursor = query.get("cursor", |v| {
        Cursor::parse(v).ok_or_else(|| "is not a cursor this list gave".to_owned())
    });
    query.finish()?;
    let page = admin::list(state.store.pool(), status, limit, cursor)
        .await
        .map_err(saga_error)?;
    Ok(Json(page))
}

/// `GET /api/v1/admin/sagas/{order_id}` (operator, admin): the saga's
/// status, its steps (actions and compensations with attempts, errors and
/// times) and its full history. 404 when the order has no saga.
#[tracing::instrument(skip(state))]
pub async fn detail(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(id): Segment,
) -> Result<Json<SagaDetail>, ApiError> {
    let order_id = order_id(&id)?;
    let detail = admin::detail(&state.sagas, order_id)
        .await
        .map_err(saga_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no saga for order {id}")))?;
    Ok(Json(detail))
}

/// `POST /api/v1/admin/sagas/{order_id}/retry` (admin): a stuck saga tries
/// its failing step again at once; 202 `{"order_id","status"}`. 409 unless
/// stuck.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Admitted<Admins>,
    Segment(id): Segment,
    correlation: CorrelationId,
    _body: OptionalApiJson<Retry>,
) -> Result<Accepted<SagaChanged>, ApiError> {
    let order_id = order_id(&id)?;
    let changed = admin::retry(&state.sagas, order_id, &caller.user_id, &correlation.0)
        .await
        .map_err(saga_error)?;
    Ok(accepted(order_id, changed.saga.status))
}

/// `POST /api/v1/admin/sagas/{order_id}/abort` `{"reason"}` (admin): the
/// saga takes no further step; the operator and the reason are recorded as
/// a saga event. 202 `{"order_id","status":"aborted"}`; 409 once finished.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn abort(
    State(state): State<AppState>,
    caller: Admitted<Admins>,
    Segment(id): Segment,
    correlation: CorrelationId,
    body: ApiJson<Abort>,
) -> Result<Accepted<SagaChanged>, ApiError> {
    let order_id = order_id(&id)?;
    let changed = admin::abort(
        &state.sagas,
        order_id,
        &caller.user_id,
        &body.value.reason,
        &correlation.0,
    )
    .await
    .map_err(saga_error)?;
    Ok(accepted(order_id, changed.saga.status))
}

fn accepted(order_id: Uuid, status: SagaStatus) -> Accepted<SagaChanged> {
    Answer(SagaChanged { order_id, status })
}

fn order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no saga for order {id}")))
}

fn saga_error(error: SagaError) -> ApiError {
    match error {
        SagaError::Domain(error) => commands::CommandError::Domain(error).into(),
        SagaError::Command(error) => error.into(),
        SagaError::Contention(_) => ApiError::Conflict(format!("{error}; retry the request")),
        other => ApiError::Internal(anyhow::Error::new(other)),
    }
}
