//! Order commands: place (customer), cancel (owner or staff), ship and
//! deliver (operator).

use axum::extract::State;
use commands::{Actor, CommandError, OrderRequest, RequestedLine};
use domain::order::OrderCommand;
use domain::{Address, CancelReason, DomainError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::answer::{Accepted, Answer, OrderPlacedReply, OrderReply, Written};
use super::write::{context, reply, written};
use crate::auth::Caller;
use crate::auth::{Admitted, Anyone, Customers, Staff};
use crate::error::ApiError;
use crate::extract::{ApiJson, CorrelationId, IdempotencyKey, OptionalApiJson, Segment};
use crate::startup::AppState;

/// The body of `POST /api/v1/orders`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// What to order: at least one line.
    lines: Vec<Line>,
    /// Where to ship it.
    shipping_address: Address,
    /// A payment method token (`tok_visa`, `tok_declined`, ...).
    payment_method: String,
}

/// One requested line.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// A defined product's SKU.
    sku: String,
    /// How many, more than 0.
    quantity: i64,
}

/// The optional body of a cancellation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// A free-text note (at most 500 characters); the recorded reason is
    /// always `customer_cancelled`.
    #[serde(default)]
    reason: Option<String>,
}

/// The body of a shipment notice.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    /// Who carries it.
    carrier: String,
    /// The carrier's tracking number.
    tracking_number: String,
}

/// The (empty) body of a delivery notice.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deliver {}

/// Longest free-text cancellation note.
const MAX_NOTE_CHARS: usize = 500;

/// Places an order for the calling customer, priced from the catalogue:
/// 202 `{"order_id", "status": "placed", "position"}`.
#[tracing::instrument(skip_all)]
pub async fn place(
    State(state): State<AppState>,
    caller: Admitted<Customers>,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: ApiJson<PlaceOrder>,
) -> Result<Accepted<Written<OrderPlacedReply>>, ApiError> {
    let ApiJson { value: b, raw } = body;
    let context = context(&caller, correlation, key, "POST /api/v1/orders", &raw);
    let request = OrderRequest {
        order_id: Uuid::new_v4(),
        customer_id: caller.user_id.clone(),
        lines: b
            .lines
            .into_iter()
            .map(|l| RequestedLine {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        shipping_address: b.shipping_address,
        payment_method: b.payment_method,
    };
    let (order_id, correlation_id) = (request.order_id, context.correlation_id.clone());
    let outcome = state.commands.place_order(request, context).await?;
    if let Some(saga) = state.local_saga.get() {
        saga.report(order_id, &correlation_id, outcome.events.clone());
    }
    Ok(Answer(written(outcome)?))
}

/// Cancels an order (reason `customer_cancelled`, also when staff cancel):
/// 202 `{"order_id", "position"}`; 409 once shipped.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Admitted<Anyone>,
    Segment(id): Segment,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: OptionalApiJson<Cancel>,
) -> Result<Accepted<Written<OrderReply>>, ApiError> {
    let OptionalApiJson(body) = body;
    let order_id = find_order(&state, &caller, &id).await?;
    let (note, raw) = match body {
        Some(ApiJson { value, raw }) => (value.reason, raw),
        None => (None, Value::Null),
    };
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(ApiError::invalid(
            "reason",
            format!("at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    let route = format!("POST /api/v1/orders/{order_id}/cancel");
    let mut context = context(&caller, correlation, key, &route, &raw);
    if let Some(note) = note {
        context = context.with_note(note);
    }
    let command = OrderCommand::CancelOrder {
        reason: CancelReason::CustomerCancelled,
    };
    run(&state, order_id, command, context).await
}

/// Records that a confirmed order shipped: 202 `{"order_id", "position"}`.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn ship(
    State(state): State<AppState>,
    caller: Admitted<Staff>,
    Segment(id): Segment,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: ApiJson<Ship>,
) -> Result<Accepted<Written<OrderReply>>, ApiError> {
    let order_id = find_order(&state, &caller, &id).await?;
    let route = format!("POST /api/v1/orders/{order_id}/ship");
    let context = context(&caller, correlation, key, &route, &body.raw);
    let command = OrderCommand::ShipOrder {
        carrier: body.value.carrier,
        tracking_number: body.value.tracking_number,
    };
    run(&state, order_id, command, context).await
}

/// Records that a shipped order was delivered: 202 `{"order_id", "position"}`.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn deliver(
    State(state): State<AppState>,
    caller: Admitted<Staff>,
    Segment(id): Segment,
    correlation: CorrelationId,
    key: IdempotencyKey,
    body: OptionalApiJson<Deliver>,
) -> Result<Accepted<Written<OrderReply>>, ApiError> {
    let OptionalApiJson(body) = body;
    let order_id = find_order(&state, &caller, &id).await?;
    let raw = body.map_or(Value::Null, |b| b.raw);
    let route = format!("POST /api/v1/orders/{order_id}/deliver");
    let context = context(&caller, correlation, key, &route, &raw);
    run(&state, order_id, OrderCommand::DeliverOrder, context).await
}

/// The order `id` if it exists and the caller may act on it: 404 for an
/// unknown or malformed id, 403 for a customer's look at someone else's order.
async fn find_order(state: &AppState, caller: &Caller, id: &str) -> Result<Uuid, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order {id}"));
    let order_id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let actor = Actor {
        user_id: &caller.user_id,
        staff: caller.is_staff(),
    };
    state
        .commands
        .authorize_order(order_id, &actor)
        .await
        .map_err(|error| match error {
            CommandError::Domain(DomainError::NotFound(_)) => not_found(),
            other => other.into(),
        })?;
    Ok(order_id)
}

async fn run(
    state: &AppState,
    order_id: Uuid,
    command: OrderCommand,
    context: commands::CommandContext,
) -> Result<Accepted<Written<OrderReply>>, ApiError> {
    let reply = reply(&OrderReply { order_id })?;
    let outcome = state
        .commands
        .orders
        .execute(&order_id.to_string(), command, context, reply)
        .await?;
    Ok(Answer(written(outcome)?))
}
