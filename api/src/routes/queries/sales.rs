//! `GET /api/v1/stats/sales?from=&to=`: confirmed orders and revenue per
//! day and currency (operator, admin).

use axum::extract::State;
use projections::read::{self, SalesDay};
use projections::Projection;
use schemars::JsonSchema;
use serde::Serialize;

use super::params::{parse_day, Params};
use super::{internal, Positioned, ReadModel};
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::startup::AppState;

/// `{"days": [...]}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Days {
    /// Confirmed orders and revenue per UTC day and currency.
    days: Vec<SalesDay>,
}

/// `GET /api/v1/stats/sales?from=&to=`: the days from `from` to `to`
/// (`YYYY-MM-DD`, inclusive, each optional), by day then currency. 422 for
/// a malformed date or `from` after `to`.
#[tracing::instrument(skip_all)]
pub async fn sales(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    params: Params,
) -> Result<Positioned<Days>, ApiError> {
    let mut query = params.check(&["from", "to"]);
    let from = query.get("from", parse_day);
    let to = query.get("to", parse_day);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            query.reject("from", "must not be after `to`");
        }
    }
    let min_position = query.finish()?;
    let model = ReadModel::ready(&state, Projection::Sales, min_position).await?;
    let days = read::sales_days(state.store.pool(), &model.schema, from, to)
        .await
        .map_err(internal)?;
    Ok(model.answer(Days { days }))
}
