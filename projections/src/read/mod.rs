//! The queries the HTTP API answers from, one function per answer shape.
//! Every function takes the schema to read (normally the projection's
//! [`crate::Projection::live_schema`]).

mod orders;

pub use orders::{order, orders, parse_cursor, parse_status, OrderFilter, OrderPage, OrderView};

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

use crate::{schema, ProjectionError};

/// A catalogue entry, as `GET /api/v1/products` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ProductView {
    /// The product's SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Current price of one unit in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// Every product of the catalogue in `schema`, sorted by SKU (byte order).
#[tracing::instrument(skip(pool))]
pub async fn products(pool: &PgPool, schema: &str) -> Result<Vec<ProductView>, ProjectionError> {
    let q = schema::quoted(schema)?;
    let rows = sqlx::query_as(&format!(
        "SELECT sku, name, unit_price, currency FROM {q}.products ORDER BY sku COLLATE \"C\""
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A SKU's stock, as `GET /api/v1/inventory/{sku}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct StockView {
    /// The SKU.
    pub sku: String,
    /// Units physically in stock, reserved or not.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
    /// Units that can still be reserved: `on_hand - reserved`.
    pub available: i64,
}

/// The stock of `sku` in `schema`; `None` for a SKU with no inventory events.
#[tracing::instrument(skip(pool))]
pub async fn stock(
    pool: &PgPool,
    schema: &str,
    sku: &str,
) -> Result<Option<StockView>, ProjectionError> {
    let q = schema::quoted(schema)?;
    let row = sqlx::query_as(&format!(
        "SELECT sku, on_hand, reserved, on_hand - reserved AS available
           FROM {q}.inventory WHERE sku = $1"
    ))
    .bind(sku)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// One day's confirmed orders in one currency, as `GET /api/v1/stats/sales` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct SalesDay {
    /// The UTC day (`YYYY-MM-DD`) the orders were confirmed on.
    pub day: NaiveDate,
    /// Orders confirmed that day and not cancelled since.
    pub orders: i64,
    /// Their totals, in minor units of `currency`.
    pub revenue: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// The sales figures in `schema` for the days from `from` to `to`
/// (inclusive; open when `None`), by day then currency. Days on which every
/// confirmed order was cancelled again are left out.
#[tracing::instrument(skip(pool))]
pub async fn sales_days(
    pool: &PgPool,
    schema: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<SalesDay>, ProjectionError> {
    let q = schema::quoted(schema)?;
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT day, orders, revenue, currency FROM {q}.sales_days WHERE orders <> 0"
    ));
    if let Some(from) = from {
        query.push(" AND day >= ").push_bind(from);
    }
    if let Some(to) = to {
        query.push(" AND day <= ").push_bind(to);
    }
    query.push(" ORDER BY day, currency COLLATE \"C\"");
    let rows = query.build_query_as().fetch_all(pool).await?;
    Ok(rows)
}
