//! Projector workers: one Kafka consumer group per projection, applying the
//! relay's event envelopes to the live read model.
//!
//! Each batch of messages is applied in ONE Postgres transaction (rows and
//! per-stream positions together, see [`crate::apply`]); the Kafka offsets
//! are committed only after that transaction commits. A crash between the
//! two redelivers the batch, and re-applying it answers `Duplicate` for
//! every event: read models stay equal to a clean fold.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventstore::kafka::{envelope, headers, Backoff, ConsumerSettings, EventConsumer};
use eventstore::trace::TraceParent;
use eventstore::{EventStore, RecordedEvent};
use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use sqlx::PgConnection;
use tracing::{Instrument, Span};

use crate::live::LiveBatch;
use crate::position::passed_over;
use crate::status::{self, OnError, Status};
use crate::{Applied, Projection, ProjectionError};

mod probe;
pub use probe::{ProjectorMetrics, ProjectorProbe};

/// Messages applied per Postgres transaction at most.
const MAX_BATCH: usize = 256;

/// The projectors' default `fetch.wait.max.ms` in `fulcrum serve`
/// (`KAFKA_PROJECTOR_FETCH_WAIT_MAX_MS`). The local feed
/// ([`crate::local`]) brings a process's own writes to its read models at
/// once, so the projectors are the durable path and the path for other
/// processes' writes: 100 ms turns many small duplicate batches into few
/// larger ones, and less broker CPU per order (docs/benchmarks.md, "The order saga").
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 100;

/// How a projector reaches Kafka and what it does with poison events.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// How the projector's consumer reaches Kafka (brokers, topic prefix,
    /// the partitions and replication of topics it creates when missing,
    /// consumer timeouts, further librdkafka properties).
    pub kafka: ConsumerSettings,
    /// Halt (default) or skip on an event the projection cannot apply.
    pub on_error: OnError,
}

impl ProjectorConfig {
    /// Settings for `brokers` with the defaults `fulcrum serve` uses
    /// ([`ConsumerSettings::new`], [`OnError::Halt`]).
    pub fn new(brokers: impl Into<String>) -> Self {
        ProjectorConfig {
            kafka: ConsumerSettings::new(brokers),
            on_error: OnError::Halt,
        }
    }

    /// The consumer group of `projection`: `<prefix>.projection.<name>`.
    pub fn group_id(&self, projection: Projection) -> String {
        self.kafka
            .group_id(&format!("projection.{}", projection.name()))
    }

    /// The topics `projection` reads.
    pub fn topics(&self, projection: Projection) -> Vec<String> {
        projection
            .stream_types()
            .iter()
            .map(|t| self.kafka.topic(t.as_str()))
            .collect()
    }
}

/// Why a projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Kafka refused the consumer's configuration or subscription, or
    /// refused for good to create a topic (see
    /// [`EventConsumer::subscribe`]).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The database failed outside the retried apply loop.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// [`ProjectorProbe::crash_after_batches`] fired: the test hook that
    /// stops a projector between its database commit and its offset commit.
    #[error("stopped on purpose between the database commit and the offset commit")]
    Crashed,
}

