//! The timer (deadlines, retries, unanswered steps) and the recovery pass.

use super::*;
use crate::steps::gateway_keys;

impl Orchestrator {
    /// Re-sends, once, every unanswered step of every open saga: what a
    /// crash between recording a step and sending it left behind.
    pub(super) async fn recover(&self) -> Result<(), SagaError> {
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

    /// Every `sweep_interval`, until `stop` resolves: the sagas whose
    /// deadline, retry or check is due. Runs while this process holds the
    /// timer's single-active lock.
    pub(super) async fn timer(self: Arc<Self>, mut stop: StopSignal) -> Result<(), SagaError> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.sweep_interval) => {}
                () = &mut stop => return Ok(()),
            }
            self.probe.timer_sweeps.inc();
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
            let status = self
                .gateway
                .status(&gateway_keys::authorization(order_id))
                .await;
            let plan: Vec<SagaCommand> = match status {
                Ok(RequestStatus::Answered(answer)) => {
                    // It happened in time: record the answer, look again later.
                    let recorded = webhook::record(
                        &self.commands,
                        &loaded.state,
                        &gateway_keys::authorization(order_id),
                        &answer,
                    )
                    .await?;
                    self.local
                        .report(order_id, &loaded.state.correlation_id, recorded);
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
