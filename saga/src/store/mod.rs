//! The saga's durable state: its event stream `saga-<order id>` and the
//! `saga_instances` row written in the same transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use commands::{Loaded, Repository};
use domain::saga::{SagaCommand, SagaEvent, Step};
use domain::{Aggregate, DomainEvent, Saga};
use eventstore::{
    AppendResult, EventMetadata, EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::SagaError;

mod inline;

use inline::{abandon, fold_completed, inline_steps, Done, INLINE_TRIES};
pub use inline::{Extra, Inline};

/// How many times a saga change is decided and appended before giving up.
const MAX_TRIES: u32 = 8;

/// Who changes a saga and why, recorded on the events.
#[derive(Debug, Clone)]
pub struct Cause {
    /// The acting user: `saga` for the orchestrator, an operator's subject.
    pub actor: String,
    /// The event (or request) this change reacts to.
    pub causation_id: String,
    /// The correlation id, when the saga does not know its own yet (at start).
    pub correlation_id: Option<String>,
}

impl Cause {
    /// The orchestrator, reacting to `causation_id`.
    pub fn saga(causation_id: impl Into<String>) -> Self {
        Cause {
            actor: "saga".into(),
            causation_id: causation_id.into(),
            correlation_id: None,
        }
    }
}

/// What one change of a saga recorded.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The saga after the change.
    pub saga: Saga,
    /// The events appended (empty when nothing changed).
    pub events: Vec<SagaEvent>,
    /// The stream version after the change.
    pub version: u64,
    /// The ids the events were stored under, one per event.
    pub event_ids: Vec<Uuid>,
    /// The step attempts whose command was carried out inside the change
    /// (and whose outcome the change already records): not to be sent.
    pub inline: Vec<(Step, u32)>,
    /// For each of [`Inline::extra`]: whether the change carried it out.
    pub extras: Vec<bool>,
}

impl Changed {
    /// A change that recorded nothing: `saga` as it is at `version`.
    fn nothing(saga: Saga, version: u64, inline: Option<&Inline<'_>>) -> Self {
        Changed {
            saga,
            events: Vec::new(),
            version,
            event_ids: Vec::new(),
            inline: Vec::new(),
            extras: no_extras(inline),
        }
    }
}

/// A saga change being decided: the state so far and its events, each
/// with the id it will be stored under (a step's command names the event
/// that started it as its cause).
struct Draft {
    saga: Saga,
    events: Vec<(SagaEvent, Uuid)>,
}

impl Draft {
    fn decide(&mut self, command: &SagaCommand) -> Result<(), SagaError> {
        for event in self.saga.decide(command)? {
            self.saga = std::mem::take(&mut self.saga).evolve(&event);
            self.events.push((event, Uuid::new_v4()));
        }
        Ok(())
    }
}

/// Loads and changes sagas.
#[derive(Clone)]
pub struct SagaStore {
    store: EventStore,
    repository: Arc<Repository<Saga>>,
}

/// The stream of the saga of `order_id`.
pub fn stream_id(order_id: Uuid) -> String {
    domain::stream_id::<Saga>(order_id)
}

impl SagaStore {
    /// Sagas over `store`, with a cache of recently used ones.
    pub fn new(store: EventStore) -> Self {
        SagaStore {
            repository: Arc::new(Repository::new(store.clone(), 100_000, 200)),
            store,
        }
    }

    /// The event store.
    pub fn events(&self) -> &EventStore {
        &self.store
    }

    /// The saga of `order_id` (the default state if it never started).
    pub async fn load(&self, order_id: Uuid) -> Result<Arc<Loaded<Saga>>, SagaError> {
        Ok(self.repository.load(&stream_id(order_id)).await?)
    }

    /// Decides the commands `plan` gives for the latest state, one after
    /// another on the evolving state, and appends what they record together
    /// with the saga's index row, in one transaction. On a version conflict
    /// (another orchestrator moved the saga) it reloads and decides again.
    /// A refusal of any command fails the whole change.
    pub async fn change(
        &self,
        order_id: Uuid,
        cause: &Cause,
        plan: impl Fn(&Saga, DateTime<Utc>) -> Vec<SagaCommand>,
    ) -> Result<Changed, SagaError> {
        self.change_with(order_id, cause, plan, None).await
    }

