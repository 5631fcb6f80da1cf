//! The catalogue read model (`<schema>.products`): name and current unit
//! price per SKU. Fed by `product-<sku>` streams.

use std::collections::HashMap;

use domain::ProductEvent;
use sqlx::{PgConnection, PgPool};

use crate::copy::Copier;
use crate::ProjectionError;

/// One product as the read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductRow {
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub currency: String,
}

/// The SKU an event is about.
pub(crate) fn sku(event: &ProductEvent) -> &str {
    match event {
        ProductEvent::ProductDefined { sku, .. }
        | ProductEvent::ProductPriceChanged { sku, .. } => sku,
    }
}

/// Pure: the row after `event`, given the row before it. A price change
/// needs a defined product; a definition needs none.
pub(crate) fn apply_product(
    row: Option<ProductRow>,
    event: &ProductEvent,
) -> Result<ProductRow, String> {
    match (row, event) {
        (
            None,
            ProductEvent::ProductDefined {
                sku,
                name,
                unit_price,
                currency,
            },
        ) => Ok(ProductRow {
            sku: sku.clone(),
            name: name.clone(),
            unit_price: *unit_price,
            currency: currency.clone(),
        }),
        (Some(row), ProductEvent::ProductDefined { .. }) => {
            Err(format!("product {} is already defined", row.sku))
        }
        (Some(row), ProductEvent::ProductPriceChanged { unit_price, .. }) => Ok(ProductRow {
            unit_price: *unit_price,
            ..row
        }),
        (None, ProductEvent::ProductPriceChanged { sku, .. }) => {
            Err(format!("product {sku} was never defined"))
        }
    }
}

/// Live path: the stored row of `sku` in schema `q` (quoted).
pub(crate) async fn load(
    conn: &mut PgConnection,
    q: &str,
    sku: &str,
) -> Result<Option<ProductRow>, ProjectionError> {
    let row: Option<(String, String, i64, String)> = sqlx::query_as(&format!(
        "SELECT sku, name, unit_price, currency FROM {q}.products WHERE sku = $1"
    ))
    .bind(sku)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(sku, name, unit_price, currency)| ProductRow {
        sku,
        name,
        unit_price,
        currency,
    }))
}

/// Live path: writes `row` (insert or overwrite).
pub(crate) async fn save(
    conn: &mut PgConnection,
    q: &str,
    row: &ProductRow,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {q}.products (sku, name, unit_price, currency) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name,
            unit_price = EXCLUDED.unit_price, currency = EXCLUDED.currency"
    ))
    .bind(&row.sku)
    .bind(&row.name)
    .bind(row.unit_price)
    .bind(&row.currency)
    .execute(conn)
    .await?;
    Ok(())
}

/// Bulk path: every product folded in memory.
#[derive(Debug, Default)]
pub(crate) struct CatalogFold {
    rows: HashMap<String, ProductRow>,
}

impl CatalogFold {
    /// Folds one event, exactly as [`apply_product`] on the live path.
    pub(crate) fn fold(&mut self, event: &ProductEvent) -> Result<(), String> {
        let key = sku(event);
        let row = apply_product(self.rows.remove(key), event)?;
        self.rows.insert(row.sku.clone(), row);
        Ok(())
    }

    /// Writes every row into the (empty) table of schema `q`.
    pub(crate) async fn write(self, pool: &PgPool, q: &str) -> Result<u64, ProjectionError> {
        let table = format!("{q}.products");
        let mut copier = Copier::new(pool, &table, "sku, name, unit_price, currency");
        for row in self.rows.into_values() {
            copier
                .text(&row.sku)
                .text(&row.name)
                .int(row.unit_price)
                .text(&row.currency);
            copier.end_row().await?;
        }
        copier.finish().await
    }
}
