//! `GET /api/v1/products` and `GET /api/v1/inventory/{sku}`: the catalogue
//! and stock levels, for any role.

use axum::extract::State;
use projections::read::{self, ProductView, StockView};
use projections::Projection;

use super::params::Params;
use super::{internal, Items, Positioned, ReadModel, Refusal};
use crate::auth::{Admitted, Anyone};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::startup::AppState;

/// `GET /api/v1/products`: every product, by SKU.
#[tracing::instrument(skip_all)]
pub async fn products(
    State(state): State<AppState>,
    _: Admitted<Anyone>,
    params: Params,
) -> Result<Positioned<Items<ProductView>>, ApiError> {
    let min_position = params.check(&[]).finish()?;
    let model = ReadModel::ready(&state, Projection::Catalog, min_position).await?;
    let items = read::products(state.store.pool(), &model.schema)
        .await
        .map_err(internal)?;
    Ok(model.answer(Items { items }))
}

/// `GET /api/v1/inventory/{sku}`: the SKU's stock; 404 for a SKU with no
/// stock record (never received, or not a SKU at all).
#[tracing::instrument(skip(state, params))]
pub async fn stock(
    State(state): State<AppState>,
    _: Admitted<Anyone>,
    Segment(sku): Segment,
    params: Params,
) -> Result<Positioned<StockView>, Refusal> {
    let min_position = params.check(&[]).finish()?;
    let not_found = || ApiError::NotFound(format!("no stock record for {sku}"));
    if domain::validate_sku(&sku).is_err() {
        return Err(not_found().into());
    }
    let model = ReadModel::ready(&state, Projection::Inventory, min_position).await?;
    let stock = read::stock(state.store.pool(), &model.schema, &sku)
        .await
        .map_err(internal)?
        .ok_or_else(|| model.refuse(not_found()))?;
    Ok(model.answer(stock))
}
