//! Seals: signed tamper evidence for the whole store.
//!
//! A stream's hash chain ([`crate::verify_stream`]) cannot see a stream
//! that was deleted whole, or the tail of the log cut off. A seal can: it
//! covers every event from the first one, in gap-free global order, up to a
//! checkpoint, with the Merkle tree hash of RFC 6962 over their hashes
//! ([`merkle`]), chained to the previous seal and signed with Ed25519. The
//! shape is fixed by DESIGN.md ("Audit") so that anyone can check seals
//! from the contract alone:
//!
//! - leaf i = SHA-256(0x00 ‖ hash of event i), node = SHA-256(0x01 ‖ l ‖ r);
//! - the signed text is
//!   `fulcrum-seal:v1:<seal_id>:<tree_size>:<up_to_position>:<root hex>:<previous hex>`;
//! - `previous` is the previous seal's root, 64 zeros for the first;
//! - a proof is the RFC 6962 audit path of the event's leaf.
//!
//! [`seal_now`] seals whatever is new; any process may call it (sealing is
//! serialised by a transaction-scoped advisory lock), and the `sealer` role
//! calls it on an interval under a single-active lock. [`verify_seals`]
//! recomputes everything from the events and names the first missing,
//! altered, inserted or re-ordered event and the seal that catches it.

mod key;
pub mod merkle;
mod proof;
mod verify;

use chrono::{DateTime, Utc};
use ed25519_dalek::Signer;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::StoreError;

pub use key::{SealKey, SealKeyError};
pub use merkle::Hash;
pub use proof::{check_proof, proof_for, Proof, ProofCheck, ProofError};
pub use verify::{verify_seals, Finding, FindingKind, SealReport};

/// The previous root of the first seal.
pub const NO_PREVIOUS: Hash = [0; 32];

/// Most events one seal adds; a store further behind is sealed in several
/// seals, one after another.
pub const MAX_EVENTS_PER_SEAL: i64 = 1_000_000;

/// A stored seal, as the audit API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Seal {
    /// 1 for the first seal, then 2, 3, ...
    pub seal_id: i64,
    /// How many events the seal covers, from the first event on.
    pub tree_size: u64,
    /// The same as `tree_size`: how many events the seal covers.
    pub events: u64,
    /// How many of them the previous seal did not cover.
    pub added: u64,
    /// Global position of the last covered event (in gap-free global order).
    pub up_to_position: i64,
    /// Hex Merkle tree hash over the covered events' hashes.
    pub root: String,
    /// Hex root of the previous seal (64 zeros for the first).
    pub previous: String,
    /// Hex Ed25519 signature (64 bytes) of [`Seal::signed_text`].
    pub signature: String,
    /// Hex Ed25519 public key (32 bytes) that signed it.
    pub public_key: String,
    /// When it was written.
    pub sealed_at: DateTime<Utc>,
    /// Transaction id of the last covered event (with `up_to_position`, the
    /// checkpoint the seal reaches).
    #[serde(skip)]
    #[schemars(skip)]
    pub up_to_tx_id: i64,
}

impl Seal {
    /// The text the signature covers.
    pub fn signed_text(&self) -> String {
        signed_text(
            self.seal_id,
            self.tree_size,
            self.up_to_position,
            &self.root,
            &self.previous,
        )
    }
}

/// `fulcrum-seal:v1:<seal_id>:<tree_size>:<up_to_position>:<root hex>:<previous hex>`.
pub fn signed_text(
    seal_id: i64,
    tree_size: u64,
    up_to_position: i64,
    root_hex: &str,
    previous_hex: &str,
) -> String {
    format!("fulcrum-seal:v1:{seal_id}:{tree_size}:{up_to_position}:{root_hex}:{previous_hex}")
}

/// The events a seal added, as stored with it: (event hash, global
/// position) pairs, or `None` when the two columns do not hold whole,
/// equally many entries (the seals table was altered).
pub(crate) fn stored_events(hashes: &[u8], positions: &[u8]) -> Option<Vec<(Hash, i64)>> {
    if !hashes.len().is_multiple_of(32)
        || !positions.len().is_multiple_of(8)
        || hashes.len() / 32 != positions.len() / 8
    {
        return None;
    }
    hashes
        .chunks_exact(32)
        .zip(positions.chunks_exact(8))
        .map(|(hash, position)| {
            Some((
                hash.try_into().ok()?,
                i64::from_be_bytes(position.try_into().ok()?),
            ))
        })
        .collect()
}

