//! Consuming: each message's saga change, then its steps.

use super::*;
use eventstore::EventMetadata;
use tracing::Instrument;

impl Orchestrator {
    /// Consumes batches until `stopping` (checked between batches), or
    /// until the test hook fires.
    pub(super) async fn consume(
        &self,
        consumer: &EventConsumer,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), SagaError> {
        loop {
            let batch = tokio::select! {
                batch = consumer.recv_batch(self.config.batch_size) => batch,
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            };
            self.probe
                .received
                .inc_by(eventstore::metrics::count(batch.len()));
            let mut groups: Vec<(Uuid, Vec<(RecordedEvent, Input)>)> = Vec::new();
            let mut index: HashMap<Uuid, usize> = HashMap::new();
            for message in &batch {
                let event = match envelope::decode(message) {
                    Ok(event) => event,
                    Err(described) => {
                        self.probe.discarded.inc();
                        tracing::error!(stream = %described.stream_id, event_id = %described.event_id,
                            "a message on a saga topic is not a Fulcrum event; discarded");
                        continue;
                    }
                };
                match classify(&event) {
                    Ok(Some((order_id, input))) => {
                        let at = *index.entry(order_id).or_insert_with(|| {
                            groups.push((order_id, Vec::new()));
                            groups.len() - 1
                        });
                        groups[at].1.push((event, input));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.probe.discarded.inc();
                        tracing::error!(event_id = %event.event_id, stream = %event.stream_id, %error,
                            "an event on a saga topic cannot be decoded; discarded");
                    }
                }
            }
            let watching = &stopping;
            let mut results = futures::stream::iter(groups)
                .map(|(order_id, inputs)| async move {
                    for (event, input) in inputs {
                        self.handle_retrying(order_id, &event, input, watching)
                            .await?;
                    }
                    Ok::<(), SagaError>(())
                })
                .buffer_unordered(self.config.concurrency.max(1));
            // Every group runs to a boundary, even when one stops on the
            // test hook, so that nothing is cut off mid-change.
            let mut failure = None;
            while let Some(result) = results.next().await {
                if let Err(error) = result {
                    failure.get_or_insert(error);
                }
            }
            drop(results);
            if let Some(error) = failure {
                return Err(error);
            }
            consumer.commit(&batch);
        }
    }

    /// [`Self::handle`], retried with backoff while the database fails
    /// (until the orchestrator is stopping: the batch is then redelivered
    /// to whoever consumes next).
    async fn handle_retrying(
        &self,
        order_id: Uuid,
        event: &RecordedEvent,
        input: Input,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), SagaError> {
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        let delivery = [Delivery {
            source: SourceRef {
                event_id: event.event_id,
                stream_id: event.stream_id.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
            },
            input,
        }];
        let mut cause = Cause::saga(event.event_id.to_string());
        let metadata = EventMetadata::of(&event.metadata);
        cause.correlation_id = metadata.correlation_id.clone();
        loop {
            let attempt = self.handle(order_id, &delivery, cause.clone(), false);
            let span = tracing::info_span!(
                "saga_event",
                trace_id = tracing::field::Empty,
                correlation_id = metadata.correlation_id.as_deref().unwrap_or_default(),
                %order_id,
                event_type = %event.event_type,
            );
            let parent = eventstore::trace::TraceParent::of_metadata(&event.metadata);
            let trace = eventstore::trace::enter(&span, parent);
            span.record("trace_id", trace.trace_id().as_str());
            let result = eventstore::trace::scope(trace, attempt)
                .instrument(span)
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(SagaError::Crashed) => return Err(SagaError::Crashed),
                Err(SagaError::Domain(error)) => {
                    self.probe.discarded.inc();
                    tracing::error!(%order_id, event_id = %event.event_id, %error, "the saga refused an event; discarded");
                    return Ok(());
                }
                Err(error) if *stopping.borrow() => return Err(error),
                Err(error) => {
                    let delay = backoff.next();
                    tracing::warn!(%order_id, %error, ?delay, "handling a saga event failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One change of the saga of `order_id`: the deliveries (a start, or
    /// facts; redeliveries are no-ops) and what they make due, in one
    /// append; then the steps that change started.
    ///
    /// `new_saga`: the deliveries start a saga that most likely does not
    /// exist yet (an order this process just placed), so the first try
    /// skips reading it (see [`Inline::new_saga`]).
    pub(super) async fn handle(
        &self,
        order_id: Uuid,
        deliveries: &[Delivery],
        cause: Cause,
        new_saga: bool,
    ) -> Result<(), SagaError> {
        let timings = self.config.timings();
        let inline = Inline {
            commands: &self.commands,
            config: &self.config,
            extra: Vec::new(),
            new_saga,
        };
        let changed = self
            .sagas
            .change_with(
                order_id,
                &cause,
                |_, now| {
                    let mut commands: Vec<SagaCommand> = deliveries
                        .iter()
                        .map(|delivery| match &delivery.input {
                            Input::Start(start) => start.as_ref().clone(),
                            Input::Fact(fact) => SagaCommand::Observe {
                                source: delivery.source.clone(),
                                fact: fact.clone(),
                                now,
                            },
                        })
                        .collect();
                    commands.push(SagaCommand::Advance { now, timings });
                    commands
                },
                Some(&inline),
            )
            .await?;
        // A delivered fact the change did not record was recorded before.
        let recorded = |d: &&Delivery| {
            changed.events.iter().any(|e| {
                e.observed()
                    .is_some_and(|s| s.event_id == d.source.event_id)
            })
        };
        let duplicates = deliveries
            .iter()
            .filter(|d| matches!(d.input, Input::Fact(_)))
            .filter(|d| !recorded(d))
            .count();
        self.probe
            .duplicates
            .inc_by(eventstore::metrics::count(duplicates));
        let correlation = cause
            .correlation_id
            .unwrap_or_else(|| changed.saga.correlation_id.clone());
        self.carry_out(order_id, changed, correlation).await
    }
}

/// A fact (or a start) for a saga, and the event that carried it.
pub(super) struct Delivery {
    /// The event.
    pub source: SourceRef,
    /// What it asks of the saga.
    pub input: Input,
}

/// Which saga an event concerns and what it asks of it; `None` for events
/// that concern no saga (stock receipts, other stream types).
fn classify(event: &RecordedEvent) -> Result<Option<(Uuid, Input)>, domain::EventDecodeError> {
    let (stream_type, event_type) = (event.stream_type.as_str(), event.event_type.as_str());
    let correlation_id = || {
        EventMetadata::of(&event.metadata)
            .correlation_id
            .unwrap_or_else(|| event.event_id.to_string())
    };
    let version = event.schema_version;
    if let Some((order_id, start)) = crate::facts::start_of(
        stream_type,
        event_type,
        version,
        event.data.clone(),
        correlation_id,
    )? {
        return Ok(Some((order_id, Input::Start(Box::new(start)))));
    }
    Ok(
        crate::facts::fact_of(stream_type, event_type, version, event.data.clone())?
            .map(|(id, fact)| (id, Input::Fact(fact))),
    )
}
