//! The saga's durable state: its event stream `saga-<order id>` and the
//! `saga_instances` row written in the same transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use commands::{Loaded, Repository};
use domain::saga::{SagaCommand, SagaEvent};
use domain::{Aggregate, DomainEvent, Saga};
use eventstore::{EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use uuid::Uuid;

use crate::SagaError;

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
    #[tracing::instrument(skip_all, fields(%order_id))]
    pub async fn change(
        &self,
        order_id: Uuid,
        cause: &Cause,
        plan: impl Fn(&Saga, DateTime<Utc>) -> Vec<SagaCommand>,
    ) -> Result<Changed, SagaError> {
        let stream = stream_id(order_id);
        for _ in 0..MAX_TRIES {
            let loaded = self.load(order_id).await?;
            let now = Utc::now();
            let mut saga = loaded.state.clone();
            let mut events = Vec::new();
            for command in plan(&saga, now) {
                for event in saga.decide(&command)? {
                    saga = saga.evolve(&event);
                    events.push(event);
                }
            }
            if events.is_empty() {
                return Ok(Changed {
                    saga,
                    events,
                    version: loaded.version,
                    event_ids: Vec::new(),
                });
            }
            let new_events: Vec<NewEvent> = events
                .iter()
                .map(|e| NewEvent::new(e.event_type(), e.schema_version(), e.to_data()))
                .collect();
            let appended = self
                .append(order_id, &loaded, &saga, &new_events, cause, now)
                .await;
            match appended {
                Ok(Some(after)) => {
                    let version = after.version;
                    self.repository.remember(&stream, Arc::new(after)).await;
                    return Ok(Changed {
                        saga,
                        events,
                        version,
                        event_ids: new_events.iter().map(|e| e.event_id).collect(),
                    });
                }
                Ok(None) => self.repository.forget(&stream).await,
                Err(error) => {
                    self.repository.forget(&stream).await;
                    return Err(error);
                }
            }
        }
        Err(SagaError::Contention(order_id))
    }

    /// Appends `events` expecting `before.version`, and upserts the index
    /// row; `None` on a version conflict.
    async fn append(
        &self,
        order_id: Uuid,
        before: &Loaded<Saga>,
        after: &Saga,
        new_events: &[NewEvent],
        cause: &Cause,
        now: DateTime<Utc>,
    ) -> Result<Option<Loaded<Saga>>, SagaError> {
        let stream = &stream_id(order_id);
        let correlation = cause
            .correlation_id
            .clone()
            .unwrap_or_else(|| after.correlation_id.clone());
        let mut metadata = json!({
            "correlation_id": correlation,
            "causation_id": cause.causation_id,
            "user_id": cause.actor,
            "command_id": Uuid::new_v4(),
        });
        if let (Some(trace), Some(map)) = (eventstore::trace::next_hop(), metadata.as_object_mut())
        {
            map.insert(eventstore::trace::METADATA_KEY.into(), json!(trace));
        }
        // The append comes first in the transaction and takes the stream's
        // lock before writing, so no separate lock is needed.
        let mut tx = self.store.pool().begin().await?;
        let expected = ExpectedVersion::Exact(before.version);
        let appended = self
            .store
            .append_in(&mut tx, stream, expected, new_events, &metadata)
            .await;
        let result = match appended {
            Ok(result) => result,
            Err(error) if error.is_conflict() => {
                let _ = tx.rollback().await;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        let version = i64::try_from(result.version).unwrap_or(i64::MAX);
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
        tx.commit().await?;
        self.store.committed();
        Ok(Some(Loaded {
            version: result.version,
            position: result.position,
            state: after.clone(),
        }))
    }
}
