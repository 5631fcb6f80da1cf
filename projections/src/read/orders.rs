//! Reading orders: one by id, and pages of them newest first.

use chrono::{DateTime, Utc};
use domain::{OrderLine, OrderStatus};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{schema, ProjectionError};

/// An order, as `GET /api/v1/orders/{id}` answers it and lists contain it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct OrderView {
    /// The order.
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// `placed`, `confirmed`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    /// What was ordered, at what price.
    #[sqlx(json)]
    pub lines: Vec<OrderLine>,
    /// Sum over the lines, in minor units of `currency`.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Why it was cancelled; null unless cancelled.
    pub cancel_reason: Option<String>,
    /// Version of the order's stream the view reflects.
    pub version: i64,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When the last event the view reflects was recorded.
    pub updated_at: DateTime<Utc>,
    /// The paging key (global position of `OrderPlaced`); not part of the answer.
    #[serde(skip)]
    pub seq: i64,
}

const COLUMNS: &str = "order_id, customer_id, status, lines, total, currency, cancel_reason, \
                       version, placed_at, updated_at, seq";

/// The order `order_id` in `schema`, if the read model has it.
#[tracing::instrument(skip(pool))]
pub async fn order(
    pool: &PgPool,
    schema: &str,
    order_id: Uuid,
) -> Result<Option<OrderView>, ProjectionError> {
    let q = schema::quoted(schema)?;
    let row = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {q}.orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Which orders a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this customer's orders (a customer's own list); all when `None`.
    pub customer_id: Option<String>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders placed before this paging key: the previous page's
    /// `next_cursor`, read with [`parse_cursor`].
    pub before: Option<i64>,
    /// Page size; the caller bounds it (the API allows 1 to 500).
    pub limit: i64,
}

/// One page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OrderPage {
    /// The orders, newest (latest placed) first.
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The order status whose wire name is `name` (`placed`, `confirmed`,
/// `shipped`, `delivered`, `cancelled`; exact, lowercase), if any.
pub fn parse_status(name: &str) -> Option<OrderStatus> {
    crate::orders::parse_status(name)
}

/// The paging key in a `next_cursor`; `None` when the text is not a cursor.
pub fn parse_cursor(cursor: &str) -> Option<i64> {
    cursor
        .strip_prefix('o')
        .and_then(|seq| seq.parse::<i64>().ok())
        .filter(|seq| *seq > 0)
}

fn cursor_of(seq: i64) -> String {
    format!("o{seq}")
}

/// A page of at most `filter.limit` orders in `schema` matching `filter`,
/// newest first; `next_cursor` is set when more follow.
#[tracing::instrument(skip(pool))]
pub async fn orders(
    pool: &PgPool,
    schema: &str,
    filter: &OrderFilter,
) -> Result<OrderPage, ProjectionError> {
    let q = schema::quoted(schema)?;
    let limit = filter.limit.max(1);
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM {q}.orders WHERE true"));
    if let Some(customer_id) = &filter.customer_id {
        query.push(" AND customer_id = ").push_bind(customer_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = filter.before {
        query.push(" AND seq < ").push_bind(before);
    }
    query
        .push(" ORDER BY seq DESC LIMIT ")
        .push_bind(limit.saturating_add(1));
    let mut items: Vec<OrderView> = query.build_query_as().fetch_all(pool).await?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|o| cursor_of(o.seq)))
        .flatten();
    Ok(OrderPage { items, next_cursor })
}
