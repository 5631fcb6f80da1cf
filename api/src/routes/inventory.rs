//! `POST /api/v1/inventory/{sku}/receipts`: receive stock (operator).

use axum::extract::State;
use commands::CommandError;
use domain::DomainError;
use schemars::JsonSchema;
use serde::Deserialize;

use super::answer::{Answer, Created, SkuReply, Written};
use super::write::{context, reply, written};
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::extract::{ApiJson, CorrelationId, IdempotencyKey, Segment};
use crate::startup::AppState;

/// The body of a stock receipt.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// How many units arrived, more than 0.
    quantity: i64,
}

/// Receives stock of a defined product: 201 `{"sku", "position"}`; 404 for
/// a SKU the catalogue does not know.
#[tracing::instrument(skip_all, fields(sku = %sku))]
pub async fn receive(
    State(state): State<AppState>,
    caller: Admitted<Staff>,
    Segment(sku): Segment,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: ApiJson<Receipt>,
) -> Result<Created<Written<SkuReply>>, ApiError> {
    let route = format!("POST /api/v1/inventory/{sku}/receipts");
    let context = context(&caller, correlation, key, &route, &body.raw);
    let reply = reply(&SkuReply { sku: sku.clone() })?;
    let outcome = state
        .commands
        .receive_stock(&sku, body.value.quantity, context, reply)
        .await
        .map_err(|error| match error {
            CommandError::Domain(DomainError::NotFound(_)) => {
                ApiError::NotFound(format!("no product {sku}"))
            }
            other => other.into(),
        })?;
    Ok(Answer(written(outcome)?))
}
