//! Group commit: concurrent appends from one process share one statement,
//! one transaction and one commit (`fulcrum_append_group`, see its
//! migration).
//!
//! A writer task (one of [`GROUP_PIPELINES`]) takes every append waiting
//! when it is free, up to [`MAX_GROUP_EVENTS`] events and
//! [`MAX_GROUP_BYTES`] bytes, and sends them as one autocommit call. While
//! that call runs and commits, the next appends queue and form the next
//! group: there is no timer, and an append that finds a writer idle goes at
//! once, alone. Each append gets its own answer, and only after its group
//! committed. Every group takes its streams' locks in one global order, so
//! groups in flight together never deadlock; a group that shares a stream
//! with one in flight waits for it to finish, so that it hashes onto the
//! head that one left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, watch};

use crate::append::{map_unique_violation, Attempt, Rows, StreamHead};
use crate::flat::Flat;
use crate::metrics::StoreMetrics;
use crate::model::ExpectedVersion;
use crate::StoreError;

/// The most events one group carries (a larger append goes alone).
pub const MAX_GROUP_EVENTS: usize = 2_000;

/// The most bytes of event data one group carries (a larger append goes alone).
pub const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// How many groups may be in flight at once: while one commits, the next
/// is formed and written.
pub const GROUP_PIPELINES: usize = 3;

/// How long a writer keeps its connection while no append comes.
const HOLD_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The per-stream head cache the store and the writer share.
pub(crate) type Heads = moka::sync::Cache<String, StreamHead>;

/// One append waiting for its group.
struct Request {
    stream_id: String,
    expected: ExpectedVersion,
    rows: Rows,
    bytes: usize,
    reply: oneshot::Sender<Result<Attempt, StoreError>>,
}

/// The handle appends are submitted through; the writer task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::UnboundedSender<Request>,
    queued: Arc<AtomicUsize>,
}

impl GroupWriter {
    /// Starts the writer tasks on the current tokio runtime.
    pub(crate) fn start(
        pool: PgPool,
        heads: Heads,
        commits: Arc<watch::Sender<u64>>,
        metrics: StoreMetrics,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(Writer {
            pool,
            heads,
            commits,
            queued: queued.clone(),
            queue: tokio::sync::Mutex::new(Queue { rx, carry: None }),
            in_flight: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            next_group: AtomicU64::new(0),
            metrics,
        });
        for _ in 0..GROUP_PIPELINES {
            tokio::spawn(writer.clone().run());
        }
        GroupWriter { queue, queued }
    }

    /// Appends `rows` to `stream_id` in the next group; answers once that
    /// group committed (or failed). `Attempt::Stale` when the rows were
    /// hashed onto a head that is not the stream's: nothing was written.
    pub(crate) async fn submit(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        rows: Rows,
        bytes: usize,
    ) -> Result<Attempt, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            stream_id: stream_id.to_owned(),
            expected,
            rows,
            bytes,
            reply,
        };
        if self.queue.send(request).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Database(sqlx::Error::WorkerCrashed));
        }
        // The writer dropped the request without answering: it panicked.
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// Appends submitted and not yet taken into a group.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The incoming appends, and the one that did not fit the last group.
struct Queue {
    rx: mpsc::UnboundedReceiver<Request>,
    carry: Option<Request>,
}

struct Writer {
    pool: PgPool,
    heads: Heads,
    commits: Arc<watch::Sender<u64>>,
    queued: Arc<AtomicUsize>,
    queue: tokio::sync::Mutex<Queue>,
    /// The streams of the groups in flight, and the number of the group
    /// that writes each.
    in_flight: Mutex<HashMap<String, u64>>,
    /// Signalled whenever a group in flight finishes.
    released: tokio::sync::Notify,
    next_group: AtomicU64,
    /// Where group sizes are recorded.
    metrics: StoreMetrics,
}

impl Writer {
    /// One pipeline: forms a group from what is waiting, writes it, and
    /// again. While it writes, another pipeline forms and writes the next
    /// group, so one group's commit overlaps the next one's work.
    async fn run(self: Arc<Self>) {
        // Kept while appends keep coming, returned to the pool once none
        // came for HOLD_IDLE, so a small pool is not held by writers with
        // nothing to do. Not returned between groups: the pool pings every
        // connection it hands out, a round trip that each group would pay.
        let mut conn: Option<PoolConnection<Postgres>> = None;
        loop {
            let group = if conn.is_some() {
                // `form` is cancel-safe: it awaits only the queue's lock
                // and its receiver, and takes nothing before either.
                match tokio::time::timeout(HOLD_IDLE, self.form()).await {
                    Ok(group) => group,
                    Err(_) => {
                        conn = None;
                        self.form().await
                    }
                }
            } else {
                self.form().await
            };
            let Some(group) = group else {
                return;
            };
            self.write(&mut conn, group).await;
        }
    }

