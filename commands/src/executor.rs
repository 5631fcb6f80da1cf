//! Carrying out commands on one aggregate type: per-stream queues, batched
//! appends, retries on conflict, idempotency keys.
//!
//! Commands for one stream queue behind each other inside the process. The
//! first command to arrive at an idle stream starts a driver task; the
//! driver takes every queued command, decides them one after another on the
//! evolving state, and appends all their events in one append. So a hot
//! stream costs one append per batch instead of a storm of conflicts, while
//! the expected version still guards against other processes.

mod keyed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::{Aggregate, DomainError, DomainEvent};
use eventstore::{EventStore, ExpectedVersion, NewEvent, StoreError};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::repository::{Loaded, Repository};
use crate::{Appended, CommandContext, CommandError, Outcome};

/// Settings of command execution.
#[derive(Debug, Clone, Copy)]
pub struct ExecutorConfig {
    /// How many times a command is decided and appended before giving up on a contended stream.
    pub max_tries: u32,
    /// Most commands decided into one append.
    pub max_batch: usize,
    /// Streams whose state is cached.
    pub cache_capacity: u64,
    /// Snapshot every this many events (0: never).
    pub snapshot_every: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_tries: 5,
            max_batch: 256,
            cache_capacity: 100_000,
            snapshot_every: 100,
        }
    }
}

type Answer = oneshot::Sender<Result<Outcome, CommandError>>;

/// One queued command.
struct Job<A: Aggregate> {
    /// The caller knows the stream is new (a fresh random id): skip loading
    /// on the first try; the expected version still catches a clash.
    assume_new: bool,
    command: A::Command,
    context: CommandContext,
    reply: Value,
    answer: Answer,
}

/// A stream's queue, and whether a driver is working through it.
struct Lane<A: Aggregate> {
    queue: Vec<Job<A>>,
}

/// Carries out commands of aggregate `A`.
pub struct Executor<A: Aggregate> {
    store: EventStore,
    repository: Repository<A>,
    lanes: Mutex<HashMap<String, Lane<A>>>,
    config: ExecutorConfig,
}

