//! Appending events: validation, the optimistic concurrency check, the hash
//! chain and the insert, all inside the caller's transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::hash::{self, EventContent};
use crate::model::{AppendResult, ExpectedVersion, NewEvent};
use crate::{StoreError, MAX_EVENT_BYTES, MAX_STREAM_ID_LEN};

/// Checks an append's input; nothing is written when this fails. Answers
/// the size of the events' serialized data in bytes.
pub(crate) fn validate(
    stream_id: &str,
    events: &[NewEvent],
    metadata: &Value,
) -> Result<usize, StoreError> {
    validate_stream_id(stream_id)?;
    if events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    if !metadata.is_object() {
        return Err(StoreError::InvalidMetadata);
    }
    if contains_nul(metadata) {
        return Err(StoreError::InvalidEvent {
            index: 0,
            reason: "metadata contains a NUL character".into(),
        });
    }
    let mut total = 0;
    for (index, event) in events.iter().enumerate() {
        if let Some(own) = &event.metadata {
            if !own.is_object() {
                return Err(StoreError::InvalidMetadata);
            }
            if contains_nul(own) {
                return Err(StoreError::InvalidEvent {
                    index,
                    reason: "metadata contains a NUL character".into(),
                });
            }
        }
        if event.event_type.is_empty() || event.event_type.len() > 200 {
            return Err(StoreError::InvalidEvent {
                index,
                reason: "event type must be 1 to 200 bytes".into(),
            });
        }
        let size = serde_json::to_vec(&event.data)
            .map_err(|e| StoreError::InvalidEvent {
                index,
                reason: e.to_string(),
            })?
            .len();
        if size > MAX_EVENT_BYTES {
            return Err(StoreError::EventTooLarge {
                index,
                size,
                limit: MAX_EVENT_BYTES,
            });
        }
        if contains_nul(&event.data) || event.event_type.contains('\0') {
            return Err(StoreError::InvalidEvent {
                index,
                reason: "contains a NUL character, which Postgres cannot store".into(),
            });
        }
        total += size;
    }
    Ok(total)
}

/// A stream id is 1 to [`MAX_STREAM_ID_LEN`] bytes without control characters.
pub fn validate_stream_id(stream_id: &str) -> Result<(), StoreError> {
    if stream_id.is_empty() {
        return Err(StoreError::InvalidStreamId("empty".into()));
    }
    if stream_id.len() > MAX_STREAM_ID_LEN {
        return Err(StoreError::InvalidStreamId(format!(
            "{} bytes; the limit is {MAX_STREAM_ID_LEN}",
            stream_id.len()
        )));
    }
    if stream_id.chars().any(char::is_control) {
        return Err(StoreError::InvalidStreamId(
            "contains a control character".into(),
        ));
    }
    Ok(())
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The stream type of `<type>-<id>`: the part before the first `-`.
pub fn stream_type(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(t, _)| t)
}

/// Appends `events` to `stream_id` inside the caller's transaction.
///
/// Holds the stream's append lock until the transaction ends, so appends to
/// one stream serialize and the loser of a race sees the winner's version.
/// Input is validated first: on any error nothing has been written (roll the
/// transaction back after an error).
///
/// Readers tail the store in (transaction id, position) order, so a
/// stream's events must also be in transaction-id order. The lock is a
/// transaction-scoped advisory lock taken *before* the transaction gets an
/// id, so a fresh transaction always gets a larger id than the stream's
/// previous writer. A transaction that wrote something else before
/// appending (and so got its id earlier) may find a younger transaction has
/// appended to the stream meanwhile; that append fails with
/// [`StoreError::TransactionOrder`], which is safe to retry in a new
/// transaction. Take [`lock_stream`] first to avoid it.
#[tracing::instrument(skip(conn, events, metadata), fields(events = events.len()))]
pub async fn append_in(
    conn: &mut PgConnection,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    metadata: &Value,
) -> Result<AppendResult, StoreError> {
    let append = OneAppend::validated(stream_id, expected, events, metadata)?;
    let (result, _) = append.onto(conn, StreamHead::EMPTY).await?;
    Ok(result)
}

/// One append to one stream, validated, as the store's append paths hand
/// it to [`OneAppend::onto`].
pub(crate) struct OneAppend<'a> {
    pub stream_id: &'a str,
    pub expected: ExpectedVersion,
    pub events: &'a [NewEvent],
    pub metadata: &'a Value,
    /// When its events are recorded (stamped once, kept by every call).
    pub recorded_at: DateTime<Utc>,
    /// The size of its events and metadata (see `validate`).
    pub bytes: usize,
}