    /// Waits for an append and takes every append waiting behind it, up to
    /// the bounds; `None` once the store is dropped.
    async fn form(&self) -> Option<Vec<Request>> {
        let mut queue = self.queue.lock().await;
        let first = match queue.carry.take() {
            Some(request) => request,
            None => queue.rx.recv().await?,
        };
        self.queued.fetch_sub(1, Ordering::Relaxed);
        let mut events = first.rows.len();
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while let Ok(next) = queue.rx.try_recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if events + next.rows.len() > MAX_GROUP_EVENTS || bytes + next.bytes > MAX_GROUP_BYTES {
                queue.carry = Some(next);
                break;
            }
            events += next.rows.len();
            bytes += next.bytes;
            group.push(next);
        }
        self.metrics.group_formed(group.len(), events);
        Some(group)
    }

    /// Writes one group and answers each of its appends.
    async fn write(&self, conn: &mut Option<PoolConnection<Postgres>>, mut group: Vec<Request>) {
        match self.call(conn, &mut group).await {
            Ok(answers) => self.answer(group, answers),
            // A statement error rolled the whole group back. When one
            // append may have caused it (a duplicate event id, a deadlock
            // with another transaction), each goes again alone, so it fails
            // no neighbour. A lost connection fails them all: the commit's
            // fate is unknown, so nothing is acknowledged.
            Err(error) if group.len() > 1 && caused_by_one(&error) => {
                tracing::debug!(%error, appends = group.len(), "group failed; appending one by one");
                for request in group {
                    let mut one = vec![request];
                    match self.call(conn, &mut one).await {
                        Ok(answers) => self.answer(one, answers),
                        Err(error) => {
                            if let Some(request) = one.pop() {
                                let error = map_unique_violation(
                                    StoreError::Database(error),
                                    &request.stream_id,
                                    request.expected,
                                );
                                let _ = request.reply.send(Err(error));
                            }
                        }
                    }
                }
            }
            Err(error) if group.len() == 1 => {
                if let Some(request) = group.pop() {
                    let error = map_unique_violation(
                        StoreError::Database(error),
                        &request.stream_id,
                        request.expected,
                    );
                    let _ = request.reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, appends = group.len(), "group append failed");
                for request in group {
                    let error = map_unique_violation(
                        error_for(&error),
                        &request.stream_id,
                        request.expected,
                    );
                    let _ = request.reply.send(Err(error));
                }
            }
        }
    }

    fn answer(&self, group: Vec<Request>, answers: Vec<Result<Attempt, StoreError>>) {
        if answers
            .iter()
            .any(|a| matches!(a, Ok(Attempt::Appended(..))))
        {
            self.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        for (request, answer) in group.into_iter().zip(answers) {
            let _ = request.reply.send(answer);
        }
    }

    /// One call of `fulcrum_append_group` for `group`, in autocommit: one
    /// transaction. Rehashes appends whose base is known to be stale (a
    /// later append to a stream already in the group chains onto the
    /// earlier one) and keeps the head cache current.
    async fn call(
        &self,
        conn: &mut Option<PoolConnection<Postgres>>,
        group: &mut [Request],
    ) -> Result<Vec<Result<Attempt, StoreError>>, sqlx::Error> {
        let id = self.next_group.fetch_add(1, Ordering::Relaxed);
        self.claim(group, id).await;
        let roots = self.chain(group);
        let events = group.iter().map(|r| r.rows.len()).sum();
        let flat = Flat::take(
            group
                .iter_mut()
                .map(|r| (r.stream_id.as_str(), r.expected, &mut r.rows)),
            &roots,
            events,
        );
        let result = self.send(conn, &flat).await;
        flat.give_back(group.iter_mut().map(|r| &mut r.rows));
        if result.is_err() {
            for request in group.iter() {
                self.heads.invalidate(&request.stream_id);
            }
        }
        let answers = result.map(|rows| {
            group
                .iter()
                .zip(rows)
                .map(|(request, row)| self.outcome(request, &row))
                .collect()
        });
        // The head cache is current now: later groups read it instead.
        self.release(group, id);
        if answers.is_err() {
            // Possibly broken (a terminated backend answers with a database
            // error before the socket closes): never reuse it.
            *conn = None;
        }
        answers
    }

    async fn send(
        &self,
        conn: &mut Option<PoolConnection<Postgres>>,
        flat: &Flat,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(self.pool.acquire().await?),
        };
        if let (
            [stream_id],
            [stream_type],
            [expected],
            [base_version],
            [base_hash],
            [recorded_at],
        ) = (
            &flat.stream_ids[..],
            &flat.stream_types[..],
            &flat.expected[..],
            &flat.base_versions[..],
            &flat.base_hashes[..],
            &flat.recorded_at[..],
        ) {
            // A group of one (the idle case): the single-append function,
            // which does less per call.
            return sqlx::query(
                "SELECT outcome, head_version, head_hash, last_position
                 FROM fulcrum_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(stream_id)
            .bind(stream_type)
            .bind(expected)
            .bind(base_version)
            .bind(base_hash)
            .bind(&flat.metadata)
            .bind(recorded_at)
            .bind(&flat.event_ids)
            .bind(&flat.event_types)
            .bind(&flat.schema_versions)
            .bind(&flat.data)
            .bind(&flat.hashes)
            .fetch_one(&mut **conn)
            .await
            .map(|row| vec![row]);
        }
        flat.call_group(conn).await
    }

    /// Waits until no other group in flight writes to this group's streams,
    /// then claims them for group `id`: the head cache then holds every
    /// stream's head as this group will find it (unless another process
    /// appends), and a group never overtakes an earlier one on a stream.
    async fn claim(&self, group: &[Request], id: u64) {
        loop {
            let released = self.released.notified();
            {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if !group.iter().any(|r| {
                    in_flight
                        .get(&r.stream_id)
                        .is_some_and(|&owner| owner != id)
                }) {
                    for request in group {
                        in_flight.insert(request.stream_id.clone(), id);
                    }
                    return;
                }
            }
            released.await;
        }
    }

    /// Makes each append's base the head it will find if every earlier
    /// append succeeds: the head cache's for a stream's first append in the
    /// group (it may have moved since the caller hashed), the previous
    /// append's result for the others. Answers each append's root: the
    /// 1-based index of the group's first append to its stream.
    fn chain(&self, group: &mut [Request]) -> Vec<i32> {
        let mut seen: HashMap<&str, (i32, StreamHead)> = HashMap::with_capacity(group.len());
        let mut roots = Vec::with_capacity(group.len());
        for (i, request) in group.iter_mut().enumerate() {
            let root = match seen.get(request.stream_id.as_str()) {
                Some(&(root, head)) => {
                    if request.rows.base != head {
                        request.rows.chain_onto(&request.stream_id, head);
                    }
                    root
                }
                None => {
                    if let Some(head) = self.heads.get(&request.stream_id) {
                        if request.rows.base != head && !new_stream(request.expected) {
                            request.rows.chain_onto(&request.stream_id, head);
                        }
                    }
                    i as i32 + 1
                }
            };
            seen.insert(&request.stream_id, (root, request.rows.head_after()));
            roots.push(root);
        }
        roots
    }

    /// Gives up group `id`'s claim on its streams.
    fn release(&self, group: &[Request], id: u64) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for request in group {
                if in_flight.get(&request.stream_id) == Some(&id) {
                    in_flight.remove(&request.stream_id);
                }
            }
        }
        self.released.notify_waiters();
    }

    /// [`Attempt::from_row`], keeping the head cache current: the new or
    /// the found head, or none after a refusal.
    fn outcome(
        &self,
        request: &Request,
        row: &sqlx::postgres::PgRow,
    ) -> Result<Attempt, StoreError> {
        let stream_id = &request.stream_id;
        let attempt = Attempt::from_row(row, stream_id, request.expected);
        match &attempt {
            Ok(Attempt::Appended(_, head) | Attempt::Stale(head)) => {
                self.heads.insert(stream_id.clone(), *head);
            }
            Err(_) => self.heads.invalidate(stream_id),
        }
        attempt
    }
}

/// An append that expects a new stream needs no head: if the stream
/// exists, it conflicts whatever it was hashed onto.
fn new_stream(expected: ExpectedVersion) -> bool {
    matches!(
        expected,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
    )
}

/// Whether a failed group statement may be the fault of one append (bad
/// data, a duplicate key, a deadlock), rather than of the connection or the
/// server, so that its appends may be tried again one by one.
fn caused_by_one(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code();
    let class = code.as_deref().map_or("", |c| c.get(..2).unwrap_or(""));
    matches!(class, "22" | "23" | "40" | "54")
}

/// A copy of `error` for one of the appends it failed, keeping its kind
/// (an unreachable database answers 503 at the API).
fn error_for(error: &sqlx::Error) -> StoreError {
    StoreError::Database(match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
        sqlx::Error::Io(e) => sqlx::Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        other => sqlx::Error::Protocol(other.to_string()),
    })
}
