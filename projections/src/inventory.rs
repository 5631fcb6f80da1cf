//! The inventory read model (`<schema>.inventory`): stock on hand and
//! reserved per SKU. Fed by `inventory-<sku>` streams.

use std::collections::HashMap;

use domain::InventoryEvent;
use sqlx::{PgConnection, PgPool};

use crate::copy::Copier;
use crate::ProjectionError;

/// One SKU's stock as the read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StockRow {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// The SKU an event is about.
pub(crate) fn sku(event: &InventoryEvent) -> &str {
    match event {
        InventoryEvent::StockReceived { sku, .. }
        | InventoryEvent::StockReserved { sku, .. }
        | InventoryEvent::StockReservationRejected { sku, .. }
        | InventoryEvent::StockReleased { sku, .. }
        | InventoryEvent::StockCommitted { sku, .. } => sku,
    }
}

/// Pure: the row after `event`, given the row before it (`None`: a SKU not
/// seen yet, which starts at zero). Mirrors the aggregate's `evolve`,
/// saturating arithmetic included. Never fails.
pub(crate) fn apply_stock(row: Option<StockRow>, event: &InventoryEvent) -> StockRow {
    let mut row = row.unwrap_or_else(|| StockRow {
        sku: sku(event).to_owned(),
        on_hand: 0,
        reserved: 0,
    });
    match event {
        InventoryEvent::StockReceived { quantity, .. } => {
            row.on_hand = row.on_hand.saturating_add(*quantity);
        }
        InventoryEvent::StockReserved { quantity, .. } => {
            row.reserved = row.reserved.saturating_add(*quantity);
        }
        InventoryEvent::StockReservationRejected { .. } => {}
        InventoryEvent::StockReleased { quantity, .. } => {
            row.reserved = row.reserved.saturating_sub(*quantity);
        }
        InventoryEvent::StockCommitted { quantity, .. } => {
            row.reserved = row.reserved.saturating_sub(*quantity);
            row.on_hand = row.on_hand.saturating_sub(*quantity);
        }
    }
    row
}

/// Live path: the stored row of `sku` in schema `q` (quoted).
pub(crate) async fn load(
    conn: &mut PgConnection,
    q: &str,
    sku: &str,
) -> Result<Option<StockRow>, ProjectionError> {
    let row: Option<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT sku, on_hand, reserved FROM {q}.inventory WHERE sku = $1"
    ))
    .bind(sku)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(sku, on_hand, reserved)| StockRow {
        sku,
        on_hand,
        reserved,
    }))
}

/// Live path: writes `row` (insert or overwrite).
pub(crate) async fn save(
    conn: &mut PgConnection,
    q: &str,
    row: &StockRow,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {q}.inventory (sku, on_hand, reserved) VALUES ($1, $2, $3)
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved"
    ))
    .bind(&row.sku)
    .bind(row.on_hand)
    .bind(row.reserved)
    .execute(conn)
    .await?;
    Ok(())
}

/// Bulk path: every SKU folded in memory.
#[derive(Debug, Default)]
pub(crate) struct InventoryFold {
    rows: HashMap<String, StockRow>,
}

impl InventoryFold {
    /// Folds one event, exactly as [`apply_stock`] on the live path.
    pub(crate) fn fold(&mut self, event: &InventoryEvent) {
        let key = sku(event);
        let row = apply_stock(self.rows.remove(key), event);
        self.rows.insert(row.sku.clone(), row);
    }

    /// Writes every row into the (empty) table of schema `q`.
    pub(crate) async fn write(self, pool: &PgPool, q: &str) -> Result<u64, ProjectionError> {
        let mut copier = Copier::new(pool, &format!("{q}.inventory"), "sku, on_hand, reserved");
        for row in self.rows.into_values() {
            copier.text(&row.sku).int(row.on_hand).int(row.reserved);
            copier.end_row().await?;
        }
        copier.finish().await
    }
}
