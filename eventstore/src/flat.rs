//! Appends as the column arrays of `fulcrum_append_group` (see its
//! migration): the shape both group commit ([`crate::group`]) and the
//! multi-stream append ([`crate::EventStore::append_many_in`]) send. The
//! per-event columns are moved out of the appends' rows and back, never
//! copied.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::append::{stream_type, to_i64, Rows};
use crate::model::ExpectedVersion;

/// Appends as the function's column arrays.
#[derive(Default)]
pub(crate) struct Flat {
    pub(crate) stream_ids: Vec<String>,
    pub(crate) stream_types: Vec<String>,
    pub(crate) expected: Vec<Option<i64>>,
    pub(crate) base_versions: Vec<i64>,
    pub(crate) base_hashes: Vec<Vec<u8>>,
    pub(crate) roots: Vec<i32>,
    pub(crate) recorded_at: Vec<DateTime<Utc>>,
    pub(crate) counts: Vec<i32>,
    pub(crate) event_appends: Vec<i32>,
    pub(crate) event_versions: Vec<i64>,
    pub(crate) event_ids: Vec<Uuid>,
    pub(crate) event_types: Vec<String>,
    pub(crate) schema_versions: Vec<i32>,
    pub(crate) data: Vec<Value>,
    pub(crate) metadata: Vec<Value>,
    pub(crate) hashes: Vec<Vec<u8>>,
}

impl Flat {
    /// Takes the `events` events of `appends` (stream, expectation,
    /// rows), whose roots are `roots` (the 1-based index of the first
    /// append to the same stream).
    pub(crate) fn take<'r>(
        appends: impl Iterator<Item = (&'r str, ExpectedVersion, &'r mut Rows)>,
        roots: &[i32],
        events: usize,
    ) -> Flat {
        let mut flat = Flat {
            roots: roots.to_vec(),
            event_appends: Vec::with_capacity(events),
            event_versions: Vec::with_capacity(events),
            event_ids: Vec::with_capacity(events),
            event_types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            data: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            hashes: Vec::with_capacity(events),
            ..Flat::default()
        };
        for (i, (stream_id, expected, rows)) in appends.enumerate() {
            let n = rows.len();
            flat.stream_ids.push(stream_id.to_owned());
            flat.stream_types.push(stream_type(stream_id).to_owned());
            flat.expected.push(match expected {
                ExpectedVersion::Any => None,
                ExpectedVersion::NoStream => Some(0),
                // Beyond i64 no stream can be: a conflict.
                ExpectedVersion::Exact(v) => Some(to_i64(v).unwrap_or(-1)),
            });
            flat.base_versions
                .push(to_i64(rows.base.version).unwrap_or(-1));
            flat.base_hashes.push(rows.base.hash.to_vec());
            flat.recorded_at.push(rows.recorded_at);
            flat.counts.push(n as i32);
            let base = rows.base.version;
            flat.event_appends
                .extend(std::iter::repeat_n(i as i32 + 1, n));
            flat.event_versions
                .extend((1..=n as u64).map(|k| to_i64(base + k).unwrap_or(-1)));
            flat.event_ids.append(&mut rows.event_ids);
            flat.event_types.append(&mut rows.event_types);
            flat.schema_versions.append(&mut rows.schema_versions);
            flat.data.append(&mut rows.data);
            flat.metadata.append(&mut rows.metadata);
            flat.hashes.append(&mut rows.hashes);
        }
        flat
    }

    /// Returns each request its events, in the order they were taken.
    pub(crate) fn give_back<'r>(
        mut self,
        rows: impl DoubleEndedIterator<Item = &'r mut Rows> + ExactSizeIterator,
    ) {
        for (i, rows) in rows.enumerate().rev() {
            let n = self.counts[i] as usize;
            let from = self.event_ids.len() - n;
            rows.event_ids = self.event_ids.split_off(from);
            rows.event_types = self.event_types.split_off(from);
            rows.schema_versions = self.schema_versions.split_off(from);
            rows.data = self.data.split_off(from);
            rows.metadata = self.metadata.split_off(from);
            rows.hashes = self.hashes.split_off(from);
        }
    }

    /// One call of `fulcrum_append_group` with these appends on `conn`
    /// (in its transaction, or alone in autocommit): a row per append, in
    /// order (`append_index`, `outcome`, the head, `last_position`); a
    /// protocol error when the function answered another number of rows.
    pub(crate) async fn call_group(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT append_index, outcome, head_version, head_hash, last_position
             FROM fulcrum_append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&self.stream_ids)
        .bind(&self.stream_types)
        .bind(&self.expected)
        .bind(&self.base_versions)
        .bind(&self.base_hashes)
        .bind(&self.roots)
        .bind(&self.recorded_at)
        .bind(&self.counts)
        .bind(&self.event_appends)
        .bind(&self.event_versions)
        .bind(&self.event_ids)
        .bind(&self.event_types)
        .bind(&self.schema_versions)
        .bind(&self.data)
        .bind(&self.metadata)
        .bind(&self.hashes)
        .fetch_all(conn)
        .await?;
        if rows.len() != self.stream_ids.len() {
            return Err(sqlx::Error::Protocol(format!(
                "fulcrum_append_group answered {} rows for {} appends",
                rows.len(),
                self.stream_ids.len()
            )));
        }
        Ok(rows)
    }
}
