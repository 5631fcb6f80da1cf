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
//!
//! Consumption scales with the consumer group, but the timer runs in one
//! process at a time ([`SingleActive`] role [`TIMER_ROLE`]): every process
//! would otherwise scan the same due sagas and ask the gateway about the
//! same overdue payment. A standby's timer takes over within about a
//! second when the holder's process stops or dies.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use commands::{CausedBy, CommandHandler, ProcessCommand};
use domain::saga::{Fact, SagaCommand, SagaEvent, SourceRef, Step, StepStatus};
use eventstore::kafka::{envelope, Backoff, EventConsumer};
use eventstore::leader::{SingleActive, StopSignal};
use eventstore::RecordedEvent;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::to_chrono;
use crate::gateway::{PaymentGateway, RequestStatus};
use crate::steps::{self, StepError};
use crate::store::{Cause, Changed, Extra, Inline, SagaStore};
use crate::webhook;
use crate::{SagaConfig, SagaError};

mod consume;
mod continuation;
mod probe;
mod timer;

pub use continuation::LocalFacts;
pub use probe::SagaProbe;

/// The [`SingleActive`] role name of the saga's timer.
pub const TIMER_ROLE: &str = "saga-timer";

/// The orchestrator of one process.
pub struct Orchestrator {
    sagas: SagaStore,
    commands: CommandHandler,
    gateway: Arc<dyn PaymentGateway>,
    config: SagaConfig,
    probe: Arc<SagaProbe>,
    local: LocalFacts,
    /// The receiving end of `local`, until [`Orchestrator::run`] takes it.
    inbox: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<continuation::Reported>>>,
}

/// What one step attempt came to.
enum Attempted {
    /// Carried out: the events its command appended.
    Done(Vec<commands::Appended>),
    /// A payment step's gateway call succeeded; its command is still to
    /// be appended.
    Called(ProcessCommand),
}