impl<A: Aggregate> Executor<A> {
    /// An executor over `store`.
    pub fn new(store: EventStore, config: ExecutorConfig) -> Arc<Self> {
        Arc::new(Executor {
            repository: Repository::new(
                store.clone(),
                config.cache_capacity,
                config.snapshot_every,
            ),
            store,
            lanes: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The repository, for reads (e.g. catalogue prices).
    pub fn repository(&self) -> &Repository<A> {
        &self.repository
    }

    /// Carries out `command` on the aggregate with stream id `<A::KIND>-<id>`
    /// and answers with where the stream got to. `reply` is what the caller
    /// will answer its client (e.g. the new order's id); under an
    /// idempotency key it is stored, and a retry gets the first one back.
    ///
    /// A command that changes nothing (`decide` returned no events) succeeds
    /// with `appended == 0`. Domain refusals are not stored under the
    /// idempotency key: a retry decides again.
    pub async fn execute(
        self: &Arc<Self>,
        id: &str,
        command: A::Command,
        context: CommandContext,
        reply: Value,
    ) -> Result<Outcome, CommandError> {
        self.submit(id, command, context, reply, false).await
    }

    /// Like [`Executor::execute`], for a command that creates the stream
    /// under an id nobody can have used (a fresh random UUID): the first try
    /// decides on the empty state without reading the store, and appends
    /// expecting no stream. If the stream does exist after all, the append
    /// conflicts and the command is decided again on the real state.
    pub async fn create(
        self: &Arc<Self>,
        id: &str,
        command: A::Command,
        context: CommandContext,
        reply: Value,
    ) -> Result<Outcome, CommandError> {
        self.submit(id, command, context, reply, true).await
    }

    async fn submit(
        self: &Arc<Self>,
        id: &str,
        command: A::Command,
        context: CommandContext,
        reply: Value,
        assume_new: bool,
    ) -> Result<Outcome, CommandError> {
        let stream_id = domain::stream_id::<A>(id);
        let (answer, answered) = oneshot::channel();
        let job = Job {
            assume_new,
            command,
            context,
            reply,
            answer,
        };
        let lead = {
            let mut lanes = self.lanes.lock().map_err(|_| CommandError::Dropped)?;
            match lanes.get_mut(&stream_id) {
                Some(lane) => {
                    lane.queue.push(job);
                    false
                }
                None => {
                    lanes.insert(stream_id.clone(), Lane { queue: vec![job] });
                    true
                }
            }
        };
        if lead {
            // A task of its own, so a client that hangs up cannot stop a batch halfway.
            tokio::spawn(self.clone().drive(stream_id));
        }
        answered.await.map_err(|_| CommandError::Dropped)?
    }

    /// Works through `stream_id`'s queue until it is empty, then retires the lane.
    async fn drive(self: Arc<Self>, stream_id: String) {
        let _retire = RetireOnPanic {
            executor: &self,
            stream_id: &stream_id,
        };
        loop {
            let batch = {
                let Ok(mut lanes) = self.lanes.lock() else {
                    return; // a panic poisoned the lanes; queued answers drop as Dropped
                };
                let Some(lane) = lanes.get_mut(&stream_id) else {
                    return;
                };
                if lane.queue.is_empty() {
                    lanes.remove(&stream_id);
                    return;
                }
                let take = lane.queue.len().min(self.config.max_batch);
                lane.queue.drain(..take).collect::<Vec<_>>()
            };
            let (keyed, plain): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|job| job.context.idempotency.is_some());
            if !plain.is_empty() {
                self.run_batch(&stream_id, plain).await;
            }
            for job in keyed {
                let result = self.run_keyed(&stream_id, &job).await;
                let _ = job.answer.send(result);
            }
        }
    }

    /// Decides `jobs` in order on one state and appends all their events at
    /// once; on a conflict reloads and decides them all again.
    async fn run_batch(&self, stream_id: &str, jobs: Vec<Job<A>>) {
        let mut last_error = None;
        let mut fresh = false;
        for attempt in 0..self.config.max_tries {
            let assume_new = attempt == 0 && jobs.iter().all(|j| j.assume_new);
            let loaded = match self.load(stream_id, assume_new).await {
                Ok(loaded) => loaded,
                Err(error) => return answer_all(jobs, |_| Err(clone_error(&error))),
            };
            let (decisions, events, after) = decide_all(&loaded, &jobs);
            if !fresh && !assume_new && decisions.iter().any(Result::is_err) {
                // A refusal decided on a cached state may be stale: another
                // process may have moved the stream, and a refusal appends
                // nothing, so the expected version never catches it. Decide
                // again on the store's state before refusing anyone.
                self.repository.forget(stream_id).await;
                fresh = true;
                continue;
            }
            if events.is_empty() {
                return answer(jobs, decisions, stream_id, &loaded, &[]);
            }
            let expected = ExpectedVersion::Exact(loaded.version);
            match self
                .store
                .append(stream_id, expected, &events, &json!({}))
                .await
            {
                Ok(result) => {
                    let after = Arc::new(Loaded {
                        version: result.version,
                        position: result.position,
                        state: after,
                    });
                    self.remembered(stream_id, loaded.version, after.clone())
                        .await;
                    return answer(jobs, decisions, stream_id, &after, &events);
                }
                Err(error) if error.is_conflict() => {
                    self.repository.forget(stream_id).await;
                    last_error = Some(error);
                }
                Err(error) => {
                    return answer_all(jobs, |_| Err(CommandError::from(clone_store_error(&error))))
                }
            }
        }
        tracing::warn!(?last_error, stream_id, "giving up on a contended stream");
        let tries = self.config.max_tries;
        answer_all(jobs, |_| {
            Err(CommandError::Contention {
                stream_id: stream_id.to_owned(),
                tries,
            })
        })
    }

    /// The stream's state: the empty state when the caller vouches the
    /// stream is new, else the repository's.
    async fn load(
        &self,
        stream_id: &str,
        assume_new: bool,
    ) -> Result<Arc<Loaded<A>>, CommandError> {
        if assume_new {
            return Ok(Arc::new(Loaded::default()));
        }
        self.repository.load(stream_id).await
    }

    pub(crate) async fn remembered(&self, stream_id: &str, before: u64, after: Arc<Loaded<A>>) {
        self.repository.snapshot_if_due(stream_id, before, &after);
        self.repository.remember(stream_id, after).await;
    }
}

/// Retires a stream's lane if its driver panics. Without it the lane would
/// stay with no driver: the commands queued in it, and every later command
/// to the stream, would wait forever. Dropping the lane drops their answer
/// senders, so they fail with [`CommandError::Dropped`], and the next
/// command to the stream starts a new driver.
struct RetireOnPanic<'a, A: Aggregate> {
    executor: &'a Executor<A>,
    stream_id: &'a str,
}

impl<A: Aggregate> Drop for RetireOnPanic<'_, A> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return; // the driver retired the lane itself, under the lock
        }
        let removed = match self.executor.lanes.lock() {
            Ok(mut lanes) => lanes.remove(self.stream_id),
            Err(poisoned) => poisoned.into_inner().remove(self.stream_id),
        };
        tracing::error!(
            stream_id = self.stream_id,
            dropped = removed.map_or(0, |lane| lane.queue.len()),
            "a command driver panicked; its queued commands fail"
        );
    }
}

