//! The bulk path for rebuilds: read the store in gap-free global order, fold
//! in memory with the same row logic as the live path, write set-based.

use std::collections::{HashMap, HashSet};

use eventstore::{Checkpoint, EventStore, RecordedEvent};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::catalog::CatalogFold;
use crate::event::{decode, inconsistent, At, Decoded};
use crate::inventory::InventoryFold;
use crate::orders::OrdersFold;
use crate::position::{classify, Step};
use crate::sales::SalesFold;
use crate::{copy::Copier, schema, Projection, ProjectionError};

/// Events per read of the store.
const READ_BATCH: i64 = 10_000;

/// Batches read ahead while the previous ones are folded.
const READ_AHEAD: usize = 4;

/// Fills the EMPTY tables of `schema` (made by `fulcrum_create_read_model`)
/// with `projection`'s read model of every event after `from`, and answers
/// the checkpoint of the last event read (`from` if there was none).
///
/// Reads the store in gap-free global order in large batches (reading ahead
/// on a separate task), folds the events in memory with the same row logic
/// as [`crate::apply`], then writes every table with `COPY`, in chunks that
/// commit on their own (a rebuild schema is not read by anyone until it is
/// swapped in; an interrupted build leaves it partly filled: drop and
/// recreate it). The rows equal those [`crate::apply`] makes from the same
/// events one by one.
///
/// `progress(events_read, last_position)` is called after every batch read.
/// A gap, or an event that does not decode or fit, ends the build with the
/// same error [`crate::catch_up`] would give.
pub async fn build(
    store: &EventStore,
    projection: Projection,
    schema: &str,
    from: Checkpoint,
    progress: impl FnMut(u64, i64),
) -> Result<Checkpoint, ProjectionError> {
    build_skipping(
        store,
        projection,
        schema,
        from,
        &Skipped::default(),
        progress,
    )
    .await
}

/// Like [`build`], passing over the events in `skipped` as the live
/// projection did (see [`Skipped`]).
#[tracing::instrument(skip(store, skipped, progress))]
pub async fn build_skipping(
    store: &EventStore,
    projection: Projection,
    schema: &str,
    from: Checkpoint,
    skipped: &Skipped,
    mut progress: impl FnMut(u64, i64),
) -> Result<Checkpoint, ProjectionError> {
    let q = schema::quoted(schema)?;
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_ahead(store.clone(), projection, from, tx));
    let _abort = AbortOnDrop(reader);
    let mut fold = Fold::new(projection, skipped);
    let mut checkpoint = from;
    let mut read = 0u64;
    while let Some(batch) = rx.recv().await {
        let batch: Vec<RecordedEvent> = batch?;
        for mut event in batch {
            checkpoint = event.checkpoint();
            fold.event(&mut event)?;
        }
        read = read.saturating_add(fold.take_counted());
        progress(read, checkpoint.position);
    }
    fold.write(store, &q).await?;
    Ok(checkpoint)
}

