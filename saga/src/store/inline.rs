//! Carrying out, inside a saga change, the steps it starts that are plain
//! commands (see [`super::SagaStore::change_with`]).

use chrono::{DateTime, Utc};
use commands::{Appended, CausedBy, CommandHandler, Prepared, ProcessCommand};
use domain::saga::{Saga, SagaCommand, SagaEvent, Step, StepStatus};
use domain::{Aggregate, StreamKind};
use eventstore::stream_type;
use uuid::Uuid;

use super::{Cause, Draft};
use crate::{steps, SagaConfig, SagaError};

/// What a change may carry out inside its own transaction ([`SagaStore::change_with`]):
/// the steps it starts that are plain commands to another aggregate.
pub struct Inline<'a> {
    /// The commands' executors.
    pub commands: &'a CommandHandler,
    /// Settings (where to ship, step timings).
    pub config: &'a SagaConfig,
    /// Commands to carry out too, first: a started payment step's command
    /// once its gateway call succeeded, or a gateway answer to record.
    pub extra: Vec<Extra>,
    /// The saga is most likely new (its order was just placed): the first
    /// try decides on the empty state without reading the store; the
    /// expected version catches a saga that exists.
    pub new_saga: bool,
}

/// A command a change carries out besides the steps it starts.
#[derive(Debug, Clone)]
pub struct Extra {
    /// The command.
    pub command: ProcessCommand,
    /// Its cause (its deterministic id above all).
    pub cause: CausedBy,
    /// The started step attempt it completes, if any: it is carried out only
    /// if its outcome ends that step.
    pub step: Option<(Step, u32)>,
}

/// A command prepared inside a change: the step attempt it completes, or
/// the extra it is.
pub(super) struct Done {
    pub(super) step: Option<(Step, u32)>,
    pub(super) extra: Option<usize>,
    pub(super) command: Prepared,
}

/// Rounds of "commands decided → outcomes observed → next steps" one
/// change goes through at most.
const INLINE_ROUNDS: usize = 4;

/// Tries of a change that carry steps inline; later tries (the streams are
/// contended) leave them to the command layer's per-stream queues.
pub(super) const INLINE_TRIES: u32 = 2;

/// Decides, inside a change, the commands of the steps it started that are
/// plain commands (see [`SagaStore::change_with`]), and folds their outcomes
/// into the change: observed, then advanced, for a few rounds.
pub(super) async fn inline_steps(
    draft: &mut Draft,
    inline: &Inline<'_>,
    cause: &Cause,
    now: DateTime<Utc>,
    first_try: bool,
    prepared: &mut Vec<Done>,
) -> Result<(), SagaError> {
    let correlation_id = cause
        .correlation_id
        .clone()
        .unwrap_or_else(|| draft.saga.correlation_id.clone());
    let mut scanned = 0;
    for round in 0..INLINE_ROUNDS {
        // Each with the index of the extra it is, if it is one.
        let mut wanted: Vec<(Option<usize>, Extra)> = Vec::new();
        if round == 0 {
            wanted.extend(
                inline
                    .extra
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(k, e)| (Some(k), e)),
            );
        }
        wanted.extend(
            started_plain_steps(draft, inline.config, scanned, &correlation_id)
                .into_iter()
                .map(|e| (None, e)),
        );
        scanned = draft.events.len();
        let mut observed = Vec::new();
        for (extra, wanted) in wanted {
            let Some((command, facts)) =
                prepare_wanted(draft, inline, &wanted, prepared, now, first_try).await?
            else {
                continue;
            };
            observed.extend(facts);
            prepared.push(Done {
                step: wanted.step,
                extra,
                command,
            });
        }
        if observed.is_empty() {
            break;
        }
        for fact in &observed {
            draft.decide(fact)?;
        }
        draft.decide(&SagaCommand::Advance {
            now,
            timings: inline.config.timings(),
        })?;
    }
    Ok(())
}

/// The commands of the steps started by the draft's events from
/// `scanned` on that are plain commands (payment steps call the gateway
/// first), each caused by the event that started it.
fn started_plain_steps(
    draft: &Draft,
    config: &SagaConfig,
    scanned: usize,
    correlation_id: &str,
) -> Vec<Extra> {
    let mut started = Vec::new();
    for (event, event_id) in &draft.events[scanned..] {
        let SagaEvent::SagaStepStarted {
            step,
            attempt,
            command_id,
            ..
        } = event
        else {
            continue;
        };
        if steps::calls_gateway(step) {
            continue;
        }
        let Ok(Some(command)) = steps::command(config, &draft.saga, step) else {
            continue;
        };
        let cause = CausedBy {
            command_id: *command_id,
            correlation_id: correlation_id.to_owned(),
            causation_id: event_id.to_string(),
            actor: "saga".into(),
            traceparent: eventstore::trace::next_hop(),
        };
        let step = Some((step.clone(), *attempt));
        started.push(Extra {
            command,
            cause,
            step,
        });
    }
    started
}