const SEAL_COLUMNS: &str = "seal_id, tree_size, up_to_tx_id, up_to_position, root, previous, \
     signature, public_key, sealed_at, octet_length(event_hashes) / 32 AS added";

fn decode_seal(row: &PgRow) -> Result<Seal, StoreError> {
    let tree_size: i64 = row.try_get("tree_size")?;
    let added: i32 = row.try_get("added")?;
    let tree_size = u64::try_from(tree_size)
        .map_err(|_| StoreError::Corrupt(format!("seal tree size {tree_size}")))?;
    Ok(Seal {
        seal_id: row.try_get("seal_id")?,
        tree_size,
        events: tree_size,
        added: u64::try_from(added).unwrap_or(0),
        up_to_position: row.try_get("up_to_position")?,
        up_to_tx_id: row.try_get("up_to_tx_id")?,
        root: hex::encode(row.try_get::<Vec<u8>, _>("root")?),
        previous: hex::encode(row.try_get::<Vec<u8>, _>("previous")?),
        signature: hex::encode(row.try_get::<Vec<u8>, _>("signature")?),
        public_key: hex::encode(row.try_get::<Vec<u8>, _>("public_key")?),
        sealed_at: row.try_get("sealed_at")?,
    })
}

/// Seals every event not yet sealed (at most [`MAX_EVENTS_PER_SEAL`]),
/// signed with `key`. `None` when nothing new was readable.
///
/// Only events below the gap-free horizon are sealed, in gap-free global
/// order, so an event that commits later always sorts after every sealed
/// one: no event ever falls between two seals. The reads come before the one
/// write, so the transaction holds an id only for the moment of its insert
/// and never holds back the store's gap-free readers.
#[tracing::instrument(skip_all)]
pub async fn seal_now(pool: &PgPool, key: &SealKey) -> Result<Option<Seal>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('fulcrum.seal', 0))")
        .execute(&mut *tx)
        .await?;
    let (seal_id, mut frontier, after, previous) = next_seal(&mut tx).await?;
    let rows = unsealed(&mut tx, after).await?;
    let Some(last_row) = rows.last() else {
        return Ok(None);
    };
    let up_to_tx_id: i64 = last_row.try_get("tx_id")?;
    let up_to_position: i64 = last_row.try_get("position")?;
    let (hashes, positions) = add_leaves(&rows, &mut frontier)?;
    let root = frontier.root();
    let tree_size = frontier.size();
    let text = signed_text(
        seal_id,
        tree_size,
        up_to_position,
        &hex::encode(root),
        &hex::encode(previous),
    );
    let signature = key.signing_key().sign(text.as_bytes());
    let public_key = key.public_key();
    let row = sqlx::query(&format!(
        "INSERT INTO seals (seal_id, tree_size, up_to_tx_id, up_to_position, root, previous,
                            signature, public_key, frontier, event_hashes, event_positions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING {SEAL_COLUMNS}"
    ))
    .bind(seal_id)
    .bind(i64::try_from(tree_size).map_err(|_| StoreError::Corrupt("tree size".into()))?)
    .bind(up_to_tx_id)
    .bind(up_to_position)
    .bind(root.as_slice())
    .bind(previous.as_slice())
    .bind(signature.to_bytes().as_slice())
    .bind(public_key.as_slice())
    .bind(frontier.to_bytes())
    .bind(hashes)
    .bind(positions)
    .fetch_one(&mut *tx)
    .await?;
    let seal = decode_seal(&row)?;
    tx.commit().await?;
    tracing::debug!(seal_id, tree_size, up_to_position, "sealed");
    Ok(Some(seal))
}