/// Reads batches after `from` until one comes back empty.
async fn read_ahead(
    store: EventStore,
    projection: Projection,
    mut from: Checkpoint,
    tx: mpsc::Sender<Result<Vec<RecordedEvent>, ProjectionError>>,
) {
    let types: Vec<String> = projection
        .stream_types()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    loop {
        let batch = read_batch(store.pool(), &types, from, READ_BATCH).await;
        let batch = match batch {
            Ok(batch) if batch.is_empty() => return,
            Ok(batch) => batch,
            Err(error) => {
                let _ = tx.send(Err(error)).await;
                return;
            }
        };
        if let Some(last) = batch.last() {
            from = last.checkpoint();
        }
        if tx.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

/// Up to `limit` events after `after` in the store's gap-free global order:
/// the same events in the same order as [`eventstore::read_all`] answers
/// (keep the WHERE and ORDER BY in step with it), with only what the fold
/// uses. Events of stream types not in `types` come without their payload
/// (`data` is null): the fold only counts them and moves past them.
/// Decoding the payload, metadata and hash of every event was most of the
/// bulk phase's time.
async fn read_batch(
    pool: &PgPool,
    types: &[String],
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT position, tx_id, stream_id, stream_type, version, event_type, schema_version,
                CASE WHEN stream_type = ANY($4) THEN data END, recorded_at
           FROM events
          WHERE (tx_id, position) > ($1, $2)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
          ORDER BY tx_id, position
          LIMIT $3",
    )
    .bind(after.tx_id)
    .bind(after.position)
    .bind(limit)
    .bind(types)
    .fetch_all(pool)
    .await?;
    rows.iter().map(lean_event).collect()
}

/// A row of [`read_batch`] as a [`RecordedEvent`] (no id, metadata or hash).
fn lean_event(row: &PgRow) -> Result<RecordedEvent, ProjectionError> {
    let corrupt = |what: String| ProjectionError::Database(sqlx::Error::Decode(what.into()));
    let position: i64 = row.try_get(0)?;
    let version: i64 = row.try_get(4)?;
    let schema_version: i32 = row.try_get(6)?;
    let data: Option<Value> = row.try_get(7)?;
    Ok(RecordedEvent {
        event_id: Uuid::nil(),
        stream_id: row.try_get(2)?,
        stream_type: row.try_get(3)?,
        version: u64::try_from(version)
            .map_err(|_| corrupt(format!("event {position}: version {version}")))?,
        global_position: position,
        event_type: row.try_get(5)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt(format!("event {position}: schema version {schema_version}")))?,
        data: data.unwrap_or(Value::Null),
        metadata: Value::Null,
        recorded_at: row.try_get(8)?,
        hash: String::new(),
        tx_id: row.try_get(1)?,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Events a projection running with `FULCRUM_PROJECTION_ON_ERROR=skip`
/// dead-lettered and passed over, by (stream id, version): a rebuild in that
/// mode passes over them too, so that it ends where the live tables are
/// instead of failing on each of them. An event that fails and is not
/// among them still ends the rebuild with its error (the live projector
/// has not reached it yet; it dead-letters it when it does).
#[derive(Debug, Clone, Default)]
pub struct Skipped(HashMap<String, HashSet<u64>>);

impl Skipped {
    /// The events dead-lettered for `projection`.
    pub async fn dead_letters(
        pool: &PgPool,
        projection: Projection,
    ) -> Result<Skipped, ProjectionError> {
        let rows = crate::status::dead_letters(pool, projection).await?;
        let mut skipped: HashMap<String, HashSet<u64>> = HashMap::new();
        for dead in rows {
            // A version that is not a stream version names no event to pass over.
            if let Ok(version) = u64::try_from(dead.version) {
                skipped.entry(dead.stream_id).or_default().insert(version);
            }
        }
        Ok(Skipped(skipped))
    }

    /// Whether `event` is one to pass over.
    pub fn contains(&self, event: &RecordedEvent) -> bool {
        self.0
            .get(&event.stream_id)
            .is_some_and(|versions| versions.contains(&event.version))
    }
}

/// The in-memory fold of one projection, with every stream's position.
struct Fold<'a> {
    projection: Projection,
    model: Model,
    positions: HashMap<String, (u64, i64)>,
    counted: u64,
    skipped: &'a Skipped,
}

enum Model {
    Orders(OrdersFold),
    Inventory(InventoryFold),
    Catalog(CatalogFold),
    Sales(SalesFold),
}

impl<'a> Fold<'a> {
    fn new(projection: Projection, skipped: &'a Skipped) -> Self {
        let model = match projection {
            Projection::Orders => Model::Orders(OrdersFold::default()),
            Projection::Inventory => Model::Inventory(InventoryFold::default()),
            Projection::Catalog => Model::Catalog(CatalogFold::default()),
            Projection::Sales => Model::Sales(SalesFold::default()),
        };
        Fold {
            projection,
            model,
            positions: HashMap::new(),
            counted: 0,
            skipped,
        }
    }

    /// Events seen since the last call.
    fn take_counted(&mut self) -> u64 {
        std::mem::take(&mut self.counted)
    }

    /// Folds one event as [`crate::apply`] followed by `catch_up`'s rules
    /// would: ignored, duplicate, gap (an error) or applied.
    fn event(&mut self, event: &mut RecordedEvent) -> Result<(), ProjectionError> {
        self.counted += 1;
        if !self.projection.consumes(&event.stream_type) {
            return Ok(());
        }
        if self.skipped.contains(event) {
            let stored = self.positions.get(&event.stream_id).map_or(0, |p| p.0);
            if classify(stored, event.version) == Step::Apply {
                self.advance(event);
            }
            return Ok(());
        }
        let data = std::mem::take(&mut event.data);
        let decoded = decode(event, data)?;
        let stored = self.positions.get(&event.stream_id).map_or(0, |p| p.0);
        match classify(stored, event.version) {
            Step::Duplicate => return Ok(()),
            Step::Gap { expected } => {
                return Err(ProjectionError::Gap {
                    stream_id: event.stream_id.clone(),
                    expected,
                    version: event.version,
                })
            }
            Step::Apply => {}
        }
        let at = At::of(event);
        let folded = match (&mut self.model, decoded) {
            (Model::Orders(m), Decoded::Order(e)) => m.fold(&e, &at),
            (Model::Sales(m), Decoded::Order(e)) => m.fold(&e, &at),
            (Model::Inventory(m), Decoded::Stock(e)) => {
                m.fold(&e);
                Ok(())
            }
            (Model::Catalog(m), Decoded::Product(e)) => m.fold(&e),
            _ => Err(format!(
                "the {} projection does not read {} streams",
                self.projection, event.stream_type
            )),
        };
        folded.map_err(|message| inconsistent(event, message))?;
        self.advance(event);
        Ok(())
    }

    /// Moves `event`'s stream to its version.
    fn advance(&mut self, event: &RecordedEvent) {
        let position = (event.version, event.global_position);
        match self.positions.get_mut(&event.stream_id) {
            Some(p) => *p = position,
            None => {
                self.positions.insert(event.stream_id.clone(), position);
            }
        }
    }

    /// Writes the read model's tables and the stream positions, at the
    /// same time on two connections (the server's work, index upkeep
    /// mostly, is most of it).
    async fn write(self, store: &EventStore, q: &str) -> Result<(), ProjectionError> {
        let pool = store.pool();
        let Fold {
            model, positions, ..
        } = self;
        let rows = async {
            match model {
                Model::Orders(m) => m.write(pool, q).await,
                Model::Inventory(m) => m.write(pool, q).await,
                Model::Catalog(m) => m.write(pool, q).await,
                Model::Sales(m) => m.write(pool, q).await,
            }
        };
        let (rows, streams) = tokio::try_join!(rows, write_positions(pool, q, positions))?;
        tracing::info!(rows, streams, "read model written");
        Ok(())
    }
}

/// Writes every stream's position into the (empty) `stream_positions` of `q`.
async fn write_positions(
    pool: &PgPool,
    q: &str,
    positions: HashMap<String, (u64, i64)>,
) -> Result<u64, ProjectionError> {
    let table = format!("{q}.stream_positions");
    let mut copier = Copier::new(pool, &table, "stream_id, version, global_position");
    for (stream_id, (version, position)) in positions {
        copier
            .text(&stream_id)
            .int(crate::position::to_i64(version))
            .int(position);
        copier.end_row().await?;
    }
    copier.finish().await
}
