//! Snapshots: the folded state of a stream at a version, so that loading a
//! long stream reads only the events after it.

use serde_json::Value;
use sqlx::{PgExecutor, Row};

use crate::append::{to_i64, to_u64, validate_stream_id};
use crate::model::Snapshot;
use crate::StoreError;

/// Saves `state` as the snapshot of `stream_id` at `version`. An older
/// snapshot never replaces a newer one.
#[tracing::instrument(skip(db, state))]
pub async fn save_snapshot<'e>(
    db: impl PgExecutor<'e>,
    stream_id: &str,
    version: u64,
    schema_version: u32,
    state: &Value,
) -> Result<(), StoreError> {
    validate_stream_id(stream_id)?;
    if version == 0 {
        return Err(StoreError::Corrupt(
            "a snapshot needs a version >= 1".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO snapshots (stream_id, version, schema_version, state) VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream_id) DO UPDATE
            SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
                state = EXCLUDED.state, taken_at = now()
          WHERE snapshots.version < EXCLUDED.version",
    )
    .bind(stream_id)
    .bind(to_i64(version)?)
    .bind(schema_version as i32)
    .bind(state)
    .execute(db)
    .await?;
    Ok(())
}

/// The latest snapshot of `stream_id`, if any.
#[tracing::instrument(skip(db))]
pub async fn load_snapshot<'e>(
    db: impl PgExecutor<'e>,
    stream_id: &str,
) -> Result<Option<Snapshot>, StoreError> {
    let row =
        sqlx::query("SELECT version, schema_version, state FROM snapshots WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_optional(db)
            .await?;
    row.map(|row| {
        let schema_version: i32 = row.try_get("schema_version")?;
        Ok(Snapshot {
            stream_id: stream_id.to_owned(),
            version: to_u64(row.try_get("version")?)?,
            schema_version: u32::try_from(schema_version)
                .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
            state: row.try_get("state")?,
        })
    })
    .transpose()
}
