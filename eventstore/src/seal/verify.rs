//! `verify --seals`: recomputes every seal from the events and names the
//! first event that is missing, altered, inserted or re-ordered, and the
//! seal that catches it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::merkle::{self, Frontier, Hash};
use super::{signed_text, NO_PREVIOUS};
use crate::hash;
use crate::read::{decode, COLUMNS};
use crate::{RecordedEvent, StoreError};

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

/// Everything the seals recorded, checked against their signed roots.
struct Sealed {
    positions: Vec<i64>,
    hashes: Vec<Hash>,
    /// (end index, seal id) per seal: leaves before `end` are covered by it.
    ends: Vec<(u64, i64)>,
    keys: Vec<String>,
}

impl Sealed {
    fn seal_of(&self, index: u64) -> Option<i64> {
        self.ends
            .iter()
            .find(|(end, _)| index < *end)
            .map(|(_, id)| *id)
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
    let mut report = SealReport {
        valid: false,
        seals_checked: 0,
        events_checked: 0,
        sealed_events: 0,
        public_keys: Vec::new(),
        trusted_key: trusted_key.map(hex::encode),
        finding: None,
    };
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
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let first_chain_failure = Arc::new(AtomicU64::new(u64::MAX));
    let mut lanes = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (send, receive) = mpsc::channel::<Vec<(u64, RecordedEvent, Hash)>>(16);
        lanes.push((send, Vec::with_capacity(BATCH)));
        let failure = first_chain_failure.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            check_chains(receive, &failure)
        }));
    }
    let mut index: u64 = 0;
    let mut finding = None;
    {
        let sql = format!(
            "SELECT {COLUMNS} FROM events
              WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
              ORDER BY tx_id, position"
        );
        let mut rows = sqlx::query(&sql).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            if index > first_chain_failure.load(Ordering::Relaxed) {
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
            let lane = lane_of(&event.stream_id, workers);
            let (send, batch) = &mut lanes[lane];
            batch.push((index, event, stored));
            if batch.len() == BATCH {
                // A worker that stopped (it found a problem) takes no more.
                let _ = send.send(std::mem::take(batch)).await;
            }
            index += 1;
            if index.is_multiple_of(10_000) {
                progress(index, total);
            }
        }
    }
    for (send, batch) in lanes {
        if !batch.is_empty() {
            let _ = send.send(batch).await;
        }
    }
    let mut chain_finding: Option<(u64, Finding)> = None;
    for handle in handles {
        if let Some((at, found)) = handle
            .await
            .map_err(|e| StoreError::Corrupt(format!("a verify worker failed: {e}")))?
        {
            if chain_finding.as_ref().is_none_or(|(first, _)| at < *first) {
                chain_finding = Some((at, found));
            }
        }
    }
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

/// Events handed to a chain worker at a time.
const BATCH: usize = 512;

