//! The local feed: read models see this process's own writes at once,
//! ahead of their Kafka copies.
//!
//! After each commit of this process ([`EventStore::commit_signal`]) the
//! feed reads the events appended since it last looked and applies them to
//! the projections this process runs, all in one transaction per round
//! (each as a projector applies a Kafka batch: [`LiveBatch`], under the
//! projection's shared lock). When that transaction fails, each projection
//! is fed on its own, so one projection's trouble holds no other back. The
//! projectors stay the durable path: the copies they receive later are
//! duplicates ([`crate::Applied::Duplicate`]) and change
//! nothing. The feed only ever goes ahead of them where that is safe, and
//! leaves everything else to them:
//!
//! - a stream's events are applied in version order whoever applies them:
//!   where the read model lacks earlier versions, [`LiveBatch`] reads them
//!   from the store and applies them first, so "has position N" keeps its
//!   meaning;
//! - the feed reads by position, not gap-free: an event whose transaction
//!   commits late with a lower position is looked for again for two
//!   seconds (its position is a hole the feed read past, [`Holes`]); after
//!   that the projector applies it, or the feed does when the stream's next
//!   event comes;
//! - a projection that is not `running` (halted on a poison event, or
//!   being rebuilt) is not touched, and an event that does not decode or
//!   fit rolls the feed's transaction back, for the projector to dead-letter
//!   as its `FULCRUM_PROJECTION_ON_ERROR` says;
//! - a stream new to the read model that a projector claims first
//!   ([`ProjectionError::Contended`]) rolls back too.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::trace::TraceParent;
use eventstore::{EventMetadata, EventStore, RecordedEvent};
use futures::FutureExt;
use tracing::Instrument;

use crate::live::LiveBatch;
use crate::status;
use crate::worker::{projection_span, ProjectorProbe};
use crate::{Applied, Projection, ProjectionError};

/// Events read per look at the store.
const PAGE: i64 = 500;

/// Runs the local feed for `projections` (each with the probe its events
/// are counted on) until `shutdown` resolves, from the store's head when it
/// starts (the projectors have the past). Errors are logged and left to the
/// projectors.
pub async fn run(
    store: EventStore,
    projections: Vec<(Projection, Arc<ProjectorProbe>)>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown.fuse());
    let head = loop {
        match eventstore::head_position(store.pool()).await {
            Ok(head) => break head,
            Err(error) => {
                tracing::warn!(%error, "local feed: reading the store's head");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    () = &mut shutdown => return,
                }
            }
        }
    };
    run_after(store, projections, head, shutdown).await;
}

/// [`run`], for the events with a position above `after`.
pub async fn run_after(
    store: EventStore,
    projections: Vec<(Projection, Arc<ProjectorProbe>)>,
    after: i64,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown.fuse());
    let mut commits = store.commit_signal();
    let mut seen = after;
    let mut holes = Holes::default();
    loop {
        loop {
            holes.expire(Instant::now());
            let also = holes.positions();
            let read = eventstore::read_after_position(store.pool(), seen, &also, PAGE).await;
            let events = match read {
                Ok(events) => events,
                Err(error) => {
                    tracing::debug!(%error, "local feed: reading new events");
                    break;
                }
            };
            if events.is_empty() {
                break;
            }
            for event in &events {
                holes.note(&mut seen, event.global_position, Instant::now());
            }
            feed_all(&store, &projections, &events).await;
            if events.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            () = &mut shutdown => return,
        }
    }
}

/// How long the feed looks for an event at a position it read past.
const HOLE_PATIENCE: Duration = Duration::from_secs(2);

/// The most positions it looks for at once.
const MAX_HOLES: usize = 1000;

/// Positions the feed read past that had no committed event yet: an append
/// still running took them (it commits later, with a lower position than
/// events already read) or one rolled back (never filled). Each read looks
/// for them again, for [`HOLE_PATIENCE`] and at most [`MAX_HOLES`] at once;
/// the projectors have whatever the feed gives up on.
#[derive(Debug, Default)]
struct Holes {
    since: BTreeMap<i64, Instant>,
}

impl Holes {
    /// An event at `position` was read: it fills a hole, or it moves `seen`
    /// up to it, with the positions in between as new holes.
    fn note(&mut self, seen: &mut i64, position: i64, now: Instant) {
        if self.since.remove(&position).is_some() || position <= *seen {
            return;
        }
        for hole in (*seen + 1)..position {
            if self.since.len() >= MAX_HOLES {
                break;
            }
            self.since.insert(hole, now);
        }
        *seen = position;
    }

    /// Gives up on the holes older than [`HOLE_PATIENCE`].
    fn expire(&mut self, now: Instant) {
        self.since
            .retain(|_, since| now.duration_since(*since) < HOLE_PATIENCE);
    }

    /// The positions looked for.
    fn positions(&self) -> Vec<i64> {
        self.since.keys().copied().collect()
    }
}