impl<'a> OneAppend<'a> {
    /// The append of `events` to `stream_id`, after checking its input
    /// (nothing is written when that fails), recorded now.
    pub(crate) fn validated(
        stream_id: &'a str,
        expected: ExpectedVersion,
        events: &'a [NewEvent],
        metadata: &'a Value,
    ) -> Result<Self, StoreError> {
        let bytes = validate(stream_id, events, metadata)?;
        Ok(OneAppend {
            stream_id,
            expected,
            events,
            metadata,
            recorded_at: now_micros(),
            bytes,
        })
    }

    /// Writes the events hashed onto `base`, the head the caller guesses,
    /// in the transaction on `conn`: the first call of `fulcrum_append`
    /// takes the stream's lock; a stale guess costs a second call, which
    /// runs under the lock and cannot miss (a third covers a guess of the
    /// empty stream that was already stale). The result and the new head.
    pub(crate) async fn onto(
        &self,
        conn: &mut PgConnection,
        base: StreamHead,
    ) -> Result<(AppendResult, StreamHead), StoreError> {
        let mut base = base;
        for _ in 0..3 {
            match attempt(
                conn,
                self.stream_id,
                self.expected,
                base,
                self.events,
                self.metadata,
                self.recorded_at,
            )
            .await?
            {
                Attempt::Appended(result, head) => return Ok((result, head)),
                Attempt::Stale(head) => base = head,
            }
        }
        Err(StoreError::Corrupt(format!(
            "stream {} moved while its append lock was held: a writer bypassed the store",
            self.stream_id
        )))
    }
}

/// A stream's version and last hash: what the next event chains onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHead {
    pub version: u64,
    pub hash: [u8; 32],
}

impl StreamHead {
    /// The head of a stream with no events.
    pub const EMPTY: StreamHead = StreamHead {
        version: 0,
        hash: hash::GENESIS,
    };
}

/// What one call of `fulcrum_append` did.
pub(crate) enum Attempt {
    /// The events were written; the new head.
    Appended(AppendResult, StreamHead),
    /// Nothing was written: `base` was not the head; here is the head.
    Stale(StreamHead),
}

impl Attempt {
    /// What a row of `fulcrum_append` or `fulcrum_append_group` says of
    /// an append to `stream_id` expecting `expected`: written, stale, or
    /// the error a conflict or a transaction-order refusal is.
    pub(crate) fn from_row(
        row: &sqlx::postgres::PgRow,
        stream_id: &str,
        expected: ExpectedVersion,
    ) -> Result<Attempt, StoreError> {
        let outcome: String = row.try_get("outcome")?;
        let head = head_of(row, stream_id)?;
        match outcome.as_str() {
            "ok" => Ok(Attempt::Appended(
                AppendResult {
                    version: head.version,
                    position: row.try_get("last_position")?,
                    replayed: false,
                },
                head,
            )),
            "stale" => Ok(Attempt::Stale(head)),
            "conflict" => Err(conflict(stream_id, expected, head.version)),
            "tx_order" => Err(StoreError::TransactionOrder {
                stream_id: stream_id.to_owned(),
            }),
            other => Err(StoreError::Corrupt(format!(
                "an append function answered {other:?}"
            ))),
        }
    }
}

/// One call of the `fulcrum_append` database function (see the migration):
/// lock, check, and write the events chained onto `base` if `base` is the
/// head. Runs in the caller's transaction, or alone (autocommit) on a bare
/// connection, where the lock ends with the statement.
pub(crate) async fn attempt(
    conn: &mut PgConnection,
    stream_id: &str,
    expected: ExpectedVersion,
    base: StreamHead,
    events: &[NewEvent],
    metadata: &Value,
    recorded_at: DateTime<Utc>,
) -> Result<Attempt, StoreError> {
    let rows = Rows::build(stream_id, base, events, metadata, recorded_at);
    let expected_version = match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(v) => Some(to_i64(v)?),
    };
    let row = sqlx::query(
        "SELECT outcome, head_version, head_hash, last_position
         FROM fulcrum_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(stream_id)
    .bind(stream_type(stream_id))
    .bind(expected_version)
    .bind(to_i64(base.version)?)
    .bind(&base.hash[..])
    .bind(rows.metadata)
    .bind(recorded_at)
    .bind(rows.event_ids)
    .bind(rows.event_types)
    .bind(rows.schema_versions)
    .bind(rows.data)
    .bind(rows.hashes)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| map_unique_violation(e.into(), stream_id, expected))?;
    Attempt::from_row(&row, stream_id, expected)
}