/// Where the next seal starts, from the latest one: its id, the Merkle
/// frontier so far, the (tx id, position) checkpoint already sealed, and
/// the previous root.
async fn next_seal(
    tx: &mut PgConnection,
) -> Result<(i64, merkle::Frontier, (i64, i64), Hash), StoreError> {
    let last = sqlx::query(
        "SELECT seal_id, tree_size, up_to_tx_id, up_to_position, root, frontier
           FROM seals ORDER BY seal_id DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match &last {
        None => (1, merkle::Frontier::default(), (0i64, 0i64), NO_PREVIOUS),
        Some(row) => {
            let id: i64 = row.try_get("seal_id")?;
            let size: i64 = row.try_get("tree_size")?;
            let bytes: Vec<u8> = row.try_get("frontier")?;
            let frontier = u64::try_from(size)
                .ok()
                .and_then(|size| merkle::Frontier::from_bytes(size, &bytes))
                .ok_or_else(|| StoreError::Corrupt(format!("seal {id}: frontier")))?;
            let root: Vec<u8> = row.try_get("root")?;
            let previous: Hash = root
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("seal {id}: root")))?;
            (
                id + 1,
                frontier,
                (row.try_get("up_to_tx_id")?, row.try_get("up_to_position")?),
                previous,
            )
        }
    })
}

/// The events after the checkpoint `after` and below the gap-free horizon,
/// in gap-free global order, at most [`MAX_EVENTS_PER_SEAL`].
async fn unsealed(tx: &mut PgConnection, after: (i64, i64)) -> Result<Vec<PgRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT tx_id, position, hash FROM events
          WHERE (tx_id, position) > ($1, $2)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
          ORDER BY tx_id, position LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(MAX_EVENTS_PER_SEAL)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

/// Adds the events of `rows` to `frontier` as leaves; their hashes and
/// positions, packed as the seal stores them.
fn add_leaves(
    rows: &[PgRow],
    frontier: &mut merkle::Frontier,
) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let mut hashes = Vec::with_capacity(rows.len() * 32);
    let mut positions = Vec::with_capacity(rows.len() * 8);
    for row in rows {
        let hash: Vec<u8> = row.try_get("hash")?;
        let position: i64 = row.try_get("position")?;
        let hash: Hash = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("event at {position}: hash length")))?;
        frontier.push(merkle::leaf_hash(&hash));
        hashes.extend_from_slice(&hash);
        positions.extend_from_slice(&position.to_be_bytes());
    }
    Ok((hashes, positions))
}

/// Seals until nothing new is left (a store far behind takes several
/// seals); the seals written, oldest first.
pub async fn seal_all(pool: &PgPool, key: &SealKey) -> Result<Vec<Seal>, StoreError> {
    let mut sealed = Vec::new();
    while let Some(seal) = seal_now(pool, key).await? {
        let full = i64::try_from(seal.added).unwrap_or(i64::MAX) >= MAX_EVENTS_PER_SEAL;
        sealed.push(seal);
        if !full {
            break;
        }
    }
    Ok(sealed)
}

/// Up to `limit` seals with ids above `after`, oldest first.
pub async fn list_seals(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<Seal>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SEAL_COLUMNS} FROM seals WHERE seal_id > $1 ORDER BY seal_id LIMIT $2"
    ))
    .bind(after)
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_seal).collect()
}

/// The latest seal, if any.
pub async fn latest_seal(pool: &PgPool) -> Result<Option<Seal>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SEAL_COLUMNS} FROM seals ORDER BY seal_id DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_seal).transpose()
}

/// The sealer: seals what is new every `interval` until `stop` resolves.
/// Run it under [`crate::leader::SingleActive`] so that one process seals
/// at a time (two would only take turns on the seal lock, but would sign
/// twice as often). A failed seal (the database away) is logged and tried
/// again at the next interval; it never stops the sealer.
pub async fn run(
    pool: PgPool,
    key: SealKey,
    interval: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    tokio::pin!(stop);
    tracing::info!(public_key = %key.public_key_hex(), ?interval, "sealing");
    loop {
        match seal_all(&pool, &key).await {
            Ok(sealed) => {
                if let Some(last) = sealed.last() {
                    tracing::info!(
                        seal_id = last.seal_id,
                        tree_size = last.tree_size,
                        up_to_position = last.up_to_position,
                        "sealed"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sealing failed; trying again at the next interval")
            }
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}
