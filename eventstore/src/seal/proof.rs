//! Inclusion proofs: that one event is among those a signed seal covers.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::merkle::{self, Hash};
use super::{latest_seal, signed_text};
use crate::StoreError;

/// An inclusion proof of an event in a seal. The first six fields are the
/// shape DESIGN.md fixes; the rest make the proof checkable offline on its
/// own (see [`check_proof`] and docs/audit.md, "checking a proof offline").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Proof {
    /// The event proven.
    pub event_id: Uuid,
    /// The seal it is proven in: the latest seal.
    pub seal_id: i64,
    /// The event's index among the sealed events (0-based, gap-free global order).
    pub leaf_index: u64,
    /// How many events the seal covers.
    pub tree_size: u64,
    /// Hex root the seal signed.
    pub root: String,
    /// Hex sibling hashes from the leaf upwards (RFC 6962 §2.1.1).
    pub audit_path: Vec<String>,
    /// Hex stored hash of the event (its leaf is SHA-256(0x00 ‖ this)).
    pub event_hash: String,
    /// The event's stream, version and global position.
    pub stream_id: String,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's global position.
    pub global_position: i64,
    /// The seal's `up_to_position`.
    pub up_to_position: i64,
    /// Hex root of the seal before it.
    pub previous: String,
    /// Hex Ed25519 signature of `signed_text`.
    pub signature: String,
    /// Hex public key that signed the seal.
    pub public_key: String,
    /// `fulcrum-seal:v1:<seal_id>:<tree_size>:<up_to_position>:<root>:<previous>`.
    pub signed_text: String,
}

/// Why no proof can be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// No event has that id.
    #[error("no event {0}")]
    NoSuchEvent(Uuid),
    /// No seal covers the event yet.
    #[error("event {0} is not sealed yet; the next seal will cover it")]
    NotSealed(Uuid),
    /// The event's stored hash is not the one that was sealed.
    #[error(
        "event {0} was altered after it was sealed (its stored hash differs from the sealed one)"
    )]
    AlteredSinceSealed(Uuid),
    /// The seals' stored data does not hash to their signed roots.
    #[error("the stored seals are inconsistent ({0}); run `fulcrum audit verify --seals`")]
    SealData(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ProofError {
    fn from(e: sqlx::Error) -> Self {
        ProofError::Store(e.into())
    }
}

/// The proof of event `event_id` in the latest seal.
///
/// Built from what the seals stored (no scan of the events table); the
/// stored data is checked against the latest seal's signed root first.
pub async fn proof_for(pool: &PgPool, event_id: Uuid) -> Result<Proof, ProofError> {
    let event = crate::audit::event_by_id(pool, event_id)
        .await?
        .ok_or(ProofError::NoSuchEvent(event_id))?;
    let seal = latest_seal(pool)
        .await?
        .ok_or(ProofError::NotSealed(event_id))?;
    if (event.tx_id, event.global_position) > (seal.up_to_tx_id, seal.up_to_position) {
        return Err(ProofError::NotSealed(event_id));
    }
    let rows = sqlx::query(
        "SELECT seal_id, event_hashes, event_positions FROM seals
          WHERE seal_id <= $1 ORDER BY seal_id",
    )
    .bind(seal.seal_id)
    .fetch_all(pool)
    .await?;
    let mut leaves: Vec<Hash> = Vec::with_capacity(usize::try_from(seal.tree_size).unwrap_or(0));
    let mut index = None;
    let mut sealed_hash = None;
    for row in &rows {
        let hashes: Vec<u8> = row.try_get("event_hashes")?;
        let positions: Vec<u8> = row.try_get("event_positions")?;
        let Some(stored) = super::stored_events(&hashes, &positions) else {
            let id: i64 = row.try_get("seal_id")?;
            return Err(ProofError::SealData(format!(
                "seal {id}: hashes and positions differ in number"
            )));
        };
        for (hash, position) in stored {
            if position == event.global_position && index.is_none() {
                index = Some(leaves.len());
                sealed_hash = Some(hash);
            }
            leaves.push(merkle::leaf_hash(&hash));
        }
    }
    if leaves.len() as u64 != seal.tree_size || hex::encode(merkle::root(&leaves)) != seal.root {
        return Err(ProofError::SealData(format!(
            "the events stored with seals 1 to {} do not hash to its root",
            seal.seal_id
        )));
    }
    let (Some(index), Some(sealed_hash)) = (index, sealed_hash) else {
        // Covered by the checkpoint but in no seal: it was inserted later.
        return Err(ProofError::AlteredSinceSealed(event_id));
    };
    if hex::encode(sealed_hash) != event.hash {
        return Err(ProofError::AlteredSinceSealed(event_id));
    }
    let path = merkle::audit_path(&leaves, index).unwrap_or_default();
    Ok(Proof {
        event_id,
        seal_id: seal.seal_id,
        leaf_index: index as u64,
        tree_size: seal.tree_size,
        audit_path: path.iter().map(hex::encode).collect(),
        event_hash: event.hash.clone(),
        stream_id: event.stream_id.clone(),
        version: event.version,
        global_position: event.global_position,
        up_to_position: seal.up_to_position,
        signed_text: seal.signed_text(),
        root: seal.root,
        previous: seal.previous,
        signature: seal.signature,
        public_key: seal.public_key,
    })
}

/// The outcome of [`check_proof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofCheck {
    /// True when the proof holds.
    pub valid: bool,
    /// What failed, when it does not.
    pub reason: Option<String>,
    /// The key the signature was checked with.
    pub public_key: String,
}

/// Checks `proof` offline: the signature over the seal's text (with
/// `trusted_key`, or the key the proof names when none is given), and that
/// the audit path leads from the event's leaf to the signed root.
pub fn check_proof(proof: &Proof, trusted_key: Option<[u8; 32]>) -> ProofCheck {
    let key_hex = trusted_key.map_or_else(|| proof.public_key.clone(), hex::encode);
    let fail = |reason: String| ProofCheck {
        valid: false,
        reason: Some(reason),
        public_key: key_hex.clone(),
    };
    let text = signed_text(
        proof.seal_id,
        proof.tree_size,
        proof.up_to_position,
        &proof.root,
        &proof.previous,
    );
    let key = match decode32(&key_hex).and_then(|k| VerifyingKey::from_bytes(&k).ok()) {
        Some(key) => key,
        None => return fail("the public key is not a hex Ed25519 key".into()),
    };
    let signature = match hex::decode(&proof.signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
    {
        Some(bytes) => Signature::from_bytes(&bytes),
        None => return fail("the signature is not 64 hex bytes".into()),
    };
    if key.verify(text.as_bytes(), &signature).is_err() {
        return fail(format!("the signature does not verify over {text:?}"));
    }
    let (Some(event_hash), Some(root)) = (decode32(&proof.event_hash), decode32(&proof.root))
    else {
        return fail("event_hash and root must be 32 hex bytes".into());
    };
    let Some(path) = proof
        .audit_path
        .iter()
        .map(|h| decode32(h))
        .collect::<Option<Vec<_>>>()
    else {
        return fail("every audit path entry must be 32 hex bytes".into());
    };
    let computed = merkle::root_from_path(
        merkle::leaf_hash(&event_hash),
        proof.leaf_index,
        proof.tree_size,
        &path,
    );
    if computed != Some(root) {
        return fail(
            "the audit path does not lead from the event's leaf to the signed root".into(),
        );
    }
    ProofCheck {
        valid: true,
        reason: None,
        public_key: key_hex,
    }
}

pub(crate) fn decode32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok().and_then(|b| b.try_into().ok())
}
