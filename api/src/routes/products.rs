//! `POST /api/v1/products`: define a product (operator).

use axum::extract::State;
use domain::product::ProductCommand;
use schemars::JsonSchema;
use serde::Deserialize;

use super::answer::{Answer, Created, SkuReply, Written};
use super::write::{context, reply, written};
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::extract::{ApiJson, CorrelationId, IdempotencyKey};
use crate::startup::AppState;

/// The body of a product definition.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefineProduct {
    /// The SKU: 1 to 64 of `A-Z a-z 0-9 - _ .`.
    sku: String,
    /// The product's name.
    name: String,
    /// Price in minor units (cents) of `currency`, more than 0.
    unit_price: i64,
    /// ISO 4217 code, e.g. `EUR`.
    currency: String,
}

/// Defines a product: 201 `{"sku", "position"}`; 409 if the SKU exists.
#[tracing::instrument(skip_all)]
pub async fn define(
    State(state): State<AppState>,
    caller: Admitted<Staff>,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: ApiJson<DefineProduct>,
) -> Result<Created<Written<SkuReply>>, ApiError> {
    let ApiJson { value: b, raw } = body;
    domain::validate_sku(&b.sku).map_err(|m| ApiError::invalid("sku", m))?;
    let context = context(&caller, correlation, key, "POST /api/v1/products", &raw);
    let reply = reply(&SkuReply { sku: b.sku.clone() })?;
    let command = ProductCommand::DefineProduct {
        sku: b.sku.clone(),
        name: b.name,
        unit_price: b.unit_price,
        currency: b.currency,
    };
    let outcome = state
        .commands
        .products
        .execute(&b.sku, command, context, reply)
        .await?;
    Ok(Answer(written(outcome)?))
}