    /// [`SagaStore::change`], carrying out `inline` the steps the change
    /// starts that are plain commands (reserve, ship, confirm, release,
    /// cancel, ...): each command is decided on its stream's cached state,
    /// its events are observed as the saga's facts at once, what they make
    /// due is decided in turn, and everything (the saga's events, every
    /// command's events) is appended in one transaction over all the
    /// streams, all or nothing. A command refused here, or whose outcome
    /// would leave its step open, is left to the caller to send as usual;
    /// so are payment steps, which call the gateway first.
    #[tracing::instrument(skip_all, fields(%order_id))]
    pub async fn change_with(
        &self,
        order_id: Uuid,
        cause: &Cause,
        plan: impl Fn(&Saga, DateTime<Utc>) -> Vec<SagaCommand>,
        inline: Option<&Inline<'_>>,
    ) -> Result<Changed, SagaError> {
        let stream = stream_id(order_id);
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for_try(order_id, attempt, inline).await?;
            let now = Utc::now();
            let (draft, mut prepared) =
                decide_change(&loaded.state, &plan, inline, cause, now, attempt).await?;
            let Draft {
                mut saga,
                mut events,
            } = draft;
            if !prepared.is_empty() {
                fold_completed(&mut events, &prepared);
                // The state is what a replay of the stored events folds.
                saga = events
                    .iter()
                    .fold(loaded.state.clone(), |saga, (event, _)| saga.evolve(event));
            }
            if events.is_empty() && !prepared.is_empty() {
                // Commands whose events tell the saga nothing: sent as usual.
                abandon(std::mem::take(&mut prepared)).await;
            }
            if events.is_empty() {
                return Ok(Changed::nothing(saga, loaded.version, inline));
            }
            let new_events = to_new_events(&events);
            let appended = self
                .append(&Commit {
                    order_id,
                    before: &loaded,
                    after: &saga,
                    new_events: &new_events,
                    prepared: &prepared,
                    cause,
                    now,
                })
                .await;
            match appended {
                Ok(Some((after, positions))) => {
                    let version = after.version;
                    self.repository.remember(&stream, Arc::new(after)).await;
                    let (steps, extras) = carried_out(prepared, positions, inline).await;
                    let (events, event_ids) = events.into_iter().unzip();
                    return Ok(Changed {
                        saga,
                        events,
                        version,
                        event_ids,
                        inline: steps,
                        extras,
                    });
                }
                Ok(None) => {
                    abandon(prepared).await;
                    self.repository.forget(&stream).await;
                }
                Err(error) => {
                    abandon(prepared).await;
                    self.repository.forget(&stream).await;
                    return Err(error);
                }
            }
        }
        Err(SagaError::Contention(order_id))
    }

    /// The saga of `order_id` as try `attempt` of a change decides on it:
    /// the empty state, without reading the store, on the first try for a
    /// saga `inline` says is most likely new.
    async fn load_for_try(
        &self,
        order_id: Uuid,
        attempt: u32,
        inline: Option<&Inline<'_>>,
    ) -> Result<Arc<Loaded<Saga>>, SagaError> {
        if attempt == 0 && inline.is_some_and(|i| i.new_saga) {
            Ok(Arc::new(Loaded::default()))
        } else {
            self.load(order_id).await
        }
    }

    /// Appends the saga's new events expecting `before.version` and the
    /// `prepared` commands' events to their streams, all in one
    /// transaction, and upserts the index row; the saga after, and each
    /// prepared append's last position; `None` on a version conflict of
    /// any stream.
    async fn append(
        &self,
        commit: &Commit<'_>,
    ) -> Result<Option<(Loaded<Saga>, Vec<i64>)>, SagaError> {
        let Commit {
            order_id,
            before,
            after,
            new_events,
            prepared,
            cause,
            now,
        } = *commit;
        let stream = &stream_id(order_id);
        let metadata = metadata_of(cause, after);
        // The appends come first in the transaction and take every
        // stream's lock before writing, so no separate lock is needed.
        let mut tx = self.store.pool().begin().await?;
        let mut appends = vec![StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Exact(before.version),
            events: new_events,
        }];
        appends.extend(prepared.iter().map(|done| done.command.append()));
        let appended = self.append_streams(&mut tx, &appends, &metadata).await;
        let results = match appended {
            Ok(results) => results,
            Err(error) if error.is_conflict() => {
                let _ = tx.rollback().await;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        let result = results[0];
        let version = i64::try_from(result.version).unwrap_or(i64::MAX);
        upsert_instance(&mut tx, order_id, after, version, now).await?;
        tx.commit().await?;
        self.store.committed();
        let saga = Loaded {
            version: result.version,
            position: result.position,
            state: after.clone(),
        };
        Ok(Some((
            saga,
            results[1..].iter().map(|r| r.position).collect(),
        )))
    }

    /// Appends `appends` in `tx`: a lone stream through the single-stream
    /// append, several through the multi-stream one.
    async fn append_streams(
        &self,
        tx: &mut PgConnection,
        appends: &[StreamAppend<'_>],
        metadata: &serde_json::Value,
    ) -> Result<Vec<AppendResult>, StoreError> {
        if appends.len() == 1 {
            let only = appends[0];
            self.store
                .append_in(tx, only.stream_id, only.expected, only.events, metadata)
                .await
                .map(|result| vec![result])
        } else {
            self.store.append_many_in(tx, appends, metadata).await
        }
    }
}

/// What one try of a change appends and commits ([`SagaStore::append`]).
#[derive(Clone, Copy)]
struct Commit<'a> {
    /// The saga's order.
    order_id: Uuid,
    /// The saga as the try loaded it (its version is the expected one).
    before: &'a Loaded<Saga>,
    /// The saga after the change.
    after: &'a Saga,
    /// The change's events, as stored.
    new_events: &'a [NewEvent],
    /// The commands carried out inside the change.
    prepared: &'a [Done],
    /// Who changes the saga and why.
    cause: &'a Cause,
    /// The time of the change.
    now: DateTime<Utc>,
}