/// Runs `projection`'s projector until `shutdown` resolves: joins the
/// consumer group, applies batches, commits offsets. Transient database or
/// broker errors are retried with backoff. An event that cannot be applied
/// is dead-lettered; with [`OnError::Halt`] the projector then marks the
/// projection `halted` and waits until its status is `running` again (an
/// operator's rebuild, or a restart) before it re-reads from its last
/// committed offset.
pub async fn run(
    store: EventStore,
    projection: Projection,
    config: ProjectorConfig,
    probe: Arc<ProjectorProbe>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let Some(mut consumer) = subscribe(&config, projection, &mut shutdown).await? else {
        return Ok(());
    };
    resume_if_halted(&store, projection).await?;
    loop {
        tracing::info!(%projection, group = %consumer.group_id(), "projector started");
        let stopped = tokio::select! {
            stopped = consume(&store, projection, &config, &consumer, &probe) => stopped?,
            () = &mut shutdown => return Ok(()),
        };
        match stopped {
            Stopped::Halted => {
                tracing::error!(%projection, "projection halted on an event it cannot apply; waiting for its status to be running again");
                drop(consumer);
                if !wait_until_running(&store, projection, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
        consumer = match subscribe(&config, projection, &mut shutdown).await? {
            Some(consumer) => consumer,
            None => return Ok(()),
        };
    }
}

/// Why [`consume`] returned without an error.
enum Stopped {
    /// A poison event halted the projection.
    Halted,
}

/// Joins `projection`'s consumer group (creating missing topics first, see
/// [`EventConsumer::subscribe`]); `None` when `shutdown` resolved first.
async fn subscribe(
    config: &ProjectorConfig,
    projection: Projection,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<EventConsumer>, ProjectorError> {
    let group_id = config.group_id(projection);
    let topics = config.topics(projection);
    tokio::select! {
        consumer = EventConsumer::subscribe(&config.kafka, &group_id, &topics) => Ok(Some(consumer?)),
        () = shutdown => Ok(None),
    }
}

/// A restart retries a halted projection: sets its status `running`.
async fn resume_if_halted(
    store: &EventStore,
    projection: Projection,
) -> Result<(), ProjectorError> {
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(ProjectionError::from)?;
    if status::status(store.pool(), projection).await? == Status::Halted {
        status::set_status(&mut conn, projection, Status::Running, None).await?;
    }
    Ok(())
}

/// Waits until `projection`'s status is `running` again; false when
/// `shutdown` resolved first.
async fn wait_until_running(
    store: &EventStore,
    projection: Projection,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = &mut *shutdown => return false,
        }
        match status::status(store.pool(), projection).await {
            // A rebuild sets the status running when it has swapped its
            // tables in; consuming before then would write `halted` over
            // `rebuilding`.
            Ok(Status::Halted | Status::Rebuilding) => {}
            Ok(Status::Running) => return true,
            Err(error) => {
                tracing::warn!(%projection, %error, "reading the projection's status")
            }
        }
    }
}

/// Receives and applies batches until a poison event halts the projection.
async fn consume(
    store: &EventStore,
    projection: Projection,
    config: &ProjectorConfig,
    consumer: &EventConsumer,
    probe: &ProjectorProbe,
) -> Result<Stopped, ProjectorError> {
    loop {
        let batch = consumer.recv_batch(MAX_BATCH).await;
        let outcome = apply_batch_retrying(store, projection, config.on_error, &batch, probe).await;
        let committed = match outcome {
            BatchOutcome::Done => batch.as_slice(),
            BatchOutcome::Halted { applied } => &batch[..applied],
        };
        let crash_after = probe.crash_after_batches.load(Ordering::Relaxed);
        if crash_after != 0 && probe.batches.get() >= crash_after {
            return Err(ProjectorError::Crashed);
        }
        consumer.commit(committed);
        if matches!(outcome, BatchOutcome::Halted { .. }) {
            return Ok(Stopped::Halted);
        }
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy)]
enum BatchOutcome {
    /// Every message is handled (applied, duplicate, ignored or skipped).
    Done,
    /// The first `applied` messages are handled; the next one is poison and
    /// the projection is now halted.
    Halted { applied: usize },
}

/// Applies a batch, retrying the whole transaction with backoff while the
/// database fails.
async fn apply_batch_retrying(
    store: &EventStore,
    projection: Projection,
    on_error: OnError,
    batch: &[OwnedMessage],
    probe: &ProjectorProbe,
) -> BatchOutcome {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match apply_batch(store, projection, on_error, batch, probe).await {
            Ok(outcome) => return outcome,
            Err(error) => {
                let delay = backoff.next();
                tracing::warn!(%projection, %error, retry_in = ?delay, "applying a batch failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Applies `batch` in one transaction ([`LiveBatch`]); dead-letters poison
/// events.
async fn apply_batch(
    store: &EventStore,
    projection: Projection,
    on_error: OnError,
    batch: &[OwnedMessage],
    probe: &ProjectorProbe,
) -> Result<BatchOutcome, ProjectionError> {
    let schema = projection.live_schema();
    let events: Vec<Result<RecordedEvent, Box<RecordedEvent>>> =
        batch.iter().map(envelope::decode).collect();
    if let Some(duplicates) = passed_over(store, projection, &events).await? {
        probe.batches.inc();
        probe.duplicates.inc_by(duplicates);
        return Ok(BatchOutcome::Done);
    }
    let mut tx = store.pool().begin().await?;
    status::lock_shared(&mut tx, projection).await?;
    let streams = events
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .filter(|e| projection.consumes(&e.stream_type))
        .map(|e| e.stream_id.as_str());
    let mut live = LiveBatch::begin(&mut tx, projection, &schema, streams).await?;
    let mut tally = Tally::default();
    let mut outcome = BatchOutcome::Done;
    for (index, event) in events.iter().enumerate() {
        let (event, error) = match event {
            Err(event) => (&**event, NOT_AN_ENVELOPE.to_owned()),
            Ok(event) => match apply_one(
                &mut tx,
                &mut live,
                projection,
                &batch[index],
                event,
                &mut tally,
            )
            .await?
            {
                Some(error) => (event, error),
                None => continue,
            },
        };
        tally.dead += u64::from(status::dead_letter(&mut tx, projection, event, &error).await?);
        match on_error {
            OnError::Halt => {
                status::set_status(&mut tx, projection, Status::Halted, Some(&error)).await?;
                outcome = BatchOutcome::Halted { applied: index };
                break;
            }
            // An event that is no envelope has no place in the read model
            // to pass over.
            OnError::Skip if events[index].is_ok() => {
                live.skip(event);
            }
            OnError::Skip => {}
        }
    }
    live.finish(&mut tx).await?;
    tx.commit().await?;
    tally.count(probe);
    Ok(outcome)
}

/// Why a message that is not an event envelope is dead-lettered.
const NOT_AN_ENVELOPE: &str = "the message is not a Fulcrum event envelope";

/// What the events of one batch came to, for the probe.
#[derive(Debug, Default)]
struct Tally {
    applied: u64,
    duplicates: u64,
    dead: u64,
    /// When each applied event was recorded (for the lag).
    recorded: Vec<DateTime<Utc>>,
}

impl Tally {
    /// Adds this batch's counts (and lags, when recorded) to `probe`.
    fn count(self, probe: &ProjectorProbe) {
        probe.batches.inc();
        probe.applied.inc_by(self.applied);
        probe.duplicates.inc_by(self.duplicates);
        probe.dead_letters.inc_by(self.dead);
        probe.count_lags(&self.recorded);
    }
}

/// Applies one consumed `event` (carried by `message`) to `live`; `Some(why)`
/// when it is poison (undecodable, inconsistent with the read model, or
/// past a gap) and is to be dead-lettered.
async fn apply_one(
    conn: &mut PgConnection,
    live: &mut LiveBatch,
    projection: Projection,
    message: &OwnedMessage,
    event: &RecordedEvent,
    tally: &mut Tally,
) -> Result<Option<String>, ProjectionError> {
    let span = event_span(projection, message, event);
    match live.apply(conn, event).instrument(span.clone()).await {
        Ok(Applied::Applied) => {
            tally.applied += 1;
            tally.recorded.push(event.recorded_at);
            span.in_scope(|| tracing::debug!(event_type = %event.event_type, "applied"));
            Ok(None)
        }
        Ok(Applied::Duplicate) => {
            tally.duplicates += 1;
            Ok(None)
        }
        Ok(Applied::Ignored | Applied::Gap { .. }) => Ok(None),
        Err(
            error @ (ProjectionError::Decode { .. }
            | ProjectionError::Inconsistent { .. }
            | ProjectionError::Gap { .. }),
        ) => {
            let message = error.to_string();
            span.in_scope(
                || tracing::error!(%projection, error = %message, "dead-lettering an event"),
            );
            Ok(Some(message))
        }
        Err(error) => Err(error),
    }
}

/// The span of one consumed event: its trace (the Kafka `traceparent`
/// header, else the event's metadata) and correlation id go on every log
/// line about it.
fn event_span(projection: Projection, message: &OwnedMessage, event: &RecordedEvent) -> Span {
    let trace = headers::get(message, headers::TRACEPARENT)
        .as_deref()
        .and_then(TraceParent::parse)
        .or_else(|| TraceParent::of_metadata(&event.metadata));
    let correlation_id = headers::get(message, headers::CORRELATION_ID).unwrap_or_default();
    projection_span(projection, event, trace, &correlation_id)
}

/// The `projection_event` span of `event` applied to `projection`, in
/// `trace` (a new one when `None`), with its correlation id: how a
/// projector's and the local feed's log lines about an event look.
pub(crate) fn projection_span(
    projection: Projection,
    event: &RecordedEvent,
    trace: Option<TraceParent>,
    correlation_id: &str,
) -> Span {
    let span = tracing::info_span!(
        "projection_event",
        %projection,
        trace_id = tracing::field::Empty,
        correlation_id = %correlation_id,
        global_position = event.global_position,
    );
    let trace = eventstore::trace::enter(&span, trace);
    span.record("trace_id", trace.trace_id().as_str());
    span
}