/// Each job's decision (how many events it added), all accepted events
/// (with their command's metadata), and the state after them.
fn decide_all<A: Aggregate>(
    loaded: &Loaded<A>,
    jobs: &[Job<A>],
) -> (Vec<Result<usize, DomainError>>, Vec<NewEvent>, A) {
    let mut state = loaded.state.clone();
    let mut decisions = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        match state.decide(&job.command) {
            Ok(decided) => {
                events.extend(to_new_events(&decided, &job.context));
                state = decided.iter().fold(state, |s, e| s.evolve(e));
                decisions.push(Ok(decided.len()));
            }
            Err(error) => decisions.push(Err(error)),
        }
    }
    (decisions, events, state)
}

pub(crate) fn to_new_events<E: DomainEvent>(
    events: &[E],
    context: &CommandContext,
) -> Vec<NewEvent> {
    let metadata = context.metadata();
    events
        .iter()
        .map(|e| {
            NewEvent::new(e.event_type(), e.schema_version(), e.to_data())
                .with_metadata(metadata.clone())
        })
        .collect()
}

/// Answers each job of a batch that appended `events` (ending at `at`):
/// with its decision, and the events that were its own.
fn answer<A: Aggregate>(
    jobs: Vec<Job<A>>,
    decisions: Vec<Result<usize, DomainError>>,
    stream_id: &str,
    at: &Loaded<A>,
    events: &[NewEvent],
) {
    let mut appended = Appended::all(stream_id, at.version, events).into_iter();
    for (job, decision) in jobs.into_iter().zip(decisions) {
        let result = decision.map_err(CommandError::from).map(|own| Outcome {
            stream_id: stream_id.to_owned(),
            version: at.version,
            position: at.position,
            appended: events.len(),
            replayed: false,
            reply: job.reply,
            events: appended.by_ref().take(own).collect(),
        });
        let _ = job.answer.send(result);
    }
}

fn answer_all<A: Aggregate>(
    jobs: Vec<Job<A>>,
    result: impl Fn(&Job<A>) -> Result<Outcome, CommandError>,
) {
    for job in jobs {
        let r = result(&job);
        let _ = job.answer.send(r);
    }
}

/// Errors are not `Clone` (they wrap database errors); a batch answers every
/// job with a copy that keeps the kind and the message.
fn clone_error(error: &CommandError) -> CommandError {
    match error {
        CommandError::Domain(e) => CommandError::Domain(e.clone()),
        CommandError::Store(e) => CommandError::Store(clone_store_error(e)),
        CommandError::Contention { stream_id, tries } => CommandError::Contention {
            stream_id: stream_id.clone(),
            tries: *tries,
        },
        CommandError::IdempotencyKeyReused => CommandError::IdempotencyKeyReused,
        CommandError::Decode(e) => CommandError::Store(StoreError::Corrupt(e.to_string())),
        CommandError::Dropped => CommandError::Dropped,
        CommandError::Forbidden(message) => CommandError::Forbidden(message.clone()),
    }
}

fn clone_store_error(error: &StoreError) -> StoreError {
    match error {
        // An unreachable database keeps its kind (the API answers 503 for it).
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            StoreError::Database(sqlx::Error::PoolTimedOut)
        }
        StoreError::Database(sqlx::Error::PoolClosed) => {
            StoreError::Database(sqlx::Error::PoolClosed)
        }
        StoreError::Database(sqlx::Error::Io(e)) => StoreError::Database(sqlx::Error::Io(
            std::io::Error::new(e.kind(), e.to_string()),
        )),
        StoreError::Database(e) => StoreError::Database(sqlx::Error::Protocol(e.to_string())),
        other => StoreError::Corrupt(other.to_string()),
    }
}
