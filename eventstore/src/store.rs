//! [`EventStore`]: a pool plus the wake-up signal that lets tailing readers
//! see new commits quickly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::append::{append_in, lock_stream, validate, Attempt, OneAppend, Rows, StreamHead};
use crate::group::{GroupWriter, Heads};
use crate::idempotency::{self, Claim};
use crate::metrics::StoreMetrics;
use crate::model::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent};
use crate::{read, StoreError};
use sqlx::PgPool;

/// The Postgres channel on which appenders announce commits to other processes.
pub const NOTIFY_CHANNEL: &str = "fulcrum_events";

/// How often at most one process sends a `NOTIFY` after commits. Every
/// `NOTIFY` takes a cluster-wide lock through its commit, so appends never
/// notify inside their own transaction; a side task sends one per window.
const NOTIFY_WINDOW: Duration = Duration::from_millis(2);

/// How many stream heads (version and last hash) a store remembers.
const HEAD_CACHE_CAPACITY: u64 = 100_000;

/// One stream's part of [`EventStore::append_many_in`].
#[derive(Debug, Clone, Copy)]
pub struct StreamAppend<'a> {
    /// The stream.
    pub stream_id: &'a str,
    /// Its expected version.
    pub expected: ExpectedVersion,
    /// Its events (at least one).
    pub events: &'a [NewEvent],
}

/// The event store: cheap to clone, shares one pool.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    commits: Arc<watch::Sender<u64>>,
    /// This store's name on [`NOTIFY_CHANNEL`]: the payload of its
    /// announcements, which its own subscriptions pass over (its commit
    /// signal woke them already).
    pub(crate) origin: Arc<str>,
    /// The last head this process saw per stream: the guess that lets an
    /// append take a single round trip. A wrong guess costs one more.
    pub(crate) heads: Heads,
    /// Appends from this process, grouped into shared commits.
    group: GroupWriter,
    /// Appends by outcome, their latency, events appended, group sizes.
    metrics: StoreMetrics,
}

impl EventStore {
    /// An event store over `pool`. Must be called inside a tokio runtime: it
    /// spawns the task that announces this process's commits to other
    /// processes (it ends when the last clone is dropped).
    pub fn new(pool: PgPool) -> Self {
        let (commits, rx) = watch::channel(0u64);
        let origin: Arc<str> = Uuid::new_v4().to_string().into();
        tokio::spawn(announce_commits(pool.clone(), rx, origin.clone()));
        let commits = Arc::new(commits);
        let heads = moka::sync::Cache::new(HEAD_CACHE_CAPACITY);
        let metrics = StoreMetrics::default();
        let group = GroupWriter::start(
            pool.clone(),
            heads.clone(),
            commits.clone(),
            metrics.clone(),
        );
        EventStore {
            pool,
            commits,
            origin,
            heads,
            group,
            metrics,
        }
    }