/// The metadata of a change's events: `cause`, under the saga's
/// correlation id unless the cause names one.
fn metadata_of(cause: &Cause, after: &Saga) -> serde_json::Value {
    let correlation = cause
        .correlation_id
        .clone()
        .unwrap_or_else(|| after.correlation_id.clone());
    EventMetadata {
        correlation_id: Some(correlation),
        causation_id: Some(cause.causation_id.clone()),
        user_id: Some(cause.actor.clone()),
        command_id: Some(Uuid::new_v4()),
        note: None,
        traceparent: eventstore::trace::next_hop(),
    }
    .to_value()
}

/// Upserts, in `tx`, the index row of the saga of `order_id` as it is
/// `after` the change at stream `version` (never over a later version).
async fn upsert_instance(
    tx: &mut PgConnection,
    order_id: Uuid,
    after: &Saga,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let last_error = after
        .current_step
        .as_ref()
        .and_then(|step| after.steps.get(step))
        .and_then(|s| s.error.clone());
    sqlx::query(
        "INSERT INTO saga_instances
             (order_id, status, step, version, wake_at, last_error, started_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (order_id) DO UPDATE SET
             status = EXCLUDED.status, step = EXCLUDED.step, version = EXCLUDED.version,
             wake_at = EXCLUDED.wake_at, last_error = EXCLUDED.last_error,
             updated_at = EXCLUDED.updated_at
         WHERE saga_instances.version < EXCLUDED.version",
    )
    .bind(order_id)
    .bind(after.status.as_str())
    .bind(after.current_step.as_ref().map(|s| s.label()))
    .bind(version)
    .bind(after.wake_at())
    .bind(last_error)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The saga's events as the event store takes them, each under the id it
/// was decided with.
fn to_new_events(events: &[(SagaEvent, Uuid)]) -> Vec<NewEvent> {
    events
        .iter()
        .map(|(e, id)| {
            let mut event = NewEvent::new(e.event_type(), e.schema_version(), e.to_data());
            event.event_id = *id;
            event
        })
        .collect()
}

/// The change decided on the saga `before`: `plan`'s commands, then, on
/// the first tries, the steps carried out inline, with the commands
/// prepared for them (abandoned if deciding fails).
async fn decide_change(
    before: &Saga,
    plan: &impl Fn(&Saga, DateTime<Utc>) -> Vec<SagaCommand>,
    inline: Option<&Inline<'_>>,
    cause: &Cause,
    now: DateTime<Utc>,
    attempt: u32,
) -> Result<(Draft, Vec<Done>), SagaError> {
    let mut draft = Draft {
        saga: before.clone(),
        events: Vec::new(),
    };
    for command in plan(&draft.saga, now) {
        draft.decide(&command)?;
    }
    let mut prepared = Vec::new();
    if let Some(inline) = inline.filter(|_| attempt < INLINE_TRIES) {
        let inlined =
            inline_steps(&mut draft, inline, cause, now, attempt == 0, &mut prepared).await;
        if let Err(error) = inlined {
            abandon(prepared).await;
            return Err(error);
        }
    }
    Ok((draft, prepared))
}

/// [`Changed::extras`] before anything is carried out: none of `inline`'s.
fn no_extras(inline: Option<&Inline<'_>>) -> Vec<bool> {
    inline.map_or_else(Vec::new, |i| vec![false; i.extra.len()])
}

/// After the commit: tells each prepared command where its events landed,
/// and answers the step attempts carried out and, for each of `inline`'s
/// extras, whether it was.
async fn carried_out(
    prepared: Vec<Done>,
    positions: Vec<i64>,
    inline: Option<&Inline<'_>>,
) -> (Vec<(Step, u32)>, Vec<bool>) {
    let mut steps = Vec::with_capacity(prepared.len());
    let mut extras = no_extras(inline);
    for (done, position) in prepared.into_iter().zip(positions) {
        done.command.committed(position).await;
        steps.extend(done.step);
        if let Some(k) = done.extra {
            extras[k] = true;
        }
    }
    (steps, extras)
}
