//! `verify --seals`: recomputes every seal from the events and names the
//! first event that is missing, altered, inserted or re-ordered, and the
//! seal that catches it.

mod chains;
mod classify;
mod sealed;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use self::chains::ChainWorkers;
use self::classify::{classify, Mismatch};
use self::sealed::{check_seals, Sealed};
use super::merkle::Hash;
use crate::read::{decode, COLUMNS};
use crate::StoreError;

/// What a [`verify_seals`] run found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SealReport {
    /// True when every seal verifies and every event matches what was
    /// sealed and its stream's hash chain.
    pub valid: bool,
    /// Seals checked.
    pub seals_checked: u64,
    /// Events read.
    pub events_checked: u64,
    /// Events the latest seal covers.
    pub sealed_events: u64,
    /// The hex public keys that signed the seals.
    pub public_keys: Vec<String>,
    /// The hex key signatures were checked with, when one was given;
    /// otherwise each seal's own stored key (which proves integrity but not
    /// who sealed).
    pub trusted_key: Option<String>,
    /// The first problem, in seal order and then in global order.
    pub finding: Option<Finding>,
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A sealed event is gone (deleted, or the log cut off).
    Missing,
    /// An event's content or stored hash is not what was sealed or chained.
    Altered,
    /// An event sits among sealed events but was never sealed.
    Inserted,
    /// Sealed events are present but in another order.
    Reordered,
    /// A seal's signature does not verify (or another key signed it).
    BadSignature,
    /// The seals themselves do not chain: a seal is missing, or its
    /// `previous` or `tree_size` does not follow the seal before it.
    BrokenChain,
    /// The events stored with a seal do not hash to its signed root.
    SealData,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The seal that catches it (none for an event no seal covers yet,
    /// which only its stream's hash chain can catch).
    pub seal_id: Option<i64>,
    /// Index of the event among the sealed events.
    pub leaf_index: Option<u64>,
    /// Global position of the event (for a missing one, where it was).
    pub global_position: Option<i64>,
    /// The event, where it still exists.
    pub event_id: Option<Uuid>,
    /// Its stream.
    pub stream_id: Option<String>,
    /// Its version in the stream.
    pub version: Option<u64>,
    /// A sentence for a person.
    pub detail: String,
}

impl Finding {
    fn seal(kind: FindingKind, seal_id: i64, detail: String) -> Finding {
        Finding {
            kind,
            seal_id: Some(seal_id),
            leaf_index: None,
            global_position: None,
            event_id: None,
            stream_id: None,
            version: None,
            detail,
        }
    }
}

/// Checks every seal (chain, signature with `trusted_key` or each seal's own
/// key, and that the events stored with it hash to its root), then reads
/// every event in gap-free global order and checks it against what was
/// sealed and against its stream's hash chain. `progress(done, total)` is
/// called as events are read.
///
/// Everything is read in one snapshot: appends that commit meanwhile are
/// not seen, and do not disturb the check.
pub async fn verify_seals(
    pool: &PgPool,
    trusted_key: Option<[u8; 32]>,
    mut progress: impl FnMut(u64, u64),
) -> Result<SealReport, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut report = SealReport::empty(trusted_key);
    let sealed = match check_seals(&mut tx, trusted_key, &mut report).await? {
        Ok(sealed) => sealed,
        Err(finding) => {
            report.finding = Some(finding);
            return Ok(report);
        }
    };
    report.sealed_events = sealed.hashes.len() as u64;
    report.public_keys = sealed.keys.clone();

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    // The reader compares each event with what was sealed (cheap) and hands
    // it to the worker of its stream, which recomputes the stream's hash
    // chain (the costly part), so hashing runs beside reading and decoding.
    let mut chains = ChainWorkers::spawn();
    let (index, mut finding) =
        read_events(&mut tx, &sealed, &mut chains, total, &mut progress).await?;
    let chain_finding = chains.finish().await?;
    progress(index, total);
    report.events_checked = index;
    if finding.is_none() && chain_finding.is_none() && index < report.sealed_events {
        finding = Some(Mismatch { index, event: None });
    }
    // The first problem in global order wins.
    if let Some((at, mut found)) = chain_finding {
        if finding.as_ref().is_none_or(|m| at < m.index) {
            found.seal_id = sealed.seal_of(at);
            found.leaf_index = (at < report.sealed_events).then_some(at);
            report.events_checked = at + 1;
            report.finding = Some(found);
            return Ok(report);
        }
    }
    if let Some(mismatch) = finding {
        report.events_checked = mismatch.index + u64::from(mismatch.event.is_some());
        report.finding = Some(classify(&mut tx, &sealed, mismatch).await?);
        return Ok(report);
    }
    report.valid = true;
    Ok(report)
}

impl SealReport {
    /// A report of nothing checked yet.
    fn empty(trusted_key: Option<[u8; 32]>) -> SealReport {
        SealReport {
            valid: false,
            seals_checked: 0,
            events_checked: 0,
            sealed_events: 0,
            public_keys: Vec::new(),
            trusted_key: trusted_key.map(hex::encode),
            finding: None,
        }
    }
}

/// Reads every event in gap-free global order, compares each with what
/// was sealed and hands it to `chains`: how many events were read, and the
/// first that is not what was sealed. Stops early once a chain worker has
/// found a problem further up.
async fn read_events(
    tx: &mut PgConnection,
    sealed: &Sealed,
    chains: &mut ChainWorkers,
    total: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(u64, Option<Mismatch>), StoreError> {
    let mut index: u64 = 0;
    let mut finding = None;
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
          ORDER BY tx_id, position"
    );
    let mut rows = sqlx::query(&sql).fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        if chains.failed_before(index) {
            break;
        }
        let event = decode(&row)?;
        let stored: Vec<u8> = row.try_get("hash")?;
        let stored: Hash = stored.try_into().unwrap_or([0; 32]);
        if let Some(&sealed_hash) = sealed.hashes.get(index as usize) {
            let sealed_position = sealed.positions[index as usize];
            if sealed_position != event.global_position || sealed_hash != stored {
                finding = Some(Mismatch {
                    index,
                    event: Some((event, stored)),
                });
                break;
            }
        }
        chains.push(index, event, stored).await;
        index += 1;
        if index.is_multiple_of(10_000) {
            progress(index, total);
        }
    }
    Ok((index, finding))
}
