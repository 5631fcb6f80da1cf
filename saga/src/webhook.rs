//! The gateway's callbacks ("webhook"): each answer is recorded on the
//! order's payment stream, where the saga learns it like any other fact.
//! Recording is idempotent (a deterministic command id per answer), so a
//! callback repeated, or answered again after a status check, records once.
//! A late approval (after the saga gave up) is recorded too: the saga then
//! voids it, it is never ignored.

use std::future::Future;
use std::pin::pin;

use commands::{Appended, CausedBy, CommandHandler, ProcessCommand};
use domain::saga::Step;
use domain::{PaymentCommand, Saga};
use futures::FutureExt;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use crate::gateway::{Callback, GatewayAnswer};
use crate::{LocalFacts, SagaError, SagaStore};

/// Records `answer` to the authorisation `key` of `saga`'s order on its
/// payment stream: the events appended (none when it was recorded before).
pub async fn record(
    commands: &CommandHandler,
    saga: &Saga,
    key: &str,
    answer: &GatewayAnswer,
) -> Result<Vec<Appended>, SagaError> {
    let (command, cause) = answer_command(saga, key, answer);
    let outcome = commands.dispatch(command, &cause).await?;
    Ok(outcome.events)
}

/// The payment command that records `answer` to the authorisation `key` of
/// `saga`'s order, and its cause: a deterministic command id per answer,
/// so an answer given twice records once (the payment, too, takes the same
/// answer again as a no-op).
pub fn answer_command(
    saga: &Saga,
    key: &str,
    answer: &GatewayAnswer,
) -> (ProcessCommand, CausedBy) {
    let order_id = saga.order_id;
    let (name, command) = match answer {
        GatewayAnswer::Approved { authorization_id } => (
            format!("approved:{authorization_id}"),
            PaymentCommand::AuthorizePayment {
                order_id,
                amount: saga.total,
                currency: saga.currency.clone(),
                authorization_id: authorization_id.clone(),
            },
        ),
        GatewayAnswer::Declined { reason } => (
            format!("declined:{reason}"),
            PaymentCommand::DeclinePayment {
                order_id,
                reason: reason.clone(),
            },
        ),
    };
    let causation_id = saga
        .steps
        .get(&Step::AuthorizePayment)
        .and_then(|s| s.command_id)
        .map_or_else(|| key.to_owned(), |id| id.to_string());
    let cause = CausedBy {
        command_id: Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("gateway:{key}:{name}").as_bytes(),
        ),
        correlation_id: saga.correlation_id.clone(),
        causation_id,
        actor: "payment-gateway".into(),
        traceparent: None,
    };
    (ProcessCommand::Payment { order_id, command }, cause)
}

/// Records every callback from `callbacks` until `shutdown` resolves or the
/// gateway goes away. With `local` (this process's orchestrator, if it runs
/// one) the orchestrator records each answer in the saga's next change,
/// together with what it makes due; when it cannot take it, the answer is
/// recorded here and what was appended is reported to it, so that the
/// saga goes on at once. A callback whose saga cannot be read, or whose answer cannot be
/// recorded for now, is retried a few times; after that the payment
/// step's deadline asks the gateway again.
pub async fn run(
    sagas: SagaStore,
    commands: CommandHandler,
    mut callbacks: UnboundedReceiver<Callback>,
    local: Option<LocalFacts>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown.fuse());
    loop {
        let callback = tokio::select! {
            callback = callbacks.recv() => match callback {
                Some(callback) => callback,
                None => return,
            },
            () = &mut shutdown => return,
        };
        let sagas = sagas.clone();
        let commands = commands.clone();
        let local = local.clone();
        tokio::spawn(async move { deliver(&sagas, &commands, local, callback).await });
    }
}

async fn deliver(
    sagas: &SagaStore,
    commands: &CommandHandler,
    local: Option<LocalFacts>,
    callback: Callback,
) {
    // This process's orchestrator records it with the saga's next change.
    if local.as_ref().is_some_and(|local| {
        local.answer(
            callback.order_id,
            &callback.idempotency_key,
            &callback.answer,
        )
    }) {
        return;
    }
    let mut backoff = eventstore::kafka::Backoff::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(2),
    );
    for _ in 0..8 {
        let result = async {
            let saga = sagas.load(callback.order_id).await?;
            if !saga.state.started {
                return Err(SagaError::Domain(domain::DomainError::not_found("saga")));
            }
            let recorded = record(
                commands,
                &saga.state,
                &callback.idempotency_key,
                &callback.answer,
            )
            .await?;
            Ok((saga.state.correlation_id.clone(), recorded))
        }
        .await;
        match result {
            Ok((correlation_id, recorded)) => {
                if let Some(local) = &local {
                    local.report(callback.order_id, &correlation_id, recorded);
                }
                return;
            }
            Err(error) => {
                tracing::warn!(order_id = %callback.order_id, %error, "recording a gateway callback failed; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
    tracing::error!(order_id = %callback.order_id, "gave up recording a gateway callback; the payment deadline will ask the gateway");
}
