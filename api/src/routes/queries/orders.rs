//! `GET /api/v1/orders/{id}` and `GET /api/v1/orders`: a customer reads
//! their own orders, staff read all.

use axum::extract::State;
use projections::read::{self, OrderFilter, OrderPage, OrderView};
use projections::Projection;
use uuid::Uuid;

use super::params::{parse_limit, Params};
use super::{internal, Positioned, ReadModel, Refusal};
use crate::auth::{Admitted, Anyone};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::paging::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::startup::AppState;

/// `GET /api/v1/orders/{id}`: the order as the read model has it. 404 for
/// an unknown or malformed id; 403 when a customer asks for another
/// customer's order (as the write routes answer).
#[tracing::instrument(skip(state, caller, params))]
pub async fn order(
    State(state): State<AppState>,
    caller: Admitted<Anyone>,
    Segment(id): Segment,
    params: Params,
) -> Result<Positioned<OrderView>, Refusal> {
    let min_position = params.check(&[]).finish()?;
    let not_found = || ApiError::NotFound(format!("no order {id}"));
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let model = ReadModel::ready(&state, Projection::Orders, min_position).await?;
    let order = read::order(state.store.pool(), &model.schema, order_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| model.refuse(not_found()))?;
    if !caller.is_staff() && order.customer_id != caller.user_id {
        return Err(model.refuse(ApiError::Forbidden(
            "this order belongs to another customer".into(),
        )));
    }
    Ok(model.answer(order))
}

/// `GET /api/v1/orders?status=&limit=&cursor=`: a page of orders, newest
/// first; a customer's own only, every order for staff. `limit` is 1 to
/// 500 (default 50); `cursor` is a `next_cursor` of an earlier page, which
/// is null on the last one.
#[tracing::instrument(skip_all)]
pub async fn orders(
    State(state): State<AppState>,
    caller: Admitted<Anyone>,
    params: Params,
) -> Result<Positioned<OrderPage>, ApiError> {
    let mut query = params.check(&["status", "limit", "cursor"]);
    let status = query.get("status", |v| {
        read::parse_status(v)
            .ok_or_else(|| "must be placed, confirmed, shipped, delivered or cancelled".into())
    });
    let limit = query.get("limit", |v| parse_limit(v, MAX_LIMIT));
    let before = query.get("cursor", |v| {
        read::parse_cursor(v).ok_or_else(|| "must be a next_cursor from an earlier page".into())
    });
    let min_position = query.finish()?;
    let filter = OrderFilter {
        customer_id: (!caller.is_staff()).then(|| caller.user_id.clone()),
        status,
        before,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
    };
    let model = ReadModel::ready(&state, Projection::Orders, min_position).await?;
    let page = read::orders(state.store.pool(), &model.schema, &filter)
        .await
        .map_err(internal)?;
    Ok(model.answer(page))
}