/// Takes `stream_id`'s append lock for the rest of the transaction. Call it
/// before anything else in a transaction that writes other rows before
/// appending (an idempotency record, another stream), so that the
/// transaction's id is assigned after the lock is held.
pub async fn lock_stream(conn: &mut PgConnection, stream_id: &str) -> Result<(), StoreError> {
    validate_stream_id(stream_id)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(stream_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the append locks of every stream in `stream_ids` for the rest of
/// the transaction, in the one global order group commit uses (by lock
/// key), so that writers of overlapping sets of streams cannot deadlock.
/// Call it first in a transaction that appends to several streams: the
/// transaction's id is then assigned after every lock is held.
pub async fn lock_streams(conn: &mut PgConnection, stream_ids: &[&str]) -> Result<(), StoreError> {
    for stream_id in stream_ids {
        validate_stream_id(stream_id)?;
    }
    // unnest yields the sorted keys in order, one lock at a time.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM unnest((
             SELECT array_agg(DISTINCT hashtextextended(s, 0) ORDER BY hashtextextended(s, 0))
               FROM unnest($1::text[]) AS s)) AS k",
    )
    .bind(stream_ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) fn conflict(stream_id: &str, expected: ExpectedVersion, actual: u64) -> StoreError {
    StoreError::WrongExpectedVersion {
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}

/// A unique violation on (stream id, version) is a lost race, as in postgres-es.
pub(crate) fn map_unique_violation(
    err: StoreError,
    stream_id: &str,
    expected: ExpectedVersion,
) -> StoreError {
    if let StoreError::Database(sqlx::Error::Database(db)) = &err {
        match db.constraint() {
            Some("events_stream_id_version_key") => return conflict(stream_id, expected, 0),
            Some("events_event_id_key") => return StoreError::DuplicateEventId,
            _ => {}
        }
    }
    err
}

/// The events of one append as column arrays, with their hashes chained onto a base head.
pub(crate) struct Rows {
    pub event_ids: Vec<Uuid>,
    pub event_types: Vec<String>,
    pub schema_versions: Vec<i32>,
    pub data: Vec<Value>,
    pub metadata: Vec<Value>,
    pub hashes: Vec<Vec<u8>>,
    /// What the events were hashed onto.
    pub base: StreamHead,
    pub recorded_at: DateTime<Utc>,
}

impl Rows {
    pub(crate) fn build(
        stream_id: &str,
        base: StreamHead,
        events: &[NewEvent],
        metadata: &Value,
        recorded_at: DateTime<Utc>,
    ) -> Rows {
        let mut rows = Rows {
            event_ids: Vec::with_capacity(events.len()),
            event_types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            data: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
            hashes: Vec::with_capacity(events.len()),
            base,
            recorded_at,
        };
        for event in events {
            rows.metadata.push(event.merged_metadata(metadata));
            rows.event_ids.push(event.event_id);
            rows.event_types.push(event.event_type.clone());
            rows.schema_versions.push(event.schema_version as i32);
            rows.data.push(event.data.clone());
        }
        rows.chain_onto(stream_id, base);
        rows
    }

    /// Hashes the events again, as if appended onto `base`.
    pub(crate) fn chain_onto(&mut self, stream_id: &str, base: StreamHead) {
        self.base = base;
        self.hashes.clear();
        let mut previous = base.hash;
        for i in 0..self.event_ids.len() {
            previous = hash::chain(
                &previous,
                &EventContent {
                    stream_id,
                    version: base.version + 1 + i as u64,
                    event_id: self.event_ids[i],
                    event_type: &self.event_types[i],
                    schema_version: self.schema_versions[i] as u32,
                    data: &self.data[i],
                    metadata: &self.metadata[i],
                    recorded_at: self.recorded_at,
                },
            );
            self.hashes.push(previous.to_vec());
        }
    }

    /// The head the stream has after these events, if `base` was its head.
    pub(crate) fn head_after(&self) -> StreamHead {
        let mut hash = self.base.hash;
        if let Some(last) = self.hashes.last() {
            hash.copy_from_slice(last);
        }
        StreamHead {
            version: self.base.version + self.event_ids.len() as u64,
            hash,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.event_ids.len()
    }
}

/// Now, truncated to the microsecond precision Postgres stores, so that the
/// hashed time equals the stored one.
pub(crate) fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The stream head an append function answered in its `head_version` and
/// `head_hash` columns (`fulcrum_append` and `fulcrum_append_group` alike).
pub(crate) fn head_of(
    row: &sqlx::postgres::PgRow,
    stream_id: &str,
) -> Result<StreamHead, StoreError> {
    Ok(StreamHead {
        version: to_u64(row.try_get("head_version")?)?,
        hash: row
            .try_get::<Vec<u8>, _>("head_hash")?
            .try_into()
            .map_err(|_| {
                StoreError::Corrupt(format!("stream {stream_id}: hash is not 32 bytes"))
            })?,
    })
}

pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative version {v}")))
}

pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v} out of range")))
}