fn lane_of(stream_id: &str, lanes: usize) -> usize {
    use std::hash::{Hash as _, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    stream_id.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Recomputes the hash chains of the streams of one lane, in the order
/// their events arrive (global order); the first event that breaks its
/// stream's chain, with its global index.
fn check_chains(
    mut receive: mpsc::Receiver<Vec<(u64, RecordedEvent, Hash)>>,
    first_failure: &AtomicU64,
) -> Option<(u64, Finding)> {
    let mut heads: HashMap<String, (u64, Hash)> = HashMap::new();
    while let Some(batch) = receive.blocking_recv() {
        for (index, event, stored) in batch {
            let (previous_version, previous_hash) = heads
                .get(&event.stream_id)
                .copied()
                .unwrap_or((0, hash::GENESIS));
            let expected = previous_version + 1;
            let recomputed = hash::chain_recorded(&previous_hash, &event, expected);
            if event.version != expected || recomputed != stored {
                let detail = if event.version != expected {
                    format!(
                        "{} version {} follows version {previous_version}: versions are missing or out of order",
                        event.stream_id, event.version
                    )
                } else {
                    format!(
                        "{} version {}: the content does not hash to the stored hash",
                        event.stream_id, event.version
                    )
                };
                let kind = if event.version > expected {
                    FindingKind::Missing
                } else if event.version < expected {
                    FindingKind::Reordered
                } else {
                    FindingKind::Altered
                };
                first_failure.fetch_min(index, Ordering::Relaxed);
                return Some((
                    index,
                    Finding {
                        kind,
                        seal_id: None,
                        leaf_index: None,
                        global_position: Some(event.global_position),
                        event_id: Some(event.event_id),
                        stream_id: Some(event.stream_id.clone()),
                        version: Some(event.version),
                        detail,
                    },
                ));
            }
            heads.insert(event.stream_id, (event.version, stored));
        }
    }
    None
}

/// The first place where the events differ from what was sealed.
struct Mismatch {
    index: u64,
    /// The event found there (and its stored hash); none past the end.
    event: Option<(crate::RecordedEvent, Hash)>,
}

async fn classify(
    tx: &mut sqlx::PgConnection,
    sealed: &Sealed,
    mismatch: Mismatch,
) -> Result<Finding, StoreError> {
    let i = mismatch.index as usize;
    let seal_id = sealed.seal_of(mismatch.index);
    let sealed_position = sealed.positions[i];
    let position_index: HashMap<i64, usize> = sealed
        .positions
        .iter()
        .enumerate()
        .map(|(j, p)| (*p, j))
        .collect();
    let Some((event, stored)) = mismatch.event else {
        let (kind, detail) = missing_at(tx, sealed, i).await?;
        return Ok(Finding {
            kind,
            seal_id,
            leaf_index: Some(mismatch.index),
            global_position: Some(sealed_position),
            event_id: None,
            stream_id: None,
            version: None,
            detail,
        });
    };
    let (kind, detail, position) = if event.global_position == sealed_position {
        let elsewhere = sealed.hashes.iter().position(|h| *h == stored);
        match elsewhere {
            Some(j) if j != i => (
                FindingKind::Reordered,
                format!(
                    "position {sealed_position} holds the event sealed as leaf {j}, not the one sealed here"
                ),
                sealed_position,
            ),
            _ => (
                FindingKind::Altered,
                format!(
                    "{} version {} at position {sealed_position}: its stored hash {} is not the sealed {}",
                    event.stream_id,
                    event.version,
                    hex::encode(stored),
                    hex::encode(sealed.hashes[i])
                ),
                sealed_position,
            ),
        }
    } else {
        match position_index.get(&event.global_position) {
            Some(&j) if j > i => {
                let (kind, detail) = missing_at(tx, sealed, i).await?;
                (kind, detail, sealed_position)
            }
            Some(&j) => (
                FindingKind::Reordered,
                format!(
                    "{} version {} (position {}) was sealed as leaf {j} but now comes at leaf {i}",
                    event.stream_id, event.version, event.global_position
                ),
                event.global_position,
            ),
            None => (
                FindingKind::Inserted,
                format!(
                    "{} version {} (position {}) stands among sealed events but was never sealed",
                    event.stream_id, event.version, event.global_position
                ),
                event.global_position,
            ),
        }
    };
    let names_event = position == event.global_position;
    Ok(Finding {
        kind,
        seal_id,
        leaf_index: Some(mismatch.index),
        global_position: Some(position),
        event_id: names_event.then_some(event.event_id),
        stream_id: names_event.then(|| event.stream_id.clone()),
        version: names_event.then_some(event.version),
        detail,
    })
}

/// Whether the event sealed as leaf `i` is gone, or stored elsewhere in
/// the order.
async fn missing_at(
    tx: &mut sqlx::PgConnection,
    sealed: &Sealed,
    i: usize,
) -> Result<(FindingKind, String), StoreError> {
    let sealed_position = sealed.positions[i];
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE position = $1)")
            .bind(sealed_position)
            .fetch_one(&mut *tx)
            .await?;
    Ok(if exists {
        (
            FindingKind::Reordered,
            format!(
                "the event sealed at position {sealed_position} as leaf {i} is stored, but no longer in its place in the global order"
            ),
        )
    } else {
        (
            FindingKind::Missing,
            format!(
                "the event sealed at position {sealed_position} as leaf {i} (hash {}) is gone",
                hex::encode(sealed.hashes[i])
            ),
        )
    })
}

/// Checks the seals among themselves; the sealed leaves, or the first
/// problem.
async fn check_seals(
    tx: &mut sqlx::PgConnection,
    trusted_key: Option<[u8; 32]>,
    report: &mut SealReport,
) -> Result<Result<Sealed, Finding>, StoreError> {
    let trusted = match trusted_key.map(|k| VerifyingKey::from_bytes(&k)) {
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return Ok(Err(Finding::seal(
                FindingKind::BadSignature,
                0,
                "the given public key is not an Ed25519 key".into(),
            )))
        }
        None => None,
    };
    let rows = sqlx::query(
        "SELECT seal_id, tree_size, up_to_position, root, previous, signature, public_key,
                event_hashes, event_positions
           FROM seals ORDER BY seal_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut sealed = Sealed {
        positions: Vec::new(),
        hashes: Vec::new(),
        ends: Vec::new(),
        keys: Vec::new(),
    };
    let mut frontier = Frontier::default();
    let mut previous = NO_PREVIOUS;
    for (n, row) in rows.iter().enumerate() {
        let seal_id: i64 = row.try_get("seal_id")?;
        let tree_size: i64 = row.try_get("tree_size")?;
        let up_to_position: i64 = row.try_get("up_to_position")?;
        let root: Vec<u8> = row.try_get("root")?;
        let stored_previous: Vec<u8> = row.try_get("previous")?;
        let signature: Vec<u8> = row.try_get("signature")?;
        let public_key: Vec<u8> = row.try_get("public_key")?;
        let hashes: Vec<u8> = row.try_get("event_hashes")?;
        let positions: Vec<u8> = row.try_get("event_positions")?;
        report.seals_checked = n as u64 + 1;
        if seal_id != n as i64 + 1 {
            return Ok(Err(Finding::seal(
                FindingKind::BrokenChain,
                seal_id,
                format!("seal {} is missing: seal {seal_id} follows seal {n}", n + 1),
            )));
        }
        if stored_previous != previous {
            return Ok(Err(Finding::seal(
                FindingKind::BrokenChain,
                seal_id,
                format!("seal {seal_id}'s previous root is not seal {n}'s root"),
            )));
        }
        // The signature, over the text rebuilt from the stored fields.
        let text = signed_text(
            seal_id,
            u64::try_from(tree_size).unwrap_or(0),
            up_to_position,
            &hex::encode(&root),
            &hex::encode(&stored_previous),
        );
        let own_key = <[u8; 32]>::try_from(public_key.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let key_hex = hex::encode(&public_key);
        if !sealed.keys.contains(&key_hex) {
            sealed.keys.push(key_hex);
        }
        let key = match (trusted, own_key) {
            (Some(trusted), Some(own)) if trusted != own => {
                return Ok(Err(Finding::seal(
                    FindingKind::BadSignature,
                    seal_id,
                    format!("seal {seal_id} was signed by another key than the trusted one"),
                )))
            }
            (Some(trusted), _) => trusted,
            (None, Some(own)) => own,
            (None, None) => {
                return Ok(Err(Finding::seal(
                    FindingKind::BadSignature,
                    seal_id,
                    format!("seal {seal_id}'s public key is not an Ed25519 key"),
                )))
            }
        };
        let signature_ok = <[u8; 64]>::try_from(signature.as_slice())
            .map(|s| {
                key.verify(text.as_bytes(), &Signature::from_bytes(&s))
                    .is_ok()
            })
            .unwrap_or(false);
        if !signature_ok {
            return Ok(Err(Finding::seal(
                FindingKind::BadSignature,
                seal_id,
                format!("seal {seal_id}'s signature does not verify over {text:?}"),
            )));
        }
        // The events stored with it must hash to the signed root.
        let Some(stored) = super::stored_events(&hashes, &positions) else {
            return Ok(Err(Finding::seal(
                FindingKind::SealData,
                seal_id,
                format!("seal {seal_id}'s stored event hashes and positions differ in number"),
            )));
        };
        for (hash, position) in stored {
            frontier.push(merkle::leaf_hash(&hash));
            sealed.hashes.push(hash);
            sealed.positions.push(position);
        }
        if frontier.size() != u64::try_from(tree_size).unwrap_or(0)
            || frontier.root().as_slice() != root.as_slice()
            || sealed.positions.last() != Some(&up_to_position)
        {
            return Ok(Err(Finding::seal(
                FindingKind::SealData,
                seal_id,
                format!(
                    "the events stored with seal {seal_id} do not hash to its signed root: the seals table was altered"
                ),
            )));
        }
        sealed.ends.push((frontier.size(), seal_id));
        previous = frontier.root();
    }
    Ok(Ok(sealed))
}
