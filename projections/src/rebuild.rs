//! Replaying a projection from the event store into fresh tables, then
//! swapping them in atomically while queries keep answering from the old ones.

use std::time::{Duration, Instant};

use eventstore::{Checkpoint, EventStore};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::status::{self, OnError, Status};
use crate::{build_skipping, catch_up_skipping, schema, Projection, ProjectionError, Skipped};

/// Why a rebuild could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of the same projection runs (in this or another process).
    #[error("a rebuild of the {0} projection is already running")]
    Busy(Projection),
    /// Reading, folding or writing failed; the live tables are untouched.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// How far a rebuild has come, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Events read from the store so far.
    pub events: u64,
    /// Global position of the last event read.
    pub position: i64,
    /// The store's head when the rebuild started (the target of the bulk phase).
    pub head: i64,
    /// Time since the rebuild started.
    pub elapsed: Duration,
}

impl Progress {
    /// Events read per second so far.
    pub fn events_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }

    /// Share of the way from position 0 to `head`, in 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.head <= 0 {
            1.0
        } else {
            (self.position as f64 / self.head as f64).clamp(0.0, 1.0)
        }
    }

    /// Estimated time left, from the share done so far.
    pub fn eta(&self) -> Option<Duration> {
        let done = self.fraction();
        if done <= 0.0 {
            return None;
        }
        let total = self.elapsed.as_secs_f64() / done;
        Some(Duration::from_secs_f64(
            (total - self.elapsed.as_secs_f64()).max(0.0),
        ))
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildReport {
    /// Events read in the bulk phase (every stream type; the projection
    /// folds only those it consumes).
    pub events: u64,
    /// Checkpoint of the last event the new tables hold.
    pub checkpoint: Checkpoint,
    /// Wall time from start to swap.
    pub elapsed: Duration,
}

/// A claimed rebuild: holds `projection`'s rebuild lock (a session advisory
/// lock on a connection of its own, released when this value is dropped,
/// even if the process dies) until [`Rebuild::run`] ends.
pub struct Rebuild {
    store: EventStore,
    projection: Projection,
    lock: PgConnection,
    previous: Status,
    on_error: OnError,
}

impl Rebuild {
    /// Claims the rebuild of `projection` and marks it `rebuilding`, or
    /// answers [`RebuildError::Busy`] when a rebuild of it already runs.
    pub async fn start(
        store: &EventStore,
        projection: Projection,
    ) -> Result<Rebuild, RebuildError> {
        // Detached: dropping the connection closes it, which releases the lock.
        let mut lock = store
            .pool()
            .acquire()
            .await
            .map_err(ProjectionError::from)?
            .detach();
        let claimed: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(rebuild_lock_key(projection))
                .fetch_one(&mut lock)
                .await
                .map_err(ProjectionError::from)?;
        if !claimed {
            return Err(RebuildError::Busy(projection));
        }
        let previous = status::status(store.pool(), projection).await?;
        // A `rebuilding` status without the lock is left over from a rebuild
        // that died: this one takes over and restores `running` at the end.
        let previous = match previous {
            Status::Rebuilding => Status::Running,
            other => other,
        };
        status::set_status(&mut lock, projection, Status::Rebuilding, None).await?;
        status::rebuild_started(&mut lock, projection).await?;
        Ok(Rebuild {
            store: store.clone(),
            projection,
            lock,
            previous,
            on_error: OnError::Halt,
        })
    }

    /// What the rebuild does with an event it cannot apply; set it to the
    /// projectors' `FULCRUM_PROJECTION_ON_ERROR`. With [`OnError::Halt`]
    /// (the default) the rebuild fails on it and the live tables stay. With
    /// [`OnError::Skip`] it passes over the events the projectors
    /// dead-lettered and skipped, as they did (see [`Skipped`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The events to pass over: none when halting, else the dead letters
    /// recorded so far.
    async fn skipped(&self) -> Result<Skipped, ProjectionError> {
        match self.on_error {
            OnError::Halt => Ok(Skipped::default()),
            OnError::Skip => Skipped::dead_letters(self.store.pool(), self.projection).await,
        }
    }

    /// The projection being rebuilt.
    pub fn projection(&self) -> Projection {
        self.projection
    }

    /// Builds the fresh tables, catches them up and swaps them in; calls
    /// `progress` after every batch of the bulk phase. On error the fresh
    /// tables are dropped, the live ones are untouched, and the status goes
    /// back to what it was, with the error as `last_error`.
    pub async fn run(
        mut self,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<RebuildReport, RebuildError> {
        let started = Instant::now();
        let projection = self.projection;
        // The progress is recorded in `projection_status` for every
        // process's admin API, at most every `PROGRESS_EVERY`.
        let (latest, watched) = watch::channel(None);
        let recorder = tokio::spawn(record_progress(
            self.store.pool().clone(),
            projection,
            watched,
        ));
        let mut report_progress = |p: Progress| {
            latest.send_replace(Some(p));
            progress(p);
        };
        let outcome = self.replay(started, &mut report_progress).await;
        drop(latest);
        let _ = recorder.await;
        let finished = match outcome {
            Ok(report) => {
                let recorded = status::rebuild_finished(
                    &mut self.lock,
                    projection,
                    Some((report.events, report.checkpoint.position)),
                    None,
                )
                .await;
                let done = match recorded {
                    Ok(()) => {
                        status::set_status(&mut self.lock, projection, Status::Running, None).await
                    }
                    Err(error) => Err(error),
                };
                tracing::info!(%projection, events = report.events, elapsed = ?report.elapsed, "rebuild swapped in");
                done.map(|()| report).map_err(RebuildError::from)
            }
            Err(error) => {
                tracing::error!(%projection, %error, "rebuild failed; the live tables are untouched");
                let message = format!("rebuild failed: {error}");
                let _ = sqlx::query(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    fresh(projection)?
                ))
                .execute(&mut self.lock)
                .await;
                let _ = status::rebuild_finished(&mut self.lock, projection, None, Some(&message))
                    .await;
                let restored =
                    status::set_status(&mut self.lock, projection, self.previous, Some(&message))
                        .await;
                Err(restored
                    .err()
                    .map_or(RebuildError::from(error), RebuildError::from))
            }
        };
        // Release the claim now, not when the server notices the closed
        // connection, so that a next rebuild can start right away.
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(rebuild_lock_key(projection))
            .execute(&mut self.lock)
            .await;
        let _ = self.lock.close().await;
        finished
    }

    async fn replay(
        &mut self,
        started: Instant,
        progress: &mut (impl FnMut(Progress) + Send),
    ) -> Result<RebuildReport, ProjectionError> {
        let projection = self.projection;
        let fresh_schema = format!("{}_rebuild", projection.live_schema());
        let fresh = schema::quoted(&fresh_schema)?;
        let live = schema::quoted(&projection.live_schema())?;
        let retired = schema::quoted(&format!("{}_retired", projection.live_schema()))?;
        let pool = self.store.pool().clone();

        sqlx::query(&format!("DROP SCHEMA IF EXISTS {fresh} CASCADE"))
            .execute(&pool)
            .await?;
        sqlx::query("SELECT fulcrum_create_read_model($1, $2)")
            .bind(projection.name())
            .bind(&fresh_schema)
            .execute(&pool)
            .await?;

        let skipped = self.skipped().await?;
        let head = eventstore::head_position(&pool).await?;
        let mut events = 0;
        let checkpoint = build_skipping(
            &self.store,
            projection,
            &fresh_schema,
            Checkpoint::START,
            &skipped,
            |n, position| {
                events = n;
                progress(Progress {
                    events: n,
                    position,
                    head,
                    elapsed: started.elapsed(),
                });
            },
        )
        .await?;
        // Catch up outside the lock first, so the swap's pause stays short.
        let checkpoint =
            catch_up_skipping(&self.store, projection, &fresh_schema, checkpoint, &skipped).await?;

        // The swap: no projector transaction runs while the lock is held, and
        // every event a projector applied was readable before it (the relay
        // reads the same gap-free order), so the last catch-up below gives
        // the fresh tables everything the live ones have.
        let mut tx = pool.begin().await?;
        status::lock_exclusive(&mut tx, projection).await?;
        // Projectors dead-letter in their own transactions, so what they
        // skipped meanwhile is committed by now.
        let skipped = self.skipped().await?;
        let checkpoint =
            catch_up_skipping(&self.store, projection, &fresh_schema, checkpoint, &skipped).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER SCHEMA {live} RENAME TO {retired}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER SCHEMA {fresh} RENAME TO {live}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RebuildReport {
            events,
            checkpoint,
            elapsed: started.elapsed(),
        })
    }
}

/// How often a rebuild's progress is written to `projection_status`.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Writes the latest progress `watched` until the rebuild drops its sender.
/// A failed write is logged and skipped: progress is for people watching,
/// and the rebuild's outcome does not depend on it.
async fn record_progress(
    pool: sqlx::PgPool,
    projection: Projection,
    mut watched: watch::Receiver<Option<Progress>>,
) {
    while watched.changed().await.is_ok() {
        let latest = *watched.borrow_and_update();
        if let Some(p) = latest {
            if let Err(error) =
                status::rebuild_progressed(&pool, projection, p.events, p.position, p.head).await
            {
                tracing::warn!(%projection, %error, "could not record the rebuild's progress");
            }
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// The quoted name of `projection`'s rebuild schema.
fn fresh(projection: Projection) -> Result<String, ProjectionError> {
    schema::quoted(&format!("{}_rebuild", projection.live_schema()))
}

/// The session advisory-lock key that claims `projection`'s rebuild.
fn rebuild_lock_key(projection: Projection) -> String {
    format!("fulcrum.rebuild.{}", projection.name())
}
