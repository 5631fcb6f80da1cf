//! Durable checkpoints of readers that tail the global order.

use sqlx::{PgExecutor, Row};

use crate::model::Checkpoint;
use crate::StoreError;

/// The saved checkpoint of reader `name`, or [`Checkpoint::START`].
pub async fn load_checkpoint<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
) -> Result<Checkpoint, StoreError> {
    let row = sqlx::query("SELECT tx_id, position FROM checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?;
    match row {
        Some(row) => Ok(Checkpoint {
            tx_id: row.try_get("tx_id")?,
            position: row.try_get("position")?,
        }),
        None => Ok(Checkpoint::START),
    }
}

/// Saves reader `name`'s checkpoint. It never moves backwards: saving an
/// older checkpoint than the stored one changes nothing.
pub async fn save_checkpoint<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    checkpoint: Checkpoint,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, tx_id, position) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE
            SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()
          WHERE (checkpoints.tx_id, checkpoints.position) < (EXCLUDED.tx_id, EXCLUDED.position)",
    )
    .bind(name)
    .bind(checkpoint.tx_id)
    .bind(checkpoint.position)
    .execute(db)
    .await?;
    Ok(())
}