/// Prepares the `wanted` command inside the change: the prepared command
/// and the facts its events state, or `None` when it is left to be sent
/// as usual (its stream already has a command in this change, it is
/// refused or a no-op, or its step would stay open).
async fn prepare_wanted(
    draft: &Draft,
    inline: &Inline<'_>,
    wanted: &Extra,
    prepared: &[Done],
    now: DateTime<Utc>,
    first_try: bool,
) -> Result<Option<(Prepared, Vec<SagaCommand>)>, SagaError> {
    let Extra {
        command,
        cause,
        step,
    } = wanted;
    // One command per stream and change: a second would be decided
    // on a state that misses the first.
    if prepared
        .iter()
        .any(|done| done.command.stream_id() == command.stream_id())
    {
        return Ok(None);
    }
    // An order's payment and shipment streams begin with what its
    // saga does: one the saga never heard of is most likely new (the
    // expected version catches one that is not; the retry reads it).
    let stream = command.stream_id();
    let new = first_try
        && matches!(
            StreamKind::of(&stream),
            Some(StreamKind::Payment | StreamKind::Shipment)
        )
        && !draft.saga.seen.contains_key(&stream);
    // Refused (perhaps on a stale cache) or a no-op: sent as usual.
    let Ok(Some(command)) = inline.commands.prepare(command, cause, new).await else {
        return Ok(None);
    };
    let facts = facts_of(draft.saga.order_id, &command.appended(), now);
    // A step must end with what its command appended; if it would
    // stay open it is sent as usual, under its idempotency key.
    if let Some((step, attempt)) = step {
        if stays_open(&draft.saga, &facts, step, *attempt)? {
            command.abandoned().await;
            return Ok(None);
        }
    }
    Ok(Some((command, facts)))
}

/// Whether attempt `attempt` of `step` would still be started once `saga`
/// observed `facts`.
fn stays_open(
    saga: &Saga,
    facts: &[SagaCommand],
    step: &Step,
    attempt: u32,
) -> Result<bool, SagaError> {
    let mut trial = saga.clone();
    for fact in facts {
        for event in trial.decide(fact)? {
            trial = trial.evolve(&event);
        }
    }
    Ok(trial
        .steps
        .get(step)
        .is_some_and(|s| s.attempt == attempt && s.status == StepStatus::Started))
}

/// The facts `events` (appended for the saga of `order_id`) state, as
/// commands to observe them.
fn facts_of(order_id: Uuid, events: &[Appended], now: DateTime<Utc>) -> Vec<SagaCommand> {
    events
        .iter()
        .filter_map(|event| {
            let (id, fact) = crate::facts::fact_of(
                stream_type(&event.stream_id),
                &event.event_type,
                event.schema_version,
                event.data.clone(),
            )
            .ok()
            .flatten()?;
            (id == order_id).then(|| SagaCommand::Observe {
                source: crate::facts::source_of(event),
                fact,
                now,
            })
        })
        .collect()
}

/// Forgets what prepared commands may have left stale.
pub(super) async fn abandon(prepared: Vec<Done>) {
    for done in prepared {
        done.command.abandoned().await;
    }
}

/// Folds each step carried out inside the change into one
/// [`SagaEvent::SagaStepCompleted`]: its `SagaStepStarted` (whose id the
/// command's events name as their cause, and which the folded event keeps)
/// and the `SagaEventObserved` of the command's own answer become one event,
/// at the start's place. Whatever else the change recorded stays as it was.
/// The two events touch only the step, its source stream and its fact,
/// which nothing between them touches (one command per stream and change),
/// so the state a replay folds is the one the change decided on.
pub(super) fn fold_completed(events: &mut Vec<(SagaEvent, Uuid)>, prepared: &[Done]) {
    for done in prepared {
        let Some((step, attempt)) = &done.step else {
            continue;
        };
        let answers = done.command.appended();
        let observed = events.iter().position(|(event, _)| {
            matches!(event, SagaEvent::SagaEventObserved { source, fact, .. }
                if answers.iter().any(|a| a.event_id == source.event_id)
                    && fact.answers().is_some_and(|(answered, _)| answered == *step))
        });
        let started = events.iter().position(|(event, _)| {
            matches!(event, SagaEvent::SagaStepStarted { step: s, attempt: a, .. }
                if s == step && a == attempt)
        });
        let (Some(started), Some(observed)) = (started, observed) else {
            continue;
        };
        if observed < started {
            continue;
        }
        let (SagaEvent::SagaEventObserved { source, fact, .. }, _) = events.remove(observed) else {
            continue;
        };
        if let SagaEvent::SagaStepStarted { command_id, at, .. } = events[started].0 {
            events[started].0 = SagaEvent::SagaStepCompleted {
                step: step.clone(),
                attempt: *attempt,
                command_id,
                at,
                source,
                fact,
            };
        }
    }
}
