//! The orders read model (`<schema>.orders`): one row per order with its
//! status, lines, money and timestamps. Fed by `order-<uuid>` streams.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::{CancelReason, OrderEvent, OrderLine, OrderStatus};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::copy::Copier;
use crate::event::At;
use crate::position::to_i64;
use crate::ProjectionError;

/// One order as the read model keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub currency: String,
    pub cancel_reason: Option<CancelReason>,
    /// Version of the order stream the row reflects.
    pub version: i64,
    /// `recorded_at` of `OrderPlaced`.
    pub placed_at: DateTime<Utc>,
    /// `recorded_at` of the last applied event.
    pub updated_at: DateTime<Utc>,
    /// Global position of `OrderPlaced`: the paging key.
    pub seq: i64,
}

/// The order an event is about.
pub(crate) fn order_id(event: &OrderEvent) -> Uuid {
    match event {
        OrderEvent::OrderPlaced { order_id, .. }
        | OrderEvent::OrderConfirmed { order_id }
        | OrderEvent::OrderShipped { order_id, .. }
        | OrderEvent::OrderDelivered { order_id }
        | OrderEvent::OrderCancelled { order_id, .. } => *order_id,
    }
}

/// Pure: the row after `event`, given the row before it (`None` for an
/// order not seen yet). `OrderPlaced` needs no row; every other event needs
/// one. Used by the live and the bulk path alike.
pub(crate) fn apply_order(
    row: Option<OrderRow>,
    event: &OrderEvent,
    at: &At,
) -> Result<OrderRow, String> {
    let mut row = match (row, event) {
        (None, placed @ OrderEvent::OrderPlaced { .. }) => return Ok(placed_row(placed, at)),
        (Some(row), OrderEvent::OrderPlaced { .. }) => {
            return Err(format!("order {} was already placed", row.order_id))
        }
        (None, other) => return Err(format!("order {} was never placed", order_id(other))),
        (Some(row), _) => row,
    };
    match event {
        OrderEvent::OrderPlaced { .. } => {}
        OrderEvent::OrderConfirmed { .. } => row.status = OrderStatus::Confirmed,
        OrderEvent::OrderShipped { .. } => row.status = OrderStatus::Shipped,
        OrderEvent::OrderDelivered { .. } => row.status = OrderStatus::Delivered,
        OrderEvent::OrderCancelled { reason, .. } => {
            row.status = OrderStatus::Cancelled;
            row.cancel_reason = Some(*reason);
        }
    }
    row.version = to_i64(at.version);
    row.updated_at = at.recorded_at;
    Ok(row)
}

fn placed_row(event: &OrderEvent, at: &At) -> OrderRow {
    let (order_id, customer_id, lines, total, currency) = match event {
        OrderEvent::OrderPlaced {
            order_id,
            customer_id,
            lines,
            total,
            currency,
            ..
        } => (*order_id, customer_id, lines, *total, currency),
        other => (
            order_id(other),
            &String::new(),
            &Vec::new(),
            0,
            &String::new(),
        ),
    };
    OrderRow {
        order_id,
        customer_id: customer_id.clone(),
        status: OrderStatus::Placed,
        lines: lines.clone(),
        total,
        currency: currency.clone(),
        cancel_reason: None,
        version: to_i64(at.version),
        placed_at: at.recorded_at,
        updated_at: at.recorded_at,
        seq: at.position,
    }
}

/// The status called `name` (the wire name), if any.
pub(crate) fn parse_status(name: &str) -> Option<OrderStatus> {
    use OrderStatus::*;
    [Placed, Confirmed, Shipped, Delivered, Cancelled]
        .into_iter()
        .find(|s| s.as_str() == name)
}

fn parse_reason(name: &str) -> Option<CancelReason> {
    use CancelReason::*;
    [
        OutOfStock,
        PaymentDeclined,
        PaymentTimeout,
        ShipmentRejected,
        CustomerCancelled,
    ]
    .into_iter()
    .find(|r| r.as_str() == name)
}

const COLUMNS: &str = "order_id, customer_id, status, lines, total, currency, cancel_reason, \
                       version, placed_at, updated_at, seq";

type Stored = (
    Uuid,
    String,
    String,
    Json<Vec<OrderLine>>,
    i64,
    String,
    Option<String>,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
);

/// Live path: the stored row of `order_id` in schema `q` (quoted).
pub(crate) async fn load(
    conn: &mut PgConnection,
    q: &str,
    order_id: Uuid,
) -> Result<Option<OrderRow>, ProjectionError> {
    let stored: Option<Stored> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {q}.orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    let Some((
        id,
        customer_id,
        status,
        lines,
        total,
        currency,
        reason,
        version,
        placed,
        updated,
        seq,
    )) = stored
    else {
        return Ok(None);
    };
    let corrupt = |what: String| {
        ProjectionError::Database(sqlx::Error::Decode(
            format!("{q}.orders row {id}: {what}").into(),
        ))
    };
    Ok(Some(OrderRow {
        order_id: id,
        customer_id,
        status: parse_status(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        lines: lines.0,
        total,
        currency,
        cancel_reason: match reason {
            Some(r) => Some(parse_reason(&r).ok_or_else(|| corrupt(format!("reason {r:?}")))?),
            None => None,
        },
        version,
        placed_at: placed,
        updated_at: updated,
        seq,
    }))
}

/// Live path: writes `row` (insert or overwrite).
pub(crate) async fn save(
    conn: &mut PgConnection,
    q: &str,
    row: &OrderRow,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {q}.orders ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (order_id) DO UPDATE SET
            customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, lines = EXCLUDED.lines,
            total = EXCLUDED.total, currency = EXCLUDED.currency,
            cancel_reason = EXCLUDED.cancel_reason, version = EXCLUDED.version,
            placed_at = EXCLUDED.placed_at, updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq"
    ))
    .bind(row.order_id)
    .bind(&row.customer_id)
    .bind(row.status.as_str())
    .bind(Json(&row.lines))
    .bind(row.total)
    .bind(&row.currency)
    .bind(row.cancel_reason.map(CancelReason::as_str))
    .bind(row.version)
    .bind(row.placed_at)
    .bind(row.updated_at)
    .bind(row.seq)
    .execute(conn)
    .await?;
    Ok(())
}

/// Bulk path: every order folded in memory.
#[derive(Debug, Default)]
pub(crate) struct OrdersFold {
    rows: HashMap<Uuid, OrderRow>,
}

impl OrdersFold {
    /// Folds one event, exactly as [`apply_order`] on the live path.
    pub(crate) fn fold(&mut self, event: &OrderEvent, at: &At) -> Result<(), String> {
        let id = order_id(event);
        let row = apply_order(self.rows.remove(&id), event, at)?;
        self.rows.insert(id, row);
        Ok(())
    }

    /// Writes every row into the (empty) table of schema `q`.
    pub(crate) async fn write(self, pool: &PgPool, q: &str) -> Result<u64, ProjectionError> {
        let mut copier = Copier::new(pool, &format!("{q}.orders"), COLUMNS);
        for row in self.rows.into_values() {
            let lines =
                serde_json::to_string(&row.lines).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            copier
                .uuid(row.order_id)
                .text(&row.customer_id)
                .text(row.status.as_str())
                .text(&lines)
                .int(row.total)
                .text(&row.currency)
                .opt_text(row.cancel_reason.map(CancelReason::as_str))
                .int(row.version)
                .timestamp(row.placed_at)
                .timestamp(row.updated_at)
                .int(row.seq);
            copier.end_row().await?;
        }
        copier.finish().await
    }
}
