//! The live path for a whole batch of messages: what a projector applies in
//! one transaction, with a few statements per batch instead of several per
//! event.
//!
//! [`LiveBatch::begin`] locks the positions of every stream the batch
//! touches (`SELECT ... FOR UPDATE`, in stream order, so two appliers never
//! deadlock). Events are then folded in memory with the same row logic as
//! [`crate::apply`] and the bulk path; each row is read at most once (and
//! not at all for a stream the read model has never seen: one stream feeds
//! exactly one row, so no position means no row), and
//! [`LiveBatch::finish`] writes every changed row once and every position
//! in one statement. Nothing is written before `finish`, so an event that
//! does not decode or fit leaves the transaction usable for its dead letter.
//!
//! Concurrent appliers (a consumer-group rebalance, a catch-up) are safe:
//! existing positions are locked before anything is read, and a stream new
//! to the read model that another applier claimed first makes `finish`
//! fail with [`ProjectionError::Contended`], after which the caller rolls
//! back and applies the batch again (its events are then duplicates).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use eventstore::RecordedEvent;
use sqlx::PgConnection;

use crate::event::{decode, inconsistent, At, Decoded};
use crate::position::{classify, to_i64, to_u64, Step};
use crate::{catalog, inventory, orders, sales, schema, Applied, Projection, ProjectionError};

/// One read-model row, keyed by the stream that feeds it.
#[derive(Clone)]
enum Row {
    Order(orders::OrderRow),
    Stock(inventory::StockRow),
    Product(catalog::ProductRow),
    Sale(sales::SaleRow),
}

/// A stream's position within the batch.
struct Position {
    /// The version stored when the batch began (0: the stream is new).
    stored: u64,
    /// The version applied so far, and its global position.
    version: u64,
    global_position: i64,
}

/// A batch being applied to one projection's tables inside one transaction
/// (see the [module documentation](self)): [`begin`](Self::begin), then
/// [`apply`](Self::apply) or [`skip`](Self::skip) each event in order, then
/// [`finish`](Self::finish) and commit. Dropping it before `finish` writes
/// nothing (roll the transaction back, or leave it to what else it holds).
pub struct LiveBatch {
    projection: Projection,
    q: String,
    positions: HashMap<String, Position>,
    /// Rows read or changed so far; `true` when changed. Ordered, like
    /// the days, so that concurrent appliers write them in the same order.
    rows: BTreeMap<String, (Option<Row>, bool)>,
    /// The sales per (day, currency) this batch changes.
    days: BTreeMap<(NaiveDate, String), Day>,
}

/// One day's sales in a batch, as (orders, revenue).
#[derive(Debug, Clone, Copy)]
struct Day {
    /// The batch's change, written as an increment (other streams may count
    /// on the same day concurrently).
    change: (i64, i64),
    /// The stored figures plus `change`, to refuse a change that would not
    /// fit in the table.
    total: (i64, i64),
}

impl LiveBatch {
    /// Starts a batch over the tables in `schema`, locking the stored
    /// positions of `stream_ids` (those `projection` consumes).
    pub async fn begin<'a>(
        conn: &mut PgConnection,
        projection: Projection,
        schema: &str,
        stream_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ProjectionError> {
        let q = schema::quoted(schema)?;
        let mut ids: Vec<&str> = stream_ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let stored: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT stream_id, version, global_position FROM {q}.stream_positions
              WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE"
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let positions = stored
            .into_iter()
            .map(|(stream_id, version, global_position)| {
                let version = to_u64(version);
                let position = Position {
                    stored: version,
                    version,
                    global_position,
                };
                (stream_id, position)
            })
            .collect();
        Ok(LiveBatch {
            projection,
            q,
            positions,
            rows: BTreeMap::new(),
            days: BTreeMap::new(),
        })
    }

