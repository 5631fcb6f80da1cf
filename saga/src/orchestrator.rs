//! The orchestrator: consumes the order, inventory, payment and shipment
//! topics as the consumer group `<prefix>.saga`, records what concerns each
//! saga, and carries out the steps that follows.
//!
//! For each message: one change of the saga (the fact observed and the
//! steps it makes due, in one append), then the steps, then (per batch)
//! the Kafka offsets. A crash anywhere redelivers the message; the fact is
//! then a duplicate (dropped, counted) and the steps, already recorded as
//! started, are sent again by the recovery pass at start-up or by the
//! timer: commands are idempotent by their deterministic ids, so nothing
//! is done twice. Deadlines and retries are due times in the saga's state,
//! mirrored into `saga_instances.wake_at`, which the timer scans: an
//! orchestrator restarted after a deadline still fires it, once (the
//! saga's expected version makes a second firing a no-op).

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use commands::{CausedBy, CommandHandler};
use domain::order::OrderEvent;
use domain::saga::{Fact, SagaCommand, SagaEvent, SourceRef, Step, StepStatus};
use domain::{DomainEvent, InventoryEvent, PaymentEvent, ShipmentEvent};
use eventstore::kafka::{envelope, Backoff, EventConsumer};
use eventstore::RecordedEvent;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::gateway::{PaymentGateway, RequestStatus};
use crate::steps::{self, payment_key};
use crate::store::{Cause, Changed, SagaStore};
use crate::webhook;
use crate::{SagaConfig, SagaError};

/// Counters and a fault hook, for tests, benchmarks and operators.
#[derive(Debug, Default)]
pub struct SagaProbe {
    /// Messages that concerned a saga and were recorded.
    pub observed: AtomicU64,
    /// Redelivered messages dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Messages that could not be read as events (logged as errors).
    pub discarded: AtomicU64,
    /// Step attempts carried out (sent, or re-sent).
    pub steps: AtomicU64,
    /// Step attempts that failed.
    pub failures: AtomicU64,
    /// Saga changes committed.
    pub changes: AtomicU64,
    /// When non-zero: once this many saga changes committed, the
    /// orchestrator stops with [`SagaError::Crashed`] before carrying out
    /// the steps of the last one or committing offsets (the test hook that
    /// stops it at a step boundary).
    pub crash_after_changes: AtomicU64,
}

/// The orchestrator of one process.
pub struct Orchestrator {
    sagas: SagaStore,
    commands: CommandHandler,
    gateway: Arc<dyn PaymentGateway>,
    config: SagaConfig,
    probe: Arc<SagaProbe>,
}

/// What a message asks of a saga.
enum Input {
    Start(SagaCommand),
    Fact(Fact),
}

impl Orchestrator {
    /// An orchestrator carrying out steps through `commands` and `gateway`.
    pub fn new(
        sagas: SagaStore,
        commands: CommandHandler,
        gateway: Arc<dyn PaymentGateway>,
        config: SagaConfig,
        probe: Arc<SagaProbe>,
    ) -> Arc<Self> {
        Arc::new(Orchestrator {
            sagas,
            commands,
            gateway,
            config,
            probe,
        })
    }

