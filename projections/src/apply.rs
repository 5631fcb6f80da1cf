//! The live path: one event at a time inside the caller's transaction, and
//! catching a read model up from the store with it.

use eventstore::{Checkpoint, EventStore, RecordedEvent};
use sqlx::PgConnection;

use crate::build::Skipped;
use crate::event::{decode, inconsistent, At, Decoded};
use crate::position::{advance, classify, stored_version, Step};
use crate::{catalog, inventory, orders, sales, schema, Projection, ProjectionError};

/// Events applied per transaction by [`catch_up`].
const CATCH_UP_BATCH: i64 = 500;

/// What [`apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The read-model rows changed and the stream's position advanced.
    Applied,
    /// This version of the stream was applied before; nothing changed.
    Duplicate,
    /// Earlier versions of the stream are missing; nothing changed. The
    /// relay re-sends from the stream's last delivered version.
    Gap {
        /// The version the read model needs next.
        expected: u64,
    },
    /// The projection does not consume this stream type; nothing changed.
    Ignored,
}

/// What the row logic decided, to be written once the position is claimed.
enum Change {
    Order(orders::OrderRow),
    Stock(inventory::StockRow),
    Product(catalog::ProductRow),
    Sale(sales::SaleRow, Option<sales::DayDelta>),
    None,
}

/// Applies one event inside the caller's transaction to the tables in
/// `schema`, idempotently by (stream id, version):
///
/// - stream type not consumed by `projection` -> [`Applied::Ignored`];
/// - version at or below the stream's stored position -> [`Applied::Duplicate`];
/// - version beyond the stored position + 1 -> [`Applied::Gap`];
/// - otherwise the read-model rows change and the stream's position advances
///   -> [`Applied::Applied`].
///
/// In the first three cases nothing is written. An event that cannot be
/// decoded or does not fit the rows is [`ProjectionError::Decode`] or
/// [`ProjectionError::Inconsistent`], detected before anything is written,
/// so the caller's transaction stays usable (to record a dead letter, or
/// [`skip`] the event). After [`ProjectionError::Database`] roll back.
///
/// Concurrent appliers of the same stream are safe: the position update
/// takes the stream's row lock, and the loser answers `Duplicate` (or `Gap`).
#[tracing::instrument(skip(conn, event), fields(stream_id = %event.stream_id, version = event.version))]
pub async fn apply(
    conn: &mut PgConnection,
    projection: Projection,
    schema: &str,
    event: &RecordedEvent,
) -> Result<Applied, ProjectionError> {
    let q = schema::quoted(schema)?;
    if !projection.consumes(&event.stream_type) {
        return Ok(Applied::Ignored);
    }
    let decoded = decode(event, event.data.clone())?;
    let stored = stored_version(conn, &q, &event.stream_id).await?;
    if let Some(answer) = settled(classify(stored, event.version)) {
        return Ok(answer);
    }
    let change = match plan(conn, projection, &q, event, decoded).await {
        // A concurrent applier committed this version between our two reads:
        // the rows no longer fit because the event is already in them.
        Err(ProjectionError::Inconsistent { .. })
            if stored_version(conn, &q, &event.stream_id).await? != stored =>
        {
            return recheck(conn, &q, event).await
        }
        change => change?,
    };
    if !advance(conn, &q, event).await? {
        return recheck(conn, &q, event).await;
    }
    match change {
        Change::Order(row) => orders::save(conn, &q, &row).await?,
        Change::Stock(row) => inventory::save(conn, &q, &row).await?,
        Change::Product(row) => catalog::save(conn, &q, &row).await?,
        Change::Sale(row, delta) => sales::save(conn, &q, &row, delta.as_ref()).await?,
        Change::None => {}
    }
    Ok(Applied::Applied)
}

/// Advances the stream's position to `event` without changing any
/// read-model row: for an event the caller gave up on (dead-lettered) and
/// wants the stream to move past. Same answers as [`apply`], with
/// [`Applied::Applied`] meaning "position advanced".
#[tracing::instrument(skip(conn, event), fields(stream_id = %event.stream_id, version = event.version))]
pub async fn skip(
    conn: &mut PgConnection,
    projection: Projection,
    schema: &str,
    event: &RecordedEvent,
) -> Result<Applied, ProjectionError> {
    let q = schema::quoted(schema)?;
    if !projection.consumes(&event.stream_type) {
        return Ok(Applied::Ignored);
    }
    let stored = stored_version(conn, &q, &event.stream_id).await?;
    if let Some(answer) = settled(classify(stored, event.version)) {
        return Ok(answer);
    }
    if !advance(conn, &q, event).await? {
        return recheck(conn, &q, event).await;
    }
    Ok(Applied::Applied)
}

