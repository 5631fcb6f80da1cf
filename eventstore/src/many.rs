//! The multi-stream append ([`EventStore::append_many_in`]): every stream
//! of one change in one call of `fulcrum_append_group`, inside the
//! caller's transaction.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use crate::append::{now_micros, validate, Attempt, Rows, StreamHead};
use crate::flat::Flat;
use crate::model::AppendResult;
use crate::{EventStore, StoreError, StreamAppend};

/// Calls at most: the first hashes onto the heads this process last saw;
/// the second runs under every lock the first took, so it cannot find a
/// head moved again; the third only covers a guess of the empty stream
/// that was already stale.
const CALLS: usize = 3;

impl EventStore {
    /// Appends to several streams in the caller's transaction on `conn`,
    /// all or nothing, in one call of `fulcrum_append_group`: it takes
    /// every stream's lock in the global lock order group commit uses (so
    /// writers of overlapping sets of streams cannot deadlock), then
    /// appends each stream's events with its own expected version and hash
    /// chain. Appends whose head this process guessed wrong go again in a
    /// second call, under the locks. The first failure is returned (a
    /// conflict names its stream); the caller then rolls back and nothing
    /// is stored. One transaction, one commit: the caller commits, then
    /// calls [`EventStore::committed`]. Results are in the order of
    /// `appends`; `metadata` is every event's base metadata. Call it before
    /// anything else writes in the transaction, so that the transaction's
    /// id is assigned after the locks are held.
    pub async fn append_many_in(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend<'_>],
        metadata: &Value,
    ) -> Result<Vec<AppendResult>, StoreError> {
        for append in appends {
            validate(append.stream_id, append.events, metadata)?;
        }
        let recorded_at = now_micros();
        let mut guesses = self.first_guesses(appends);
        let mut results: Vec<Option<AppendResult>> = vec![None; appends.len()];
        for _ in 0..CALLS {
            let pending: Vec<usize> = (0..appends.len())
                .filter(|&i| results[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let answers = self
                .call_pending(conn, appends, &pending, &guesses, metadata, recorded_at)
                .await?;
            let restaled = self.settle(appends, &pending, &answers, &mut results)?;
            for (stream_id, head) in restaled {
                self.heads.insert(stream_id.to_owned(), head);
                guesses.insert(stream_id, head);
            }
        }
        all_appended(results, appends)
    }

    /// The head each stream's first pending append hashes onto.
    fn first_guesses<'a>(&self, appends: &[StreamAppend<'a>]) -> HashMap<&'a str, StreamHead> {
        let mut guesses: HashMap<&str, StreamHead> = HashMap::with_capacity(appends.len());
        for append in appends {
            guesses
                .entry(append.stream_id)
                .or_insert_with(|| self.guess(append.stream_id, append.expected));
        }
        guesses
    }

    /// One call of `fulcrum_append_group` with the `pending` appends,
    /// chained onto `guesses`: a row per pending append. On an error every
    /// pending stream's remembered head is forgotten.
    async fn call_pending(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend<'_>],
        pending: &[usize],
        guesses: &HashMap<&str, StreamHead>,
        metadata: &Value,
        recorded_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let (mut rows, roots) = chained(appends, pending, guesses, metadata, recorded_at);
        let events = rows.iter().map(Rows::len).sum();
        let flat = Flat::take(
            pending
                .iter()
                .zip(rows.iter_mut())
                .map(|(&i, rows)| (appends[i].stream_id, appends[i].expected, rows)),
            &roots,
            events,
        );
        match flat.call_group(conn).await {
            Ok(answers) => Ok(answers),
            Err(error) => {
                for &i in pending {
                    self.heads.invalidate(appends[i].stream_id);
                }
                Err(error.into())
            }
        }
    }

    /// Records the `answers` to the `pending` appends in `results` (and
    /// their new heads); per stream, the head its first stale append
    /// found, or the first error.
    fn settle<'a>(
        &self,
        appends: &[StreamAppend<'a>],
        pending: &[usize],
        answers: &[PgRow],
        results: &mut [Option<AppendResult>],
    ) -> Result<HashMap<&'a str, StreamHead>, StoreError> {
        // Per stream, the head its first stale append found: that
        // append and every later one of its stream go again (the
        // function judged those against a head the stale one did not
        // move, so their outcomes say nothing).
        let mut restaled: HashMap<&str, StreamHead> = HashMap::new();
        for (&i, answer) in pending.iter().zip(answers) {
            let append = appends[i];
            if restaled.contains_key(append.stream_id) {
                continue;
            }
            match Attempt::from_row(answer, append.stream_id, append.expected) {
                Ok(Attempt::Appended(result, head)) => {
                    self.heads.insert(append.stream_id.to_owned(), head);
                    results[i] = Some(result);
                }
                Ok(Attempt::Stale(head)) => {
                    restaled.insert(append.stream_id, head);
                }
                Err(error) => {
                    self.heads.invalidate(append.stream_id);
                    return Err(error);
                }
            }
        }
        Ok(restaled)
    }
}

/// Every append's result, in the order of `appends`; an append still
/// without one means its stream moved under the lock.
fn all_appended(
    results: Vec<Option<AppendResult>>,
    appends: &[StreamAppend<'_>],
) -> Result<Vec<AppendResult>, StoreError> {
    results
        .into_iter()
        .zip(appends)
        .map(|(result, append)| {
            result.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "stream {} moved while its append lock was held: a writer bypassed the store",
                    append.stream_id
                ))
            })
        })
        .collect()
}

/// The rows of the `pending` appends, each stream's first one hashed onto
/// its guessed head and every later one onto the head the one before it
/// leaves; and each append's root (the 1-based index, among `pending`, of
/// the first append to its stream).
fn chained(
    appends: &[StreamAppend<'_>],
    pending: &[usize],
    guesses: &HashMap<&str, StreamHead>,
    metadata: &Value,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> (Vec<Rows>, Vec<i32>) {
    let mut seen: HashMap<&str, (i32, StreamHead)> = HashMap::with_capacity(pending.len());
    let mut rows = Vec::with_capacity(pending.len());
    let mut roots = Vec::with_capacity(pending.len());
    for (k, &i) in pending.iter().enumerate() {
        let append = appends[i];
        let (root, base) = match seen.get(append.stream_id) {
            Some(&(root, head)) => (root, head),
            None => {
                let root = i32::try_from(k + 1).unwrap_or(i32::MAX);
                let guess = guesses
                    .get(append.stream_id)
                    .copied()
                    .unwrap_or(StreamHead::EMPTY);
                (root, guess)
            }
        };
        let built = Rows::build(append.stream_id, base, append.events, metadata, recorded_at);
        seen.insert(append.stream_id, (root, built.head_after()));
        rows.push(built);
        roots.push(root);
    }
    (rows, roots)
}
