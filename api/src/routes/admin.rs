//! Admin routes for projections: their status, and rebuilds.

use axum::extract::State;
use axum::Json;
use projections::status::{DeadLetter, ProjectionInfo, Status};
use projections::{Projection, Rebuild, RebuildError};
use schemars::JsonSchema;
use serde::Serialize;

use super::answer::{Accepted, Answer, Items};
use super::paging::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::auth::{Admins, Admitted, Staff};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::queries::{parse_limit, Params};
use crate::startup::AppState;

/// A projection's dead letters.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeadLetters {
    /// The projection.
    pub name: String,
    /// How many dead letters it has in all.
    pub total: i64,
    /// The first `limit` of them, oldest first.
    pub items: Vec<DeadLetter>,
}

/// The answer to a rebuild request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RebuildStarted {
    /// The projection.
    pub name: String,
    /// `rebuilding`.
    pub status: Status,
}

/// `GET /api/v1/admin/projections` (operator, admin): every projection's
/// position, the store's head, the lag (events of its streams not applied
/// yet), its status and its dead-letter count.
#[tracing::instrument(skip(state))]
pub async fn projections(
    State(state): State<AppState>,
    _: Admitted<Staff>,
) -> Result<Json<Items<ProjectionInfo>>, ApiError> {
    let items = projections::status::list(state.store.pool())
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Json(Items { items }))
}

/// `GET /api/v1/admin/projections/{name}/dead-letters?limit=` (operator,
/// admin): the events the projection could not apply, oldest first (the
/// one that halted it comes first), with the error and when it happened;
/// `total` counts them all. `limit` is 1 to 500 (default 50), as on every
/// list. 404 for an unknown projection.
#[tracing::instrument(skip(state, params))]
pub async fn dead_letters(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(name): Segment,
    params: Params,
) -> Result<Json<DeadLetters>, ApiError> {
    let mut query = params.check_exact(&["limit"]);
    let limit = query
        .get("limit", |v| parse_limit(v, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    query.finish()?;
    let projection = Projection::parse(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no projection {name:?}")))?;
    let pool = state.store.pool();
    let items = projections::status::first_dead_letters(pool, projection, limit)
        .await
        .map_err(anyhow::Error::from)?;
    let total = projections::status::dead_letter_count(pool, projection)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Json(DeadLetters {
        name: projection.name().to_owned(),
        total,
        items,
    }))
}

/// `POST /api/v1/admin/projections/{name}/rebuild` (admin): claims the
/// rebuild and answers 202 at once; the rebuild runs in the background and
/// swaps the fresh tables in when it has caught up. 404 for an unknown
/// projection, 409 while a rebuild of it runs.
#[tracing::instrument(skip(state))]
pub async fn rebuild(
    State(state): State<AppState>,
    _: Admitted<Admins>,
    Segment(name): Segment,
) -> Result<Accepted<RebuildStarted>, ApiError> {
    let projection = Projection::parse(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no projection {name:?}")))?;
    let rebuild = Rebuild::start(&state.store, projection)
        .await
        .map_err(|error| match error {
            RebuildError::Busy(_) => ApiError::Conflict(error.to_string()),
            RebuildError::Projection(error) => ApiError::Internal(error.into()),
        })?
        .on_error(state.projection_on_error);
    tokio::spawn(async move {
        // Failures are logged and recorded as the projection's last_error.
        let _ = rebuild.run(|_| {}).await;
    });
    Ok(Answer(RebuildStarted {
        name: projection.name().to_owned(),
        status: Status::Rebuilding,
    }))
}
