//! Commands under an idempotency key: each in a transaction of its own
//! that claims the key, appends and records the outcome together, so a
//! retry of the request gets the first outcome back.

use std::sync::Arc;

use domain::Aggregate;
use eventstore::idempotency::{self, Claim};
use eventstore::{ExpectedVersion, StoreError};
use serde_json::{json, Value};

use super::{to_new_events, Executor, Job};
use crate::repository::Loaded;
use crate::{Appended, CommandError, Outcome};

/// What one attempt of a keyed command came to.
enum Keyed<A: Aggregate> {
    /// Carried out; the state before and after, when events were appended.
    Done(Outcome, Option<(u64, Arc<Loaded<A>>)>),
    /// The key answered an earlier request.
    Replayed(Outcome),
    /// The stream moved; roll back and try again.
    Conflict,
}

impl<A: Aggregate> Executor<A> {
    /// One command under an idempotency key, in a transaction that claims
    /// the key, appends and records the outcome together.
    pub(super) async fn run_keyed(
        &self,
        stream_id: &str,
        job: &Job<A>,
    ) -> Result<Outcome, CommandError> {
        let mut fresh = false;
        for attempt in 0..self.config.max_tries {
            let assume_new = attempt == 0 && job.assume_new;
            // Load before the transaction takes its connection: a load that
            // misses the cache reads through the pool, and a command holding
            // one connection while it waits for a second would let a burst of
            // keyed commands on cold streams take every connection and wait
            // on each other. The expected version, checked under the stream
            // lock, catches a stream that moves in between.
            let loaded = self.load(stream_id, assume_new).await?;
            let mut tx = self.store.pool().begin().await?;
            match self.keyed_attempt(&mut tx, stream_id, job, loaded).await {
                Ok(Keyed::Done(outcome, after)) => {
                    tx.commit().await?;
                    if let Some((before, after)) = after {
                        self.store.committed();
                        self.remembered(stream_id, before, after).await;
                    }
                    return Ok(outcome);
                }
                Ok(Keyed::Replayed(outcome)) => {
                    tx.rollback().await?;
                    return Ok(outcome);
                }
                Ok(Keyed::Conflict) => {
                    tx.rollback().await?;
                    self.repository.forget(stream_id).await;
                }
                Err(CommandError::Domain(_)) if !fresh && !assume_new => {
                    // Refused on a possibly stale cached state: decide again
                    // on the store's state (see `run_batch`).
                    let _ = tx.rollback().await;
                    self.repository.forget(stream_id).await;
                    fresh = true;
                }
                Err(error) => {
                    // Release the key and the lock now, not when the pool reuses the connection.
                    let _ = tx.rollback().await;
                    return Err(error);
                }
            }
        }
        Err(CommandError::Contention {
            stream_id: stream_id.to_owned(),
            tries: self.config.max_tries,
        })
    }

    async fn keyed_attempt(
        &self,
        tx: &mut sqlx::PgConnection,
        stream_id: &str,
        job: &Job<A>,
        loaded: Arc<Loaded<A>>,
    ) -> Result<Keyed<A>, CommandError> {
        let Some(key) = &job.context.idempotency else {
            return Err(CommandError::Dropped);
        };
        // Lock first, so the transaction's id follows the stream lock.
        eventstore::lock_stream(tx, stream_id).await?;
        if let Claim::Replay(stored) = idempotency::claim(tx, &key.key, &key.request_hash).await? {
            return replayed(stored).map(Keyed::Replayed);
        }
        let state = loaded.state.clone();
        let events = state.decide(&job.command)?;
        let after_state = events.iter().fold(state, |s, e| s.evolve(e));
        let new_events = to_new_events(&events, &job.context);
        let mut after = None;
        let (version, position) = if new_events.is_empty() {
            (loaded.version, loaded.position)
        } else {
            let expected = ExpectedVersion::Exact(loaded.version);
            let appended = self
                .store
                .append_in(tx, stream_id, expected, &new_events, &json!({}))
                .await;
            match appended {
                Ok(result) => {
                    let state = Loaded {
                        version: result.version,
                        position: result.position,
                        state: after_state,
                    };
                    after = Some((loaded.version, Arc::new(state)));
                    (result.version, result.position)
                }
                Err(error) if error.is_conflict() => return Ok(Keyed::Conflict),
                Err(error) => return Err(error.into()),
            }
        };
        let outcome = Outcome {
            stream_id: stream_id.to_owned(),
            version,
            position,
            appended: new_events.len(),
            replayed: false,
            reply: job.reply.clone(),
            events: Appended::all(stream_id, version, &new_events),
        };
        let stored =
            serde_json::to_value(&outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        idempotency::record(tx, &key.key, &stored).await?;
        Ok(Keyed::Done(outcome, after))
    }
}

fn replayed(stored: Value) -> Result<Outcome, CommandError> {
    let mut outcome: Outcome = serde_json::from_value(stored)
        .map_err(|e| StoreError::Corrupt(format!("stored idempotency outcome: {e}")))?;
    outcome.replayed = true;
    outcome.appended = 0;
    Ok(outcome)
}