    /// The appends' series (register them to expose them at `/metrics`).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Appends waiting for a group to form (taken by the writer once the
    /// group before them committed).
    pub fn queued_appends(&self) -> usize {
        self.group.queued()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A receiver that changes whenever this process commits an append.
    pub fn commit_signal(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Tells tailing readers (here and, through `NOTIFY`, elsewhere) that
    /// new events were committed. Call after committing a transaction that
    /// used [`append_in`]; [`EventStore::append`] does it itself.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Appends `events` to `stream_id`, checking `expected` (see
    /// [`append_in`] for the guarantees).
    ///
    /// Group commit: appends made at the same time in this process share
    /// one statement, one transaction and one commit (see
    /// `eventstore/src/group.rs`). Each keeps its own expected-version check
    /// and its own answer, a conflict or a bad event in one never fails
    /// another, and none answers before its group committed. The events
    /// are hashed onto the head this process last saw; when that guess is
    /// stale (another process appended), the append continues in a
    /// transaction that holds the stream's lock, so it cannot miss twice.
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Value,
    ) -> Result<AppendResult, StoreError> {
        let started = std::time::Instant::now();
        let result = self
            .append_once(stream_id, expected, events, metadata)
            .await;
        self.metrics
            .append(result.is_ok(), started.elapsed(), events.len());
        result
    }

    async fn append_once(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Value,
    ) -> Result<AppendResult, StoreError> {
        let append = OneAppend::validated(stream_id, expected, events, metadata)?;
        let guess = self.guess(stream_id, expected);
        let rows = Rows::build(stream_id, guess, events, metadata, append.recorded_at);
        let base = match self
            .group
            .submit(stream_id, expected, rows, append.bytes)
            .await
        {
            Ok(Attempt::Appended(result, _)) => return Ok(result),
            Ok(Attempt::Stale(head)) => head,
            Err(error) => return Err(error),
        };
        // The head moved under this process (another process appended):
        // continue in a transaction that holds the stream's lock.
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let (result, head) =
            self.forgetting_on_error(stream_id, append.onto(&mut tx, base).await)?;
        tx.commit().await?;
        self.heads.insert(stream_id.to_owned(), head);
        self.committed();
        Ok(result)
    }

    /// [`append_in`] inside the caller's transaction on `conn`, hashing onto
    /// the head this process last saw: usually one round trip instead of
    /// two. A stale guess only costs another round trip, under the lock.
    /// The caller commits, then calls [`EventStore::committed`].
    pub async fn append_in(
        &self,
        conn: &mut sqlx::PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Value,
    ) -> Result<AppendResult, StoreError> {
        let append = OneAppend::validated(stream_id, expected, events, metadata)?;
        let guess = self.guess(stream_id, expected);
        let (result, head) = self.forgetting_on_error(stream_id, append.onto(conn, guess).await)?;
        // Remembered before the caller commits: should it roll back, the
        // next guess is stale and costs one more trip.
        self.heads.insert(stream_id.to_owned(), head);
        Ok(result)
    }

    /// The head an append to `stream_id` expecting `expected` hashes onto
    /// first: the empty stream's when it expects none, else the head this
    /// process last saw (a stale guess costs one more round trip).
    pub(crate) fn guess(&self, stream_id: &str, expected: ExpectedVersion) -> StreamHead {
        match expected {
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => StreamHead::EMPTY,
            _ => self.heads.get(stream_id).unwrap_or(StreamHead::EMPTY),
        }
    }

    /// `appended` as it is, forgetting the head this process knows of
    /// `stream_id` when the append failed (the next append reads it).
    fn forgetting_on_error<T>(
        &self,
        stream_id: &str,
        appended: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if appended.is_err() {
            self.heads.invalidate(stream_id);
        }
        appended
    }

    /// Like [`EventStore::append`], under an idempotency key: a retry with the
    /// same key and the same stream, expectation and event content (event
    /// ids and metadata aside) returns the first result with `replayed` set
    /// and writes nothing; the same key with other content is
    /// [`StoreError::IdempotencyKeyReused`].
    pub async fn append_idempotent(
        &self,
        key: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Value,
    ) -> Result<AppendResult, StoreError> {
        validate(stream_id, events, metadata)?;
        let request = json!({
            "stream_id": stream_id,
            "expected": expected,
            "events": events.iter().map(|e| json!([e.event_type, e.schema_version, e.data])).collect::<Vec<_>>(),
        });
        let mut tx = self.pool.begin().await?;
        // Lock before the claim writes, so the transaction id follows the lock.
        lock_stream(&mut tx, stream_id).await?;
        match idempotency::claim(&mut tx, key, &idempotency::request_hash(&request)).await? {
            Claim::Replay(outcome) => {
                tx.rollback().await?;
                let mut result: AppendResult = serde_json::from_value(outcome)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency outcome: {e}")))?;
                result.replayed = true;
                Ok(result)
            }
            Claim::New => {
                let result = append_in(&mut tx, stream_id, expected, events, metadata).await?;
                let outcome =
                    serde_json::to_value(result).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                idempotency::record(&mut tx, key, &outcome).await?;
                tx.commit().await?;
                self.committed();
                Ok(result)
            }
        }
    }

    /// See [`read::read_stream`].
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(&self.pool, stream_id, from_version, limit).await
    }

    /// Every event of `stream_id` (up to version `until` inclusive, when
    /// given), in version order, read a page at a time.
    pub async fn read_stream_to_end(
        &self,
        stream_id: &str,
        until: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const PAGE: i64 = 1000;
        let mut events = Vec::new();
        loop {
            let page = self
                .read_stream(stream_id, events.len() as u64 + 1, PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            events.extend(page);
            if !full || until.is_some_and(|v| events.len() as u64 >= v) {
                break;
            }
        }
        if let Some(v) = until {
            events.truncate(usize::try_from(v).unwrap_or(usize::MAX));
        }
        Ok(events)
    }

    /// See [`read::read_all`].
    pub async fn read_all(
        &self,
        after: crate::Checkpoint,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_all(&self.pool, after, limit).await
    }
}

/// Sends one `NOTIFY` (with payload `origin`) per window in which this
/// store committed appends.
async fn announce_commits(pool: PgPool, mut commits: watch::Receiver<u64>, origin: Arc<str>) {
    while commits.changed().await.is_ok() {
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(&*origin)
            .execute(&pool)
            .await
        {
            // Readers in other processes fall back to polling.
            tracing::debug!(%error, "could not announce commits");
        }
        tokio::time::sleep(NOTIFY_WINDOW).await;
    }
}