/// The answer for a step that changes nothing.
fn settled(step: Step) -> Option<Applied> {
    match step {
        Step::Apply => None,
        Step::Duplicate => Some(Applied::Duplicate),
        Step::Gap { expected } => Some(Applied::Gap { expected }),
    }
}

/// A concurrent applier moved the stream's position first: what that means
/// for `event` now.
async fn recheck(
    conn: &mut PgConnection,
    q: &str,
    event: &RecordedEvent,
) -> Result<Applied, ProjectionError> {
    let stored = stored_version(conn, q, &event.stream_id).await?;
    settled(classify(stored, event.version)).ok_or_else(|| {
        inconsistent(
            event,
            "the stream's position did not advance although it was due".into(),
        )
    })
}

/// Loads the rows `event` touches and computes them after it.
async fn plan(
    conn: &mut PgConnection,
    projection: Projection,
    q: &str,
    event: &RecordedEvent,
    decoded: Decoded,
) -> Result<Change, ProjectionError> {
    let at = At::of(event);
    let change = match (projection, decoded) {
        (Projection::Orders, Decoded::Order(e)) => {
            let row = orders::load(conn, q, orders::order_id(&e)).await?;
            orders::apply_order(row, &e, &at).map(Change::Order)
        }
        (Projection::Sales, Decoded::Order(e)) => {
            let before = sales::load(conn, q, orders::order_id(&e)).await?;
            sales::apply_sale(before.clone(), &e, &at).map(|(row, delta)| {
                if delta.is_none() && before.as_ref() == Some(&row) {
                    Change::None
                } else {
                    Change::Sale(row, delta)
                }
            })
        }
        (Projection::Inventory, Decoded::Stock(e)) => {
            let row = inventory::load(conn, q, inventory::sku(&e)).await?;
            Ok(Change::Stock(inventory::apply_stock(row, &e)))
        }
        (Projection::Catalog, Decoded::Product(e)) => {
            let row = catalog::load(conn, q, catalog::sku(&e)).await?;
            catalog::apply_product(row, &e).map(Change::Product)
        }
        (projection, _) => Err(format!(
            "the {projection} projection does not read {} streams",
            event.stream_type
        )),
    };
    change.map_err(|message| inconsistent(event, message))
}

/// Applies, with [`apply`], every event after `from` in gap-free global
/// order, a few hundred per transaction, until none is left; returns the
/// checkpoint of the last event read (`from` if there was none).
///
/// Events already applied are skipped (duplicates), so catching up a read
/// model that is partly current is safe. A gap (`from` lies past events the
/// read model lacks) is [`ProjectionError::Gap`]; a decode or row error ends
/// the catch-up with that error and rolls back the batch it occurred in.
pub async fn catch_up(
    store: &EventStore,
    projection: Projection,
    schema: &str,
    from: Checkpoint,
) -> Result<Checkpoint, ProjectionError> {
    catch_up_skipping(store, projection, schema, from, &Skipped::default()).await
}

/// Like [`catch_up`], passing over the events in `skipped` with [`skip`]
/// as the live projection did (see [`Skipped`]).
#[tracing::instrument(skip(store, skipped))]
pub async fn catch_up_skipping(
    store: &EventStore,
    projection: Projection,
    schema: &str,
    from: Checkpoint,
    skipped: &Skipped,
) -> Result<Checkpoint, ProjectionError> {
    schema::quoted(schema)?;
    let mut checkpoint = from;
    loop {
        let batch = store.read_all(checkpoint, CATCH_UP_BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(checkpoint);
        };
        let next = last.checkpoint();
        let relevant: Vec<&RecordedEvent> = batch
            .iter()
            .filter(|e| projection.consumes(&e.stream_type))
            .collect();
        if !relevant.is_empty() {
            let mut tx = store.pool().begin().await?;
            for event in relevant {
                let applied = if skipped.contains(event) {
                    skip(&mut tx, projection, schema, event).await?
                } else {
                    apply(&mut tx, projection, schema, event).await?
                };
                match applied {
                    Applied::Gap { expected } => {
                        return Err(ProjectionError::Gap {
                            stream_id: event.stream_id.clone(),
                            expected,
                            version: event.version,
                        })
                    }
                    Applied::Applied | Applied::Duplicate | Applied::Ignored => {}
                }
            }
            tx.commit().await?;
        }
        checkpoint = next;
    }
}