/// Applies `events` to every projection of `projections` in one
/// transaction ([`feed_together`]). When that fails (an event that does not
/// fit one of them, a new stream claimed concurrently), each projection is
/// fed on its own, so that one projection's trouble leaves the others
/// current; what still fails is left to the projectors.
async fn feed_all(
    store: &EventStore,
    projections: &[(Projection, Arc<ProjectorProbe>)],
    events: &[RecordedEvent],
) {
    let all: Vec<(Projection, &ProjectorProbe)> = projections
        .iter()
        .map(|(projection, probe)| (*projection, &**probe))
        .collect();
    let Err(error) = feed_together(store, &all, events).await else {
        return;
    };
    tracing::debug!(%error, "local feed: feeding each projection on its own");
    for one in &all {
        if let Err(error) = feed_together(store, std::slice::from_ref(one), events).await {
            tracing::debug!(projection = %one.0, %error, "local feed: left to the projector");
        }
    }
}

/// Applies those of `events` that `projection` consumes and has not
/// applied (earlier versions of their streams first), in one transaction;
/// how many of `events` it applied. Nothing when the projection is not
/// running; an error (and nothing applied) when an event does not decode
/// or fit, or a new stream was claimed concurrently.
pub async fn feed(
    store: &EventStore,
    projection: Projection,
    events: &[RecordedEvent],
    probe: &ProjectorProbe,
) -> Result<u64, ProjectionError> {
    feed_together(store, &[(projection, probe)], events).await
}

/// Applies those of `events` that each of `projections` consumes and has
/// not applied, to all of them in one transaction (one lock statement, one
/// status read, one commit); projections that are not running are passed
/// over. How many events it applied in all. All or nothing: an error rolls
/// every projection back.
async fn feed_together(
    store: &EventStore,
    projections: &[(Projection, &ProjectorProbe)],
    events: &[RecordedEvent],
) -> Result<u64, ProjectionError> {
    let busy: Vec<(Projection, &ProjectorProbe, Vec<&RecordedEvent>)> = projections
        .iter()
        .map(|(projection, probe)| (*projection, *probe, consumed(*projection, events)))
        .filter(|(_, _, mine)| !mine.is_empty())
        .collect();
    if busy.is_empty() {
        return Ok(0);
    }
    let names: Vec<Projection> = busy.iter().map(|(projection, _, _)| *projection).collect();
    let mut tx = store.pool().begin().await?;
    status::lock_shared_all(&mut tx, &names).await?;
    let running = status::running_in(&mut tx, &names).await?;
    let mut counts = Vec::with_capacity(busy.len());
    for (projection, probe, mine) in busy {
        if running.contains(&projection) {
            counts.push((probe, apply_mine(&mut tx, projection, mine).await?));
        }
    }
    let total: u64 = counts.iter().map(|(_, applied)| applied).sum();
    if total == 0 {
        return Ok(0);
    }
    tx.commit().await?;
    for (probe, applied) in counts.into_iter().filter(|(_, applied)| *applied > 0) {
        probe.batches.inc();
        probe.applied.inc_by(applied);
    }
    Ok(total)
}

/// Those of `events` that `projection` consumes.
fn consumed(projection: Projection, events: &[RecordedEvent]) -> Vec<&RecordedEvent> {
    events
        .iter()
        .filter(|e| projection.consumes(&e.stream_type))
        .collect()
}

/// Applies `mine` (events `projection` consumes) in the caller's
/// transaction, under the projection's lock, as one [`LiveBatch`]; how many
/// it applied (nothing is written when none).
async fn apply_mine(
    tx: &mut sqlx::PgConnection,
    projection: Projection,
    mine: Vec<&RecordedEvent>,
) -> Result<u64, ProjectionError> {
    let schema = projection.live_schema();
    let streams = mine.iter().map(|e| e.stream_id.as_str());
    let mut live = LiveBatch::begin(&mut *tx, projection, &schema, streams).await?;
    let mut applied = 0u64;
    for event in mine {
        // As a projector's: the event's trace goes on with its application.
        let trace = TraceParent::of_metadata(&event.metadata);
        let metadata = EventMetadata::of(&event.metadata);
        let correlation_id = metadata.correlation_id.as_deref().unwrap_or_default();
        let span = projection_span(projection, event, trace, correlation_id);
        if live.apply(&mut *tx, event).instrument(span.clone()).await? == Applied::Applied {
            applied += 1;
            span.in_scope(|| tracing::debug!(event_type = %event.event_type, "applied"));
        }
    }
    if applied > 0 {
        live.finish(&mut *tx).await?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_past_are_looked_for_until_filled_or_given_up() {
        let start = Instant::now();
        let mut holes = Holes::default();
        let mut seen = 10;
        // 11 and 13 read: 12 is a hole.
        holes.note(&mut seen, 11, start);
        holes.note(&mut seen, 13, start);
        assert_eq!((seen, holes.positions()), (13, vec![12]));
        // 12 commits late and is read: no hole left, seen stays.
        holes.note(&mut seen, 12, start);
        assert_eq!((seen, holes.positions()), (13, vec![]));
        // 14 to 16 skipped by 17 are given up on after the patience.
        holes.note(&mut seen, 17, start);
        assert_eq!(holes.positions(), vec![14, 15, 16]);
        holes.expire(start + HOLE_PATIENCE / 2);
        assert_eq!(holes.positions(), vec![14, 15, 16]);
        holes.expire(start + HOLE_PATIENCE);
        assert_eq!(holes.positions(), Vec::<i64>::new());
        // A jump past many positions keeps at most MAX_HOLES of them.
        holes.note(&mut seen, 17 + 10 * MAX_HOLES as i64, start);
        assert_eq!(holes.positions().len(), MAX_HOLES);
    }
}
