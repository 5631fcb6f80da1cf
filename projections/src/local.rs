//! The local feed: read models see this process's own writes at once,
//! ahead of their Kafka copies.
//!
//! After each commit of this process ([`EventStore::commit_signal`]) the
//! feed reads the events appended since it last looked and applies them to
//! the projections this process runs, each in one transaction, exactly as a
//! projector applies a Kafka batch ([`LiveBatch`], under the projection's
//! shared lock). The projectors stay the durable path: the copies they
//! receive later are duplicates ([`crate::Applied::Duplicate`]) and change
//! nothing. The feed only ever goes ahead of them where that is safe, and
//! leaves everything else to them:
//!
//! - a stream's events are applied in version order whoever applies them:
//!   where the read model lacks earlier versions, [`LiveBatch`] reads them
//!   from the store and applies them first, so "has position N" keeps its
//!   meaning;
//! - the feed reads by position, not gap-free: an event whose transaction
//!   commits late with a lower position may not be seen here (the
//!   projector applies it, or the feed does when the stream's next event
//!   comes);
//! - a projection that is not `running` (halted on a poison event, or
//!   being rebuilt) is not touched, and an event that does not decode or
//!   fit rolls the feed's transaction back, for the projector to dead-letter
//!   as its `FULCRUM_PROJECTION_ON_ERROR` says;
//! - a stream new to the read model that a projector claims first
//!   ([`ProjectionError::Contended`]) rolls back too.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use eventstore::trace::TraceParent;
use eventstore::{EventStore, RecordedEvent};
use futures::FutureExt;
use tracing::Instrument;

use crate::live::LiveBatch;
use crate::status::{self, Status};
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
    loop {
        loop {
            let events = match eventstore::read_after_position(store.pool(), seen, PAGE).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::debug!(%error, "local feed: reading new events");
                    break;
                }
            };
            let Some(last) = events.last() else { break };
            seen = last.global_position;
            for (projection, probe) in &projections {
                if let Err(error) = feed(&store, *projection, &events, probe).await {
                    tracing::debug!(%projection, %error, "local feed: left to the projector");
                }
            }
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
    let mine: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| projection.consumes(&e.stream_type))
        .collect();
    if mine.is_empty() {
        return Ok(0);
    }
    let schema = projection.live_schema();
    let mut tx = store.pool().begin().await?;
    status::lock_shared(&mut tx, projection).await?;
    if status::status_in(&mut tx, projection).await? != Status::Running {
        return Ok(0);
    }
    let streams = mine.iter().map(|e| e.stream_id.as_str());
    let mut live = LiveBatch::begin(&mut tx, projection, &schema, streams).await?;
    let mut applied = 0u64;
    for event in mine {
        // As a projector's: the event's trace goes on with its application.
        let trace = TraceParent::of_metadata(&event.metadata);
        let correlation_id = event
            .metadata
            .get("correlation_id")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        let span = projection_span(projection, event, trace, correlation_id);
        if live.apply(&mut tx, event).instrument(span.clone()).await? == Applied::Applied {
            applied += 1;
            span.in_scope(|| tracing::debug!(event_type = %event.event_type, "applied"));
        }
    }
    if applied == 0 {
        return Ok(0);
    }
    live.finish(&mut tx).await?;
    tx.commit().await?;
    probe.batches.inc();
    probe.applied.inc_by(applied);
    Ok(applied)
}
