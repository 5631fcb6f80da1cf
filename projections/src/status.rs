//! Operational state of each projection: running, rebuilding or halted, its
//! dead letters, and what the admin API lists (position, head, lag).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use eventstore::RecordedEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::{schema, Projection, ProjectionError};

/// What a projector does with an event it cannot apply, after recording it
/// as a dead letter (`FULCRUM_PROJECTION_ON_ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop applying events (status `halted`) until an operator acts: the
    /// safe default, since every later event of the stream would be wrong.
    #[default]
    Halt,
    /// Move the stream's position past the event and go on.
    Skip,
}

impl FromStr for OnError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "halt" => Ok(OnError::Halt),
            "skip" => Ok(OnError::Skip),
            other => Err(format!("expected halt or skip, got {other:?}")),
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnError::Halt => "halt",
            OnError::Skip => "skip",
        })
    }
}

/// A projection's status, as `projection_status.status` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Applying events as they arrive.
    Running,
    /// A rebuild is filling fresh tables; queries still answer from the live ones.
    Rebuilding,
    /// Stopped on an event it could not apply (see the dead letters).
    Halted,
}

impl Status {
    /// The stored name: `running`, `rebuilding` or `halted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Rebuilding => "rebuilding",
            Status::Halted => "halted",
        }
    }

    fn parse(s: &str) -> Result<Status, ProjectionError> {
        match s {
            "running" => Ok(Status::Running),
            "rebuilding" => Ok(Status::Rebuilding),
            "halted" => Ok(Status::Halted),
            other => Err(ProjectionError::Database(sqlx::Error::Decode(
                format!("unknown projection status {other:?}").into(),
            ))),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `GET /api/v1/admin/projections`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ProjectionInfo {
    /// The projection's name.
    pub name: String,
    /// The read model's position: the highest global position applied.
    pub position: i64,
    /// The event store's head: the highest global position committed.
    pub head: i64,
    /// Events of the streams this projection consumes that are committed
    /// but not applied yet (exact, counted per stream from versions).
    pub lag: i64,
    /// `running`, `rebuilding` or `halted`.
    pub status: Status,
    /// Events this projection could not apply, ever.
    pub dead_letters: i64,
    /// The last such error, if any.
    pub last_error: Option<String>,
    /// The running rebuild's progress, or the last rebuild's figures; `None`
    /// if the projection was never rebuilt.
    pub rebuild: Option<RebuildInfo>,
}

/// A rebuild's progress, as the process running it last recorded it (about
/// every quarter second), or a finished rebuild's figures.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RebuildInfo {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it swapped the fresh tables in (or failed); `None` while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// Events replayed so far.
    pub events: i64,
    /// Global position of the last event replayed.
    pub position: i64,
    /// The store's head when it started: the bulk phase's target.
    pub head: Option<i64>,
    /// Events replayed per second, from start to the last record.
    pub events_per_second: f64,
    /// Seconds left at that rate, while running and once the rate is known.
    pub eta_seconds: Option<f64>,
    /// Why it failed, if it did (the live tables stayed).
    pub error: Option<String>,
}

/// The stored status of `projection`.
pub async fn status(pool: &PgPool, projection: Projection) -> Result<Status, ProjectionError> {
    status_in(&mut *pool.acquire().await?, projection).await
}

/// The stored status of `projection`, read on `conn` (inside the caller's
/// transaction).
pub async fn status_in(
    conn: &mut sqlx::PgConnection,
    projection: Projection,
) -> Result<Status, ProjectionError> {
    let status: String = sqlx::query_scalar("SELECT status FROM projection_status WHERE name = $1")
        .bind(projection.name())
        .fetch_one(conn)
        .await?;
    Status::parse(&status)
}

/// Sets `projection`'s status (and, when given, its last error).
pub async fn set_status(
    conn: &mut PgConnection,
    projection: Projection,
    status: Status,
    last_error: Option<&str>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE projection_status
            SET status = $2, last_error = COALESCE($3, last_error), updated_at = now()
          WHERE name = $1",
    )
    .bind(projection.name())
    .bind(status.as_str())
    .bind(last_error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records `event` as a dead letter of `projection` with `error`, inside the
/// caller's transaction, and counts it. Recording the same event twice (a
/// redelivery after a halt) changes nothing; answers whether it was new.
pub async fn dead_letter(
    conn: &mut PgConnection,
    projection: Projection,
    event: &RecordedEvent,
    error: &str,
) -> Result<bool, ProjectionError> {
    let inserted = sqlx::query(
        "INSERT INTO dead_letters
             (projection, event_id, stream_id, version, global_position, event_type, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (projection, event_id) DO NOTHING",
    )
    .bind(projection.name())
    .bind(event.event_id)
    .bind(&event.stream_id)
    .bind(crate::position::to_i64(event.version))
    .bind(event.global_position)
    .bind(&event.event_type)
    .bind(error)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE projection_status
            SET dead_letters = dead_letters + $2, last_error = $3, updated_at = now()
          WHERE name = $1",
    )
    .bind(projection.name())
    .bind(i64::from(inserted))
    .bind(error)
    .execute(conn)
    .await?;
    Ok(inserted)
}

/// One recorded dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DeadLetter {
    /// The event that could not be applied.
    pub event_id: uuid::Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: i64,
    /// Its global position.
    pub global_position: i64,
    /// Its type.
    pub event_type: String,
    /// Why it could not be applied.
    pub error: String,
    /// When it was dead-lettered.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The dead letters of `projection`, oldest first.
pub async fn dead_letters(
    pool: &PgPool,
    projection: Projection,
) -> Result<Vec<DeadLetter>, ProjectionError> {
    first_dead_letters(pool, projection, i64::MAX).await
}

/// How many events `projection` dead-lettered, ever.
pub async fn dead_letter_count(
    pool: &PgPool,
    projection: Projection,
) -> Result<i64, ProjectionError> {
    let count = sqlx::query_scalar("SELECT dead_letters FROM projection_status WHERE name = $1")
        .bind(projection.name())
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// The first `limit` dead letters of `projection`, oldest first (the one
/// that halted it comes first).
pub async fn first_dead_letters(
    pool: &PgPool,
    projection: Projection,
    limit: i64,
) -> Result<Vec<DeadLetter>, ProjectionError> {
    let rows = sqlx::query_as(
        "SELECT event_id, stream_id, version, global_position, event_type, error, recorded_at
           FROM dead_letters WHERE projection = $1 ORDER BY id LIMIT $2",
    )
    .bind(projection.name())
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// What `GET /api/v1/admin/projections` lists, for every projection.
pub async fn list(pool: &PgPool) -> Result<Vec<ProjectionInfo>, ProjectionError> {
    let head = eventstore::head_position(pool).await?;
    let mut items = Vec::with_capacity(Projection::ALL.len());
    for projection in Projection::ALL {
        let q = schema::quoted(&projection.live_schema())?;
        let types: Vec<String> = projection
            .stream_types()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        let row = sqlx::query(&format!(
            "SELECT st.status, st.dead_letters, st.last_error,
                    st.rebuild_started_at, st.rebuild_finished_at, st.rebuild_events,
                    st.rebuild_position, st.rebuild_head, st.rebuild_updated_at,
                    st.rebuild_error,
                    (SELECT COALESCE(max(global_position), 0) FROM {q}.stream_positions) AS position,
                    (SELECT COALESCE(sum(s.version - COALESCE(p.version, 0)), 0)::bigint
                       FROM streams s LEFT JOIN {q}.stream_positions p USING (stream_id)
                      WHERE s.stream_type = ANY($2)) AS lag
               FROM projection_status st WHERE st.name = $1"
        ))
        .bind(projection.name())
        .bind(&types)
        .fetch_one(pool)
        .await?;
        let status: String = row.try_get("status")?;
        items.push(ProjectionInfo {
            name: projection.name().to_owned(),
            position: row.try_get("position")?,
            head,
            lag: row.try_get("lag")?,
            status: Status::parse(&status)?,
            dead_letters: row.try_get("dead_letters")?,
            last_error: row.try_get("last_error")?,
            rebuild: rebuild_info(&row)?,
        });
    }
    Ok(items)
}

/// The `rebuild` of a [`list`] row.
fn rebuild_info(row: &sqlx::postgres::PgRow) -> Result<Option<RebuildInfo>, sqlx::Error> {
    let Some(started_at) = row.try_get::<Option<DateTime<Utc>>, _>("rebuild_started_at")? else {
        return Ok(None);
    };
    let finished_at: Option<DateTime<Utc>> = row.try_get("rebuild_finished_at")?;
    let updated_at: Option<DateTime<Utc>> = row.try_get("rebuild_updated_at")?;
    let events: i64 = row
        .try_get::<Option<i64>, _>("rebuild_events")?
        .unwrap_or(0);
    let position: i64 = row
        .try_get::<Option<i64>, _>("rebuild_position")?
        .unwrap_or(0);
    let head: Option<i64> = row.try_get("rebuild_head")?;
    let seconds = updated_at
        .map(|at| (at - started_at).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    let events_per_second = if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    };
    // Positions left over the rate at which positions went by.
    let eta_seconds = match (finished_at, head) {
        (None, Some(head)) if position > 0 && seconds > 0.0 => {
            Some((head - position).max(0) as f64 * seconds / position as f64)
        }
        _ => None,
    };
    Ok(Some(RebuildInfo {
        started_at,
        finished_at,
        events,
        position,
        head,
        events_per_second,
        eta_seconds,
        error: row.try_get("rebuild_error")?,
    }))
}

/// Records that a rebuild of `projection` starts now (its figures reset).
pub(crate) async fn rebuild_started(
    conn: &mut PgConnection,
    projection: Projection,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE projection_status
            SET rebuild_started_at = now(), rebuild_updated_at = now(),
                rebuild_finished_at = NULL, rebuild_events = 0, rebuild_position = 0,
                rebuild_head = NULL, rebuild_error = NULL
          WHERE name = $1",
    )
    .bind(projection.name())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a running rebuild's progress.
pub(crate) async fn rebuild_progressed(
    pool: &PgPool,
    projection: Projection,
    events: u64,
    position: i64,
    head: i64,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE projection_status
            SET rebuild_events = $2, rebuild_position = $3, rebuild_head = $4,
                rebuild_updated_at = now()
          WHERE name = $1 AND rebuild_finished_at IS NULL",
    )
    .bind(projection.name())
    .bind(i64::try_from(events).unwrap_or(i64::MAX))
    .bind(position)
    .bind(head)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the rebuild ended: swapped in with its last figures, or
/// failed with `error`.
pub(crate) async fn rebuild_finished(
    conn: &mut PgConnection,
    projection: Projection,
    events: Option<(u64, i64)>,
    error: Option<&str>,
) -> Result<(), ProjectionError> {
    let (events, position) = events.map_or((None, None), |(n, position)| {
        (Some(i64::try_from(n).unwrap_or(i64::MAX)), Some(position))
    });
    sqlx::query(
        "UPDATE projection_status
            SET rebuild_finished_at = now(), rebuild_updated_at = now(),
                rebuild_events = COALESCE($2, rebuild_events),
                rebuild_position = COALESCE($3, rebuild_position),
                rebuild_error = $4
          WHERE name = $1",
    )
    .bind(projection.name())
    .bind(events)
    .bind(position)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The advisory-lock key of `projection`'s live tables. Projectors take it
/// shared for every transaction that writes them; the rebuild's swap takes
/// it exclusive, so no projector transaction straddles the swap.
pub(crate) fn lock_key(projection: Projection) -> String {
    format!("fulcrum.projection.{}", projection.name())
}

/// Takes `projection`'s lock shared until the caller's transaction ends.
pub(crate) async fn lock_shared(
    conn: &mut PgConnection,
    projection: Projection,
) -> Result<(), ProjectionError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))")
        .bind(lock_key(projection))
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the locks of `projections` shared (in one statement, in key
/// order) until the caller's transaction ends.
pub(crate) async fn lock_shared_all(
    conn: &mut PgConnection,
    projections: &[Projection],
) -> Result<(), ProjectionError> {
    let mut keys: Vec<String> = projections.iter().map(|p| lock_key(*p)).collect();
    keys.sort_unstable();
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended(k, 0))
           FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// Those of `projections` whose status is `running`, read in the caller's
/// transaction.
pub(crate) async fn running_in(
    conn: &mut PgConnection,
    projections: &[Projection],
) -> Result<Vec<Projection>, ProjectionError> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let running: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM projection_status WHERE name = ANY($1) AND status = $2",
    )
    .bind(&names)
    .bind(Status::Running.as_str())
    .fetch_all(conn)
    .await?;
    Ok(projections
        .iter()
        .copied()
        .filter(|p| running.iter().any(|name| name == p.name()))
        .collect())
}

/// Takes `projection`'s lock exclusively until the caller's transaction ends.
pub(crate) async fn lock_exclusive(
    conn: &mut PgConnection,
    projection: Projection,
) -> Result<(), ProjectionError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(projection))
        .execute(conn)
        .await?;
    Ok(())
}
