//! Continuing in-process: a saga reacts at once to the events that its own
//! steps, or this process's gateway callbacks, appended, instead of waiting
//! for their copies to come back through the relay and Kafka.
//!
//! Safe because a fact is recorded by (stream, version) whichever way it
//! arrives: the Kafka copy that follows is a duplicate, dropped like any
//! redelivery. And nothing depends on the shortcut: when it cannot be taken
//! (the change fails, the inbox is full, the process stops), the Kafka copy
//! is the fact's delivery, as it always was. Only facts another process
//! causes (the order placed through the API, an operator's notice, a gateway
//! answer recorded elsewhere) need Kafka on an order's critical path.

use commands::Appended;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::consume::Delivery;
use super::*;
use crate::facts::fact_of;

/// How many reports wait for the orchestrator before new ones are left to
/// their Kafka copies.
const INBOX: usize = 4096;

/// Events this process appended that may concern a saga.
#[derive(Debug)]
pub struct Reported {
    order_id: Uuid,
    correlation_id: String,
    events: Vec<Appended>,
}

/// Where a process reports events it appended to its orchestrator (e.g.
/// the webhook, after recording a gateway answer). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct LocalFacts(mpsc::Sender<Reported>);

impl LocalFacts {
    /// Reports `events` (appended for the saga of `order_id`) without
    /// waiting. Dropped when the orchestrator is not running or is behind:
    /// their Kafka copies are delivered as usual.
    pub fn report(&self, order_id: Uuid, correlation_id: &str, events: Vec<Appended>) {
        if events.is_empty() {
            return;
        }
        let _ = self.0.try_send(Reported {
            order_id,
            correlation_id: correlation_id.to_owned(),
            events,
        });
    }
}

/// A new inbox: its sending and receiving ends.
pub(super) fn inbox() -> (LocalFacts, mpsc::Receiver<Reported>) {
    let (sender, receiver) = mpsc::channel(INBOX);
    (LocalFacts(sender), receiver)
}

impl Orchestrator {
    /// Records what `events` (appended by this process) tell the saga of
    /// `order_id`, and carries out what that makes due, continuing with the
    /// events those steps append. Events of other sagas, and events that
    /// state no fact, are passed over. Only the test hook's crash is an
    /// error: any other failure leaves the facts to their Kafka copies.
    pub(super) fn continue_with<'a>(
        &'a self,
        order_id: Uuid,
        events: Vec<Appended>,
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SagaError>> {
        async move {
            let deliveries: Vec<Delivery> = events
                .into_iter()
                .filter_map(|event| {
                    let stream_type = event.stream_id.split('-').next().unwrap_or_default();
                    match fact_of(stream_type, &event.event_type, event.schema_version, event.data) {
                        Ok(Some((id, fact))) if id == order_id => Some(Delivery {
                            source: SourceRef {
                                event_id: event.event_id,
                                stream_id: event.stream_id,
                                version: event.version,
                                event_type: event.event_type,
                            },
                            input: Input::Fact(fact),
                        }),
                        Ok(_) => None,
                        Err(error) => {
                            tracing::warn!(%order_id, %error, "an event this process appended cannot be read as a fact");
                            None
                        }
                    }
                })
                .collect();
            let Some(first) = deliveries.first() else {
                return Ok(());
            };
            let mut cause = Cause::saga(first.source.event_id.to_string());
            cause.correlation_id = Some(correlation_id.to_owned());
            match self.handle(order_id, &deliveries, cause).await {
                Ok(()) => Ok(()),
                Err(SagaError::Crashed) => Err(SagaError::Crashed),
                Err(error) => {
                    tracing::warn!(%order_id, %error, "continuing a saga in-process failed; its facts arrive again through Kafka");
                    Ok(())
                }
            }
        }
        .boxed()
    }

    /// Continues the sagas this process reported events for, several at
    /// once, until `stopping` or the test hook; either way the continuations
    /// under way run to their end first, so no change is cut off.
    pub(super) async fn local(
        &self,
        inbox: &mut mpsc::Receiver<Reported>,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), SagaError> {
        let limit = self.config.concurrency.max(1);
        let mut running = futures::stream::FuturesUnordered::new();
        let (mut open, mut failure) = (true, None);
        while open || !running.is_empty() {
            tokio::select! {
                report = inbox.recv(), if open && running.len() < limit => match report {
                    Some(report) => running.push(async move {
                        self.continue_with(report.order_id, report.events, &report.correlation_id)
                            .await
                    }),
                    None => open = false,
                },
                Some(done) = running.next(), if !running.is_empty() => {
                    if let Err(error) = done {
                        failure.get_or_insert(error);
                        open = false;
                    }
                }
                _ = stopping.wait_for(|stop| *stop), if open => open = false,
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
