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

use eventstore::trace::TraceParent;
use tracing::Instrument;

use crate::gateway::GatewayAnswer;
use crate::store::Extra;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::consume::Delivery;
use super::*;
use crate::facts::{fact_of, source_of, start_of};

/// How many reports wait for the orchestrator before new ones are left to
/// their Kafka copies.
const INBOX: usize = 4096;

/// What this process reports to its orchestrator.
#[derive(Debug)]
pub enum Reported {
    /// Events it appended that may concern the saga of `order_id`.
    Events {
        /// The saga.
        order_id: Uuid,
        /// Its correlation id.
        correlation_id: String,
        /// The events.
        events: Vec<Appended>,
        /// The trace the reporter was in (the saga continues it).
        trace: Option<TraceParent>,
    },
    /// The gateway's answer to the authorisation `key` of the order, not
    /// yet recorded: the saga records it in its next change.
    Answer {
        /// The saga.
        order_id: Uuid,
        /// The authorisation's idempotency key.
        key: String,
        /// The answer.
        answer: GatewayAnswer,
        /// The trace the reporter was in.
        trace: Option<TraceParent>,
    },
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
        let _ = self.0.try_send(Reported::Events {
            order_id,
            correlation_id: correlation_id.to_owned(),
            events,
            trace: eventstore::trace::current(),
        });
    }

    /// Hands the gateway's `answer` to the authorisation `key` of
    /// `order_id` to the orchestrator, which records it together with what
    /// it makes due. False when the orchestrator is not running or is
    /// behind: the caller then records it itself.
    pub fn answer(&self, order_id: Uuid, key: &str, answer: &GatewayAnswer) -> bool {
        self.0
            .try_send(Reported::Answer {
                order_id,
                key: key.to_owned(),
                answer: answer.clone(),
                trace: eventstore::trace::current(),
            })
            .is_ok()
    }
}

/// The saga an event this process appended concerns, and what it asks of
/// it: an `OrderPlaced` starts the saga (under `correlation_id`, the
/// request's), any other event states a fact (see [`fact_of`]).
fn delivery(
    event: Appended,
    correlation_id: &str,
) -> Result<Option<(Uuid, Delivery)>, domain::EventDecodeError> {
    let stream_type = eventstore::stream_type(&event.stream_id);
    let (schema, data) = (event.schema_version, event.data.clone());
    let started = start_of(stream_type, &event.event_type, schema, data, || {
        correlation_id.to_owned()
    })?;
    let (order_id, input) = match started {
        Some((order_id, start)) => (order_id, Input::Start(Box::new(start))),
        None => match fact_of(stream_type, &event.event_type, schema, event.data.clone())? {
            Some((order_id, fact)) => (order_id, Input::Fact(fact)),
            None => return Ok(None),
        },
    };
    let source = source_of(&event);
    Ok(Some((order_id, Delivery { source, input })))
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
                .filter_map(|event| match delivery(event, correlation_id) {
                    Ok(Some((id, delivery))) if id == order_id => Some(delivery),
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(%order_id, %error, "an event this process appended cannot be read as a fact");
                        None
                    }
                })
                .collect();
            let Some(first) = deliveries.first() else {
                return Ok(());
            };
            let mut cause = Cause::saga(first.source.event_id.to_string());
            cause.correlation_id = Some(correlation_id.to_owned());
            let new_saga = deliveries
                .iter()
                .any(|d| matches!(d.input, Input::Start(_)));
            match self.handle(order_id, &deliveries, cause, new_saga).await {
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
                    Some(report) => running.push(self.reported(report)),
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
        // Answers nobody will record now are recorded as they are (their
        // sagas go on from the Kafka copies); reported events only lose
        // their shortcut.
        inbox.close();
        while let Ok(report) = inbox.try_recv() {
            if let Reported::Answer {
                order_id,
                key,
                answer,
                ..
            } = report
            {
                if let Err(error) = self.record_alone(order_id, &key, &answer).await {
                    tracing::warn!(%order_id, %error, "recording a gateway answer at stop failed; the payment deadline will ask the gateway");
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Carries out one report, in the trace its reporter was in.
    async fn reported(&self, report: Reported) -> Result<(), SagaError> {
        let (order_id, trace) = match &report {
            Reported::Events {
                order_id, trace, ..
            }
            | Reported::Answer {
                order_id, trace, ..
            } => (*order_id, *trace),
        };
        let span = tracing::info_span!("saga_local", trace_id = tracing::field::Empty, %order_id);
        let trace = eventstore::trace::enter(&span, trace);
        span.record("trace_id", trace.trace_id().as_str());
        eventstore::trace::scope(trace, self.carry_report(report))
            .instrument(span)
            .await
    }

    async fn carry_report(&self, report: Reported) -> Result<(), SagaError> {
        match report {
            Reported::Events {
                order_id,
                correlation_id,
                events,
                ..
            } => self.continue_with(order_id, events, &correlation_id).await,
            Reported::Answer {
                order_id,
                key,
                answer,
                ..
            } => match self.record_answer(order_id, &key, &answer).await {
                Err(SagaError::Crashed) => Err(SagaError::Crashed),
                Err(error) => {
                    tracing::warn!(%order_id, %error, "recording a gateway answer with its saga failed; recording it alone");
                    if let Err(error) = self.record_alone(order_id, &key, &answer).await {
                        tracing::warn!(%order_id, %error, "recording a gateway answer failed; the payment deadline will ask the gateway");
                    }
                    Ok(())
                }
                Ok(()) => Ok(()),
            },
        }
    }

    /// Records the gateway's answer on the payment stream in the saga's
    /// next change, with what it makes due, then carries that out.
    async fn record_answer(
        &self,
        order_id: Uuid,
        key: &str,
        answer: &GatewayAnswer,
    ) -> Result<(), SagaError> {
        let loaded = self.sagas.load(order_id).await?;
        if !loaded.state.started {
            return Err(SagaError::Domain(domain::DomainError::not_found("saga")));
        }
        let (command, caused) = webhook::answer_command(&loaded.state, key, answer);
        let mut cause = Cause::saga(caused.command_id.to_string());
        cause.correlation_id = Some(loaded.state.correlation_id.clone());
        let inline = Inline {
            commands: &self.commands,
            config: &self.config,
            extra: vec![Extra {
                command,
                cause: caused,
                step: None,
            }],
            new_saga: false,
        };
        let timings = self.config.timings();
        let changed = self
            .sagas
            .change_with(
                order_id,
                &cause,
                |_, now| vec![SagaCommand::Advance { now, timings }],
                Some(&inline),
            )
            .await?;
        let recorded = changed.extras.first().copied().unwrap_or(false);
        let correlation = loaded.state.correlation_id.clone();
        self.carry_out(order_id, changed, correlation).await?;
        if !recorded {
            // The payment took it as a no-op (given before), or it told the
            // saga nothing new: recorded the usual way, idempotently.
            self.record_alone(order_id, key, answer).await?;
        }
        Ok(())
    }

    /// Records the gateway's answer on its own (the webhook's way), and
    /// continues the saga from what it appended.
    async fn record_alone(
        &self,
        order_id: Uuid,
        key: &str,
        answer: &GatewayAnswer,
    ) -> Result<(), SagaError> {
        let loaded = self.sagas.load(order_id).await?;
        let recorded = webhook::record(&self.commands, &loaded.state, key, answer).await?;
        self.continue_with(order_id, recorded, &loaded.state.correlation_id)
            .await
    }
}