    /// Applies `event` in memory, with [`crate::apply`]'s answers. When the
    /// read model lacks earlier versions of the stream (the broker lost
    /// them, or the group started past them), they are read from the event
    /// store and applied first: the store, not Kafka, is the truth.
    pub async fn apply(
        &mut self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<Applied, ProjectionError> {
        if !self.projection.consumes(&event.stream_type) {
            return Ok(Applied::Ignored);
        }
        match classify(self.version(&event.stream_id), event.version) {
            Step::Duplicate => return Ok(Applied::Duplicate),
            Step::Apply => {}
            Step::Gap { expected } => {
                let missing = event.version - expected;
                // Through the batch's own connection: waiting for a second
                // one from the pool while this transaction holds its locks
                // could stall every projector once the pool runs dry.
                let earlier = eventstore::read_stream(
                    &mut *conn,
                    &event.stream_id,
                    expected,
                    i64::try_from(missing).unwrap_or(i64::MAX),
                )
                .await?;
                tracing::warn!(stream_id = %event.stream_id, expected, version = event.version, "filling a gap from the event store");
                for earlier in &earlier {
                    self.apply_next(conn, earlier).await?;
                }
            }
        }
        self.apply_next(conn, event).await?;
        Ok(Applied::Applied)
    }

    /// Moves the stream's position past `event` without changing any row
    /// (for an event dead-lettered and skipped); [`crate::skip`]'s answers.
    pub fn skip(&mut self, event: &RecordedEvent) -> Applied {
        if !self.projection.consumes(&event.stream_type) {
            return Applied::Ignored;
        }
        match classify(self.version(&event.stream_id), event.version) {
            Step::Duplicate => Applied::Duplicate,
            Step::Gap { expected } => Applied::Gap { expected },
            Step::Apply => {
                self.advance(event);
                Applied::Applied
            }
        }
    }

    /// Writes every changed row, the sales per day and the positions.
    pub async fn finish(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let q = &self.q;
        // Positions first: a stream new to the read model that a concurrent
        // applier is inserting makes this insert wait for it, and then find
        // it claimed (`Contended`) before any row is written. Rows written
        // first would race on the rows' own unique keys instead (the orders'
        // `seq`), which `ON CONFLICT` on one key does not cover.
        let mut moved: [(Vec<&str>, Vec<i64>, Vec<i64>); 2] = Default::default();
        // In one order for every applier, so that two claiming the same new
        // streams wait on each other instead of deadlocking.
        let mut positions: Vec<(&String, &Position)> = self.positions.iter().collect();
        positions.sort_unstable_by_key(|(stream_id, _)| *stream_id);
        for (stream_id, p) in positions {
            if p.version != p.stored {
                let (ids, versions, globals) = &mut moved[usize::from(p.stored == 0)];
                ids.push(stream_id);
                versions.push(to_i64(p.version));
                globals.push(p.global_position);
            }
        }
        let [(ids, versions, globals), (new_ids, new_versions, new_globals)] = moved;
        if !ids.is_empty() {
            sqlx::query(&format!(
                "UPDATE {q}.stream_positions p SET version = u.version, global_position = u.global_position
                   FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS u(stream_id, version, global_position)
                  WHERE p.stream_id = u.stream_id"
            ))
            .bind(&ids)
            .bind(&versions)
            .bind(&globals)
            .execute(&mut *conn)
            .await?;
        }
        if !new_ids.is_empty() {
            let inserted = sqlx::query(&format!(
                "INSERT INTO {q}.stream_positions (stream_id, version, global_position)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])
                 ON CONFLICT (stream_id) DO NOTHING"
            ))
            .bind(&new_ids)
            .bind(&new_versions)
            .bind(&new_globals)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() != new_ids.len() as u64 {
                return Err(ProjectionError::Contended);
            }
        }
        for (row, changed) in self.rows.values() {
            match (row, changed) {
                (Some(Row::Order(row)), true) => orders::save(conn, q, row).await?,
                (Some(Row::Stock(row)), true) => inventory::save(conn, q, row).await?,
                (Some(Row::Product(row)), true) => catalog::save(conn, q, row).await?,
                (Some(Row::Sale(row)), true) => sales::save(conn, q, row, None).await?,
                _ => {}
            }
        }
        for ((day, currency), Day { change, .. }) in &self.days {
            let delta = sales::DayDelta {
                day: *day,
                currency: currency.clone(),
                orders: change.0,
                revenue: change.1,
            };
            sales::add_to_day(conn, q, &delta).await?;
        }
        Ok(())
    }

    /// The version of `stream_id` applied so far (0: none).
    fn version(&self, stream_id: &str) -> u64 {
        self.positions.get(stream_id).map_or(0, |p| p.version)
    }

    fn advance(&mut self, event: &RecordedEvent) {
        let position = self
            .positions
            .entry(event.stream_id.clone())
            .or_insert(Position {
                stored: 0,
                version: 0,
                global_position: 0,
            });
        position.version = event.version;
        position.global_position = event.global_position;
    }

    /// Applies `event`, the next version of its stream.
    async fn apply_next(
        &mut self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if classify(self.version(&event.stream_id), event.version) != Step::Apply {
            return Err(ProjectionError::Gap {
                stream_id: event.stream_id.clone(),
                expected: self.version(&event.stream_id) + 1,
                version: event.version,
            });
        }
        let decoded = decode(event, event.data.clone())?;
        let row = self.row(conn, event, &decoded).await?;
        let at = At::of(event);
        let (row, changed, day) = self
            .plan(row, decoded, &at)
            .map_err(|message| inconsistent(event, message))?;
        if let Some(day) = day {
            self.add_to_day(conn, &day)
                .await?
                .map_err(|message| inconsistent(event, message))?;
        }
        let entry = self
            .rows
            .entry(event.stream_id.clone())
            .or_insert((None, false));
        *entry = (row, entry.1 || changed);
        self.advance(event);
        Ok(())
    }

    /// Adds `change` to its day in this batch, or says why not (see
    /// [`sales::DayDelta::added_to`]); the day's stored figures are read
    /// the first time the batch touches it.
    async fn add_to_day(
        &mut self,
        conn: &mut PgConnection,
        change: &sales::DayDelta,
    ) -> Result<Result<(), String>, ProjectionError> {
        let key = (change.day, change.currency.clone());
        let day = match self.days.get(&key) {
            Some(day) => *day,
            None => {
                let stored: Option<(i64, i64)> = sqlx::query_as(&format!(
                    "SELECT orders, revenue FROM {}.sales_days WHERE day = $1 AND currency = $2",
                    self.q
                ))
                .bind(key.0)
                .bind(&key.1)
                .fetch_optional(&mut *conn)
                .await?;
                Day {
                    change: (0, 0),
                    total: stored.unwrap_or_default(),
                }
            }
        };
        match (change.added_to(day.change), change.added_to(day.total)) {
            (Ok(change), Ok(total)) => {
                self.days.insert(key, Day { change, total });
                Ok(Ok(()))
            }
            (Err(why), _) | (_, Err(why)) => Ok(Err(why)),
        }
    }

    /// The row `event`'s stream feeds, as it stands in this batch.
    async fn row(
        &mut self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        decoded: &Decoded,
    ) -> Result<Option<Row>, ProjectionError> {
        if let Some((row, _)) = self.rows.get(&event.stream_id) {
            return Ok(row.clone());
        }
        let stored = self.positions.get(&event.stream_id).map_or(0, |p| p.stored);
        if stored == 0 {
            return Ok(None);
        }
        let q = &self.q;
        Ok(match (self.projection, decoded) {
            (Projection::Orders, Decoded::Order(e)) => orders::load(conn, q, orders::order_id(e))
                .await?
                .map(Row::Order),
            (Projection::Sales, Decoded::Order(e)) => sales::load(conn, q, orders::order_id(e))
                .await?
                .map(Row::Sale),
            (Projection::Inventory, Decoded::Stock(e)) => {
                inventory::load(conn, q, inventory::sku(e))
                    .await?
                    .map(Row::Stock)
            }
            (Projection::Catalog, Decoded::Product(e)) => catalog::load(conn, q, catalog::sku(e))
                .await?
                .map(Row::Product),
            _ => None,
        })
    }

    /// Pure: the row after the event, whether it changed, and the change
    /// to a day's sales it makes.
    fn plan(
        &self,
        row: Option<Row>,
        decoded: Decoded,
        at: &At,
    ) -> Result<(Option<Row>, bool, Option<sales::DayDelta>), String> {
        let mismatch = || {
            format!(
                "the {} projection does not read this event's stream",
                self.projection
            )
        };
        match (self.projection, decoded, row) {
            (Projection::Orders, Decoded::Order(e), row @ (None | Some(Row::Order(_)))) => {
                let before = row.and_then(|r| match r {
                    Row::Order(r) => Some(r),
                    _ => None,
                });
                let after = orders::apply_order(before, &e, at)?;
                Ok((Some(Row::Order(after)), true, None))
            }
            (Projection::Sales, Decoded::Order(e), row @ (None | Some(Row::Sale(_)))) => {
                let before = row.and_then(|r| match r {
                    Row::Sale(r) => Some(r),
                    _ => None,
                });
                let (after, delta) = sales::apply_sale(before.clone(), &e, at)?;
                let changed = before.as_ref() != Some(&after);
                Ok((Some(Row::Sale(after)), changed, delta))
            }
            (Projection::Inventory, Decoded::Stock(e), row @ (None | Some(Row::Stock(_)))) => {
                let before = row.and_then(|r| match r {
                    Row::Stock(r) => Some(r),
                    _ => None,
                });
                Ok((
                    Some(Row::Stock(inventory::apply_stock(before, &e))),
                    true,
                    None,
                ))
            }
            (Projection::Catalog, Decoded::Product(e), row @ (None | Some(Row::Product(_)))) => {
                let before = row.and_then(|r| match r {
                    Row::Product(r) => Some(r),
                    _ => None,
                });
                Ok((
                    Some(Row::Product(catalog::apply_product(before, &e)?)),
                    true,
                    None,
                ))
            }
            _ => Err(mismatch()),
        }
    }
}