/// What a message asks of a saga.
enum Input {
    Start(Box<SagaCommand>),
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
        let (local, inbox) = continuation::inbox();
        Arc::new(Orchestrator {
            sagas,
            commands,
            gateway,
            config,
            probe,
            local,
            inbox: std::sync::Mutex::new(Some(inbox)),
        })
    }

    /// Where this process reports events it appended for a saga (the
    /// webhook's recorded gateway answers), so that the saga continues at
    /// once instead of waiting for their Kafka copies.
    pub fn local_facts(&self) -> LocalFacts {
        self.local.clone()
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
        // Taken while running and given back after, for a later run; a
        // second run at the same time continues through Kafka only.
        let mut inbox = self
            .inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| tokio::sync::mpsc::channel(1).1);
        self.recover().await?;
        let (stop, stopping) = watch::channel(false);
        let consume = self.consume(&consumer, stopping.clone());
        let mut local = Box::pin(self.local(&mut inbox, stopping.clone()));
        let timer = {
            let this = self.clone();
            let mut stopping = stopping;
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            SingleActive::new(self.sagas.events(), TIMER_ROLE)
                .run(stopped, move |stop: StopSignal| this.clone().timer(stop))
        };
        let (mut consume, mut timer) = (pin!(consume), pin!(timer));
        // Whichever ends first (the hook, or shutdown) stops the others at
        // their next boundary.
        let (mut consumed, mut continued, mut timed) = (None, None, None);
        tokio::select! {
            result = &mut consume => consumed = Some(result),
            result = &mut local => continued = Some(result),
            result = &mut timer => timed = Some(result),
            () = &mut shutdown => {}
        };
        let _ = stop.send(true);
        let consumed = match consumed {
            Some(result) => result,
            None => consume.await,
        };
        let continued = match continued {
            Some(result) => result,
            None => local.as_mut().await,
        };
        drop(local);
        let timed = match timed {
            Some(result) => result,
            None => timer.await,
        };
        *self
            .inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inbox);
        consumed.and(continued).and(timed)
    }

    /// After a committed change: the crash hook, then every step the change
    /// started or rechecked, at once, under `correlation_id` (the one of
    /// the event that made them due); failures are recorded.
    pub(super) async fn carry_out(
        &self,
        order_id: Uuid,
        changed: Changed,
        correlation_id: String,
    ) -> Result<(), SagaError> {
        if changed.events.is_empty() {
            return Ok(());
        }
        let changes = self.probe.changes.inc() + 1;
        let observed = changed
            .events
            .iter()
            .filter(|e| e.observed().is_some())
            .count();
        self.probe
            .observed
            .inc_by(eventstore::metrics::count(observed));
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
                } if !changed.inline.contains(&(step.clone(), *attempt)) => {
                    Some((step.clone(), *attempt, *command_id, event_id.to_string()))
                }
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

    pub(super) async fn perform_all(
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
                        traceparent: eventstore::trace::next_hop(),
                    };
                    self.probe.steps.inc();
                    let started = std::time::Instant::now();
                    let result = self.attempt(saga, &step, &cause).await;
                    self.probe
                        .step_done(step.name(), result.is_ok(), started.elapsed());
                    (step, attempt, cause, result)
                });
        let mut caused = Vec::new();
        let mut called = Vec::new();
        let mut failed: Vec<(Step, u32, String)> = Vec::new();
        for (step, attempt, cause, result) in futures::future::join_all(attempts).await {
            match result {
                Ok(Attempted::Done(events)) => caused.extend(events),
                Ok(Attempted::Called(command)) => called.push(Extra {
                    command,
                    cause,
                    step: Some((step, attempt)),
                }),
                Err(error) => failed.push((step, attempt, error.to_string())),
            }
        }
        let crash_at = self.probe.crash_after_steps.load(Ordering::Relaxed);
        if crash_at != 0 && self.probe.steps.get() >= crash_at {
            return Err(SagaError::Crashed);
        }
        if !failed.is_empty() {
            self.record_failures(order_id, saga, failed, correlation_id)
                .await?;
        }
        if !called.is_empty() {
            self.complete_called(order_id, called, correlation_id)
                .await?;
        }
        self.continue_with(order_id, caused, correlation_id).await
    }

    /// One attempt of `step`: a plain step is carried out (its command
    /// appended, answered with its events); a payment step calls the gateway,
    /// and its command is left to the saga's next change.
    async fn attempt(
        &self,
        saga: &domain::Saga,
        step: &Step,
        cause: &CausedBy,
    ) -> Result<Attempted, StepError> {
        let gateway = self.gateway.as_ref();
        if steps::calls_gateway(step) {
            if let Some(command) = steps::command(&self.config, saga, step)? {
                steps::call_gateway(gateway, saga, step).await?;
                return Ok(Attempted::Called(command));
            }
        }
        steps::perform(&self.commands, gateway, &self.config, saga, step, cause)
            .await
            .map(Attempted::Done)
    }

    /// Appends the commands of payment steps whose gateway call succeeded
    /// in the saga's next change, with what their outcomes make due, then
    /// carries that out. A command the change could not take is sent the
    /// usual way.
    fn complete_called<'a>(
        &'a self,
        order_id: Uuid,
        called: Vec<Extra>,
        correlation_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), SagaError>> {
        async move {
            let mut cause = Cause::saga(called[0].cause.causation_id.clone());
            cause.correlation_id = Some(correlation_id.to_owned());
            let timings = self.config.timings();
            let sends = called.clone();
            let inline = Inline {
                commands: &self.commands,
                config: &self.config,
                extra: called,
                new_saga: false,
            };
            let changed = self
                .sagas
                .change_with(
                    order_id,
                    &cause,
                    |_, now| vec![SagaCommand::Advance { now, timings }],
                    Some(&inline),
                )
                .await;
            let (done, changed) = match changed {
                Ok(changed) => (changed.extras.clone(), Some(changed)),
                Err(SagaError::Crashed) => return Err(SagaError::Crashed),
                Err(error) => {
                    tracing::warn!(%order_id, %error, "recording payment steps with the saga failed; sending their commands alone");
                    (vec![false; sends.len()], None)
                }
            };
            if let Some(changed) = changed {
                self.carry_out(order_id, changed, correlation_id.to_owned())
                    .await?;
            }
            let mut caused = Vec::new();
            let mut failed = Vec::new();
            for (Extra { command, cause, step }, done) in sends.into_iter().zip(done) {
                if done {
                    continue;
                }
                match self.commands.dispatch(command, &cause).await {
                    Ok(outcome) => caused.extend(outcome.events),
                    Err(error) => {
                        if let Some((step, attempt)) = step {
                            failed.push((step, attempt, error.to_string()));
                        }
                    }
                }
            }
            if !failed.is_empty() {
                let saga = self.sagas.load(order_id).await?;
                self.record_failures(order_id, &saga.state, failed, correlation_id)
                    .await?;
            }
            self.continue_with(order_id, caused, correlation_id).await
        }
        .boxed()
    }

    /// Records the failed attempts of steps of the saga of `order_id`.
    async fn record_failures(
        &self,
        order_id: Uuid,
        saga: &domain::Saga,
        failed: Vec<(Step, u32, String)>,
        correlation_id: &str,
    ) -> Result<(), SagaError> {
        self.probe
            .failures
            .inc_by(eventstore::metrics::count(failed.len()));
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
}