    /// Runs until `shutdown` resolves: re-sends the unanswered steps of
    /// every open saga once, then consumes and runs the timer. Database
    /// and broker errors are retried; it only fails on a configuration
    /// Kafka refuses, or on the test hook.
    ///
    /// Stopping is graceful: the consumer and the timer stop between
    /// batches and ticks, never inside a saga change or a step, so no
    /// transaction is cut off (a cut-off transaction would hold back every
    /// gap-free reader until its connection is reaped).
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), SagaError> {
        let mut shutdown = pin!(shutdown.fuse());
        let (group, topics) = (self.config.group_id(), self.config.topics());
        let consumer = tokio::select! {
            consumer = EventConsumer::subscribe(&self.config.kafka, &group, &topics) => consumer?,
            () = &mut shutdown => return Ok(()),
        };
        tracing::info!(group = %self.config.group_id(), "saga orchestrator started");
        self.recover().await?;
        let (stop, stopping) = watch::channel(false);
        let consume = self.consume(&consumer, stopping.clone());
        let timer = self.clone().timer(stopping);
        let (mut consume, mut timer) = (pin!(consume), pin!(timer));
        // Whichever ends first (the hook, or shutdown) stops the other at
        // its next boundary.
        let (consumed, timed) = tokio::select! {
            result = &mut consume => (Some(result), None),
            result = &mut timer => (None, Some(result)),
            () = &mut shutdown => (None, None),
        };
        let _ = stop.send(true);
        let consumed = match consumed {
            Some(result) => result,
            None => consume.await,
        };
        let timed = match timed {
            Some(result) => result,
            None => timer.await,
        };
        consumed.and(timed)
    }

    /// Consumes batches until `stopping` (checked between batches), or
    /// until the test hook fires.
    async fn consume(
        &self,
        consumer: &EventConsumer,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), SagaError> {
        loop {
            let batch = tokio::select! {
                batch = consumer.recv_batch(self.config.batch_size) => batch,
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            };
            let mut groups: Vec<(Uuid, Vec<(RecordedEvent, Input)>)> = Vec::new();
            let mut index: HashMap<Uuid, usize> = HashMap::new();
            for message in &batch {
                let event = match envelope::decode(message) {
                    Ok(event) => event,
                    Err(described) => {
                        self.probe.discarded.fetch_add(1, Ordering::Relaxed);
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
                        self.probe.discarded.fetch_add(1, Ordering::Relaxed);
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
        loop {
            match self.handle(order_id, event, &input).await {
                Ok(()) => return Ok(()),
                Err(SagaError::Crashed) => return Err(SagaError::Crashed),
                Err(SagaError::Domain(error)) => {
                    self.probe.discarded.fetch_add(1, Ordering::Relaxed);
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

    async fn handle(
        &self,
        order_id: Uuid,
        event: &RecordedEvent,
        input: &Input,
    ) -> Result<(), SagaError> {
        let mut cause = Cause::saga(event.event_id.to_string());
        cause.correlation_id = text(&event.metadata, "correlation_id");
        let source = SourceRef {
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
        };
        let timings = self.config.timings();
        let changed = self
            .sagas
            .change(order_id, &cause, |_, now| {
                let first = match input {
                    Input::Start(start) => start.clone(),
                    Input::Fact(fact) => SagaCommand::Observe {
                        source: source.clone(),
                        fact: fact.clone(),
                        now,
                    },
                };
                vec![first, SagaCommand::Advance { now, timings }]
            })
            .await?;
        if matches!(input, Input::Fact(_)) {
            let observed = changed
                .events
                .iter()
                .any(|e| matches!(e, SagaEvent::SagaEventObserved { .. }));
            let counter = if observed {
                &self.probe.observed
            } else {
                &self.probe.duplicates
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let correlation = cause
            .correlation_id
            .unwrap_or_else(|| changed.saga.correlation_id.clone());
        self.carry_out(order_id, changed, correlation).await
    }

    /// After a committed change: the crash hook, then every step the change
    /// started or rechecked, at once, under `correlation_id` (the one of
    /// the event that made them due); failures are recorded.
    async fn carry_out(
        &self,
        order_id: Uuid,
        changed: Changed,
        correlation_id: String,
    ) -> Result<(), SagaError> {
        if changed.events.is_empty() {
            return Ok(());
        }
        let changes = self.probe.changes.fetch_add(1, Ordering::Relaxed) + 1;
        let crash_at = self.probe.crash_after_changes.load(Ordering::Relaxed);
        if crash_at != 0 && changes >= crash_at {
            return Err(SagaError::Crashed);
        }
        let due: Vec<(Step, u32, Uuid, String)> = changed
            .events
            .iter()
            .zip(&changed.event_ids)
            .filter_map(|(event, event_id)| match event {
                SagaEvent::SagaStepStarted {
                    step,
                    attempt,
                    command_id,
                    ..
                } => Some((step.clone(), *attempt, *command_id, event_id.to_string())),
                SagaEvent::SagaStepRechecked { step, attempt, .. } => {
                    let command_id = changed.saga.steps.get(step)?.command_id?;
                    Some((step.clone(), *attempt, command_id, event_id.to_string()))
                }
                _ => None,
            })
            .collect();
        self.perform_all(order_id, &changed.saga, due, &correlation_id)
            .await
    }

    async fn perform_all(
        &self,
        order_id: Uuid,
        saga: &domain::Saga,
        due: Vec<(Step, u32, Uuid, String)>,
        correlation_id: &str,
    ) -> Result<(), SagaError> {
        if due.is_empty() {
            return Ok(());
        }
        let attempts =
            due.into_iter()
                .map(|(step, attempt, command_id, causation_id)| async move {
                    let cause = CausedBy {
                        command_id,
                        correlation_id: correlation_id.to_owned(),
                        causation_id,
                        actor: "saga".into(),
                    };
                    self.probe.steps.fetch_add(1, Ordering::Relaxed);
                    let result = steps::perform(
                        &self.commands,
                        self.gateway.as_ref(),
                        &self.config,
                        saga,
                        &step,
                        &cause,
                    )
                    .await;
                    (step, attempt, result)
                });
        let failed: Vec<(Step, u32, String)> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter_map(|(step, attempt, result)| result.err().map(|e| (step, attempt, e)))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        self.probe
            .failures
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        for (step, attempt, error) in &failed {
            tracing::warn!(%order_id, %step, attempt, %error, "a saga step failed");
        }
        let max_attempts = self.config.max_attempts;
        let (min, max) = (self.config.retry_min, self.config.retry_max);
        let failures: Vec<(Step, u32, String, u32)> = failed
            .into_iter()
            .map(|(step, attempt, error)| {
                let before = saga.steps.get(&step).map_or(0, |s| s.failures);
                (step, attempt, error, before + 1)
            })
            .collect();
        let mut cause = Cause::saga("step-failure");
        cause.correlation_id = Some(correlation_id.to_owned());
        self.sagas
            .change(order_id, &cause, |_, now| {
                failures
                    .iter()
                    .map(|(step, attempt, error, failures)| SagaCommand::Fail {
                        step: step.clone(),
                        attempt: *attempt,
                        error: error.clone(),
                        now,
                        retry_at: now + to_chrono(Backoff::delay_for_attempt(min, max, *failures)),
                        max_attempts,
                    })
                    .collect()
            })
            .await?;
        Ok(())
    }

    /// Re-sends, once, every unanswered step of every open saga: what a
    /// crash between recording a step and sending it left behind.
    async fn recover(&self) -> Result<(), SagaError> {
        let open: Vec<Uuid> = sqlx::query_scalar(
            "SELECT order_id FROM saga_instances WHERE status IN ('running', 'compensating')",
        )
        .fetch_all(self.sagas.events().pool())
        .await?;
        let count = open.len();
        let mut work = futures::stream::iter(open)
            .map(|order_id| async move {
                let loaded = self.sagas.load(order_id).await?;
                let saga = &loaded.state;
                let due: Vec<(Step, u32, Uuid, String)> = saga
                    .wanted()
                    .into_iter()
                    .filter_map(|step| {
                        let state = saga.steps.get(&step)?;
                        (state.status == StepStatus::Started).then(|| {
                            let command_id = state.command_id.unwrap_or_default();
                            (
                                step,
                                state.attempt,
                                command_id,
                                format!("recovery:{order_id}"),
                            )
                        })
                    })
                    .collect();
                self.perform_all(order_id, saga, due, &saga.correlation_id)
                    .await
            })
            .buffer_unordered(16);
        while let Some(result) = work.next().await {
            if let Err(error) = result {
                tracing::warn!(%error, "recovering a saga failed; the timer will retry it");
            }
        }
        tracing::info!(sagas = count, "saga recovery pass done");
        Ok(())
    }

    /// Every `sweep_interval`: the sagas whose deadline, retry or check is due.
    async fn timer(self: Arc<Self>, mut stopping: watch::Receiver<bool>) -> Result<(), SagaError> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.sweep_interval) => {}
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            }
            let due: Vec<Uuid> = match sqlx::query_scalar(
                "SELECT order_id FROM saga_instances WHERE wake_at <= now() ORDER BY wake_at LIMIT 256",
            )
            .fetch_all(self.sagas.events().pool())
            .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "the saga timer cannot read due sagas");
                    continue;
                }
            };
            let mut work = futures::stream::iter(due)
                .map(|order_id| {
                    let this = self.clone();
                    async move { (order_id, this.tick(order_id).await) }
                })
                .buffer_unordered(self.config.concurrency.max(1));
            let mut crashed = false;
            while let Some((order_id, result)) = work.next().await {
                match result {
                    Ok(()) => {}
                    Err(SagaError::Crashed) => crashed = true,
                    Err(error) => tracing::warn!(%order_id, %error, "a saga's timer tick failed"),
                }
            }
            if crashed {
                return Err(SagaError::Crashed);
            }
        }
    }

    /// One saga's due work: the payment deadline (asking the gateway first),
    /// then whatever else is due.
    pub async fn tick(&self, order_id: Uuid) -> Result<(), SagaError> {
        let now = Utc::now();
        let loaded = self.sagas.load(order_id).await?;
        let timings = self.config.timings();
        let cause = Cause::saga(format!("timer:{order_id}"));
        if let Some(attempt) = loaded.state.payment_overdue(now) {
            let step = Step::AuthorizePayment;
            let check_at = now + timings.step_check;
            let status = self.gateway.status(&payment_key(order_id)).await;
            let plan: Vec<SagaCommand> = match status {
                Ok(RequestStatus::Answered(answer)) => {
                    // It happened in time: record the answer, look again later.
                    webhook::record(
                        &self.commands,
                        &loaded.state,
                        &payment_key(order_id),
                        &answer,
                    )
                    .await?;
                    vec![SagaCommand::Recheck {
                        step,
                        attempt,
                        now,
                        check_at,
                    }]
                }
                Ok(RequestStatus::Pending | RequestStatus::Unknown) => vec![
                    SagaCommand::TimeOut { step, attempt, now },
                    SagaCommand::Advance { now, timings },
                ],
                Err(error) => {
                    tracing::warn!(%order_id, %error, "cannot ask the gateway about an overdue payment; asking again later");
                    let soon = now + to_chrono(self.config.retry_min);
                    vec![SagaCommand::Recheck {
                        step,
                        attempt,
                        now,
                        check_at: soon,
                    }]
                }
            };
            let changed = self
                .sagas
                .change(order_id, &cause, move |_, _| plan.clone())
                .await?;
            let correlation = changed.saga.correlation_id.clone();
            return self.carry_out(order_id, changed, correlation).await;
        }
        let changed = self
            .sagas
            .change(order_id, &cause, |_, now| {
                vec![SagaCommand::Advance { now, timings }]
            })
            .await?;
        let correlation = changed.saga.correlation_id.clone();
        self.carry_out(order_id, changed, correlation).await
    }
}

/// Which saga an event concerns and what it asks of it; `None` for events
/// that concern no saga (stock receipts, other stream types).
fn classify(event: &RecordedEvent) -> Result<Option<(Uuid, Input)>, domain::EventDecodeError> {
    let (event_type, version, data) = (
        event.event_type.as_str(),
        event.schema_version,
        event.data.clone(),
    );
    Ok(match event.stream_type.as_str() {
        "order" => match OrderEvent::from_stored(event_type, version, data)? {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
                currency,
                shipping_address,
                payment_method,
            } => Some((
                order_id,
                Input::Start(SagaCommand::Start {
                    order_id,
                    customer_id,
                    lines,
                    total,
                    currency,
                    shipping_address,
                    payment_method,
                    correlation_id: text(&event.metadata, "correlation_id")
                        .unwrap_or_else(|| event.event_id.to_string()),
                }),
            )),
            other => Fact::from_order(&other).map(|(id, fact)| (id, Input::Fact(fact))),
        },
        "inventory" => {
            Fact::from_inventory(&InventoryEvent::from_stored(event_type, version, data)?)
                .map(|(id, fact)| (id, Input::Fact(fact)))
        }
        "payment" => {
            let (id, fact) =
                Fact::from_payment(&PaymentEvent::from_stored(event_type, version, data)?);
            Some((id, Input::Fact(fact)))
        }
        "shipment" => {
            let (id, fact) =
                Fact::from_shipment(&ShipmentEvent::from_stored(event_type, version, data)?);
            Some((id, Input::Fact(fact)))
        }
        _ => None,
    })
}

/// Metadata `key` as text, if present.
fn text(metadata: &serde_json::Value, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}
