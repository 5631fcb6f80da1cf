//! The sales read model: confirmed orders and revenue per UTC day and
//! currency (`<schema>.sales_days`), with what each order contributed
//! (`<schema>.sales_orders`) so a cancellation can take it back. Fed by
//! `order-<uuid>` streams.
//!
//! An order counts on the UTC day of its `OrderConfirmed`; an
//! `OrderCancelled` after confirmation subtracts it from that day again,
//! one before confirmation changes nothing.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use domain::OrderEvent;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::copy::Copier;
use crate::event::At;
use crate::orders::order_id;
use crate::ProjectionError;

/// What one order contributes to the sales figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaleRow {
    pub order_id: Uuid,
    pub total: i64,
    pub currency: String,
    /// The UTC day it was confirmed on, once confirmed.
    pub confirmed_day: Option<NaiveDate>,
    /// Whether it currently counts on `confirmed_day`.
    pub counted: bool,
}

/// A change to one day's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DayDelta {
    pub day: NaiveDate,
    pub currency: String,
    pub orders: i64,
    pub revenue: i64,
}

impl DayDelta {
    /// `figures` (orders, revenue) with this change added, or why they
    /// would not fit in the table's bigints. Both paths refuse such an
    /// event instead of wrapping or failing in the database.
    pub(crate) fn added_to(&self, figures: (i64, i64)) -> Result<(i64, i64), String> {
        figures
            .0
            .checked_add(self.orders)
            .zip(figures.1.checked_add(self.revenue))
            .ok_or_else(|| {
                format!(
                    "the sales of {} in {} would overflow",
                    self.day, self.currency
                )
            })
    }
}

/// Pure: the row after `event` and the change to a day's figures, given the
/// row before it. `OrderPlaced` needs no row; every other event needs one.
pub(crate) fn apply_sale(
    row: Option<SaleRow>,
    event: &OrderEvent,
    at: &At,
) -> Result<(SaleRow, Option<DayDelta>), String> {
    let mut row = match (row, event) {
        (
            None,
            OrderEvent::OrderPlaced {
                order_id,
                total,
                currency,
                ..
            },
        ) => {
            let row = SaleRow {
                order_id: *order_id,
                total: *total,
                currency: currency.clone(),
                confirmed_day: None,
                counted: false,
            };
            return Ok((row, None));
        }
        (Some(row), OrderEvent::OrderPlaced { .. }) => {
            return Err(format!("order {} was already placed", row.order_id))
        }
        (None, other) => return Err(format!("order {} was never placed", order_id(other))),
        (Some(row), _) => row,
    };
    let delta = match event {
        OrderEvent::OrderConfirmed { .. } if !row.counted => {
            let day = at.recorded_at.date_naive();
            row.confirmed_day = Some(day);
            row.counted = true;
            Some(row.delta(day, 1))
        }
        OrderEvent::OrderCancelled { .. } if row.counted => {
            row.counted = false;
            row.confirmed_day.map(|day| row.delta(day, -1))
        }
        _ => None,
    };
    Ok((row, delta))
}

impl SaleRow {
    fn delta(&self, day: NaiveDate, sign: i64) -> DayDelta {
        DayDelta {
            day,
            currency: self.currency.clone(),
            orders: sign,
            revenue: sign.saturating_mul(self.total),
        }
    }
}

/// Live path: the stored row of `order_id` in schema `q` (quoted).
pub(crate) async fn load(
    conn: &mut PgConnection,
    q: &str,
    order_id: Uuid,
) -> Result<Option<SaleRow>, ProjectionError> {
    let row: Option<(Uuid, i64, String, Option<NaiveDate>, bool)> = sqlx::query_as(&format!(
        "SELECT order_id, total, currency, confirmed_day, counted
           FROM {q}.sales_orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(order_id, total, currency, confirmed_day, counted)| SaleRow {
            order_id,
            total,
            currency,
            confirmed_day,
            counted,
        },
    ))
}

/// Live path: writes `row` (insert or overwrite) and adds `delta` to its day.
pub(crate) async fn save(
    conn: &mut PgConnection,
    q: &str,
    row: &SaleRow,
    delta: Option<&DayDelta>,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {q}.sales_orders (order_id, total, currency, confirmed_day, counted)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO UPDATE SET total = EXCLUDED.total,
            currency = EXCLUDED.currency, confirmed_day = EXCLUDED.confirmed_day,
            counted = EXCLUDED.counted"
    ))
    .bind(row.order_id)
    .bind(row.total)
    .bind(&row.currency)
    .bind(row.confirmed_day)
    .bind(row.counted)
    .execute(&mut *conn)
    .await?;
    if let Some(delta) = delta {
        add_to_day(conn, q, delta).await?;
    }
    Ok(())
}

/// Adds `delta` to its day's figures.
pub(crate) async fn add_to_day(
    conn: &mut PgConnection,
    q: &str,
    delta: &DayDelta,
) -> Result<(), ProjectionError> {
    // An atomic increment: orders of other streams may count on the same
    // day concurrently.
    sqlx::query(&format!(
        "INSERT INTO {q}.sales_days (day, currency, orders, revenue) VALUES ($1, $2, $3, $4)
         ON CONFLICT (day, currency) DO UPDATE SET
            orders = sales_days.orders + EXCLUDED.orders,
            revenue = sales_days.revenue + EXCLUDED.revenue"
    ))
    .bind(delta.day)
    .bind(&delta.currency)
    .bind(delta.orders)
    .bind(delta.revenue)
    .execute(conn)
    .await?;
    Ok(())
}

/// Bulk path: every order's contribution and every day's figures, in memory.
#[derive(Debug, Default)]
pub(crate) struct SalesFold {
    rows: HashMap<Uuid, SaleRow>,
    days: BTreeMap<(NaiveDate, String), (i64, i64)>,
}

impl SalesFold {
    /// Folds one event, exactly as [`apply_sale`] on the live path.
    pub(crate) fn fold(&mut self, event: &OrderEvent, at: &At) -> Result<(), String> {
        let id = order_id(event);
        let (row, delta) = apply_sale(self.rows.remove(&id), event, at)?;
        self.rows.insert(id, row);
        if let Some(d) = delta {
            let figures = self.days.entry((d.day, d.currency.clone())).or_default();
            *figures = d.added_to(*figures)?;
        }
        Ok(())
    }

    /// Writes every row into the (empty) tables of schema `q`. A day whose
    /// orders were all cancelled again keeps a row of zeros, as on the live path.
    pub(crate) async fn write(self, pool: &PgPool, q: &str) -> Result<u64, ProjectionError> {
        let table = format!("{q}.sales_orders");
        let columns = "order_id, total, currency, confirmed_day, counted";
        let mut copier = Copier::new(pool, &table, columns);
        for row in self.rows.into_values() {
            copier
                .uuid(row.order_id)
                .int(row.total)
                .text(&row.currency)
                .date(row.confirmed_day)
                .boolean(row.counted);
            copier.end_row().await?;
        }
        let mut written = copier.finish().await?;
        let table = format!("{q}.sales_days");
        let mut copier = Copier::new(pool, &table, "day, currency, orders, revenue");
        for ((day, currency), (orders, revenue)) in self.days {
            copier
                .date(Some(day))
                .text(&currency)
                .int(orders)
                .int(revenue);
            copier.end_row().await?;
        }
        written += copier.finish().await?;
        Ok(written)
    }
}
