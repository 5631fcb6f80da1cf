//! Checking the seals among themselves: that they chain, that their
//! signatures verify, and that the events stored with each hash to its
//! signed root.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Finding, FindingKind, SealReport};
use crate::seal::merkle::{self, Frontier, Hash};
use crate::seal::{signed_text, stored_events, NO_PREVIOUS};
use crate::StoreError;

/// Everything the seals recorded, checked against their signed roots.
pub(super) struct Sealed {
    pub(super) positions: Vec<i64>,
    pub(super) hashes: Vec<Hash>,
    /// (end index, seal id) per seal: leaves before `end` are covered by it.
    pub(super) ends: Vec<(u64, i64)>,
    pub(super) keys: Vec<String>,
}

impl Sealed {
    /// The seal that covers the leaf at `index`, if any does.
    pub(super) fn seal_of(&self, index: u64) -> Option<i64> {
        self.ends
            .iter()
            .find(|(end, _)| index < *end)
            .map(|(_, id)| *id)
    }
}

/// Checks the seals among themselves; the sealed leaves, or the first
/// problem.
pub(super) async fn check_seals(
    tx: &mut PgConnection,
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
        let seal = StoredSeal::decode(row)?;
        report.seals_checked = n as u64 + 1;
        if let Some(finding) = seal.check(n, previous, trusted, &mut sealed, &mut frontier) {
            return Ok(Err(finding));
        }
        previous = frontier.root();
    }
    Ok(Ok(sealed))
}

/// A row of the seals table, as stored.
struct StoredSeal {
    seal_id: i64,
    tree_size: i64,
    up_to_position: i64,
    root: Vec<u8>,
    previous: Vec<u8>,
    signature: Vec<u8>,
    public_key: Vec<u8>,
    hashes: Vec<u8>,
    positions: Vec<u8>,
}

impl StoredSeal {
    fn decode(row: &PgRow) -> Result<StoredSeal, StoreError> {
        Ok(StoredSeal {
            seal_id: row.try_get("seal_id")?,
            tree_size: row.try_get("tree_size")?,
            up_to_position: row.try_get("up_to_position")?,
            root: row.try_get("root")?,
            previous: row.try_get("previous")?,
            signature: row.try_get("signature")?,
            public_key: row.try_get("public_key")?,
            hashes: row.try_get("event_hashes")?,
            positions: row.try_get("event_positions")?,
        })
    }

    /// Checks the `n`th seal (0-based) against the seal before it (whose
    /// root is `previous`) and adds its events to `sealed` and `frontier`;
    /// the first problem, if any.
    fn check(
        &self,
        n: usize,
        previous: Hash,
        trusted: Option<VerifyingKey>,
        sealed: &mut Sealed,
        frontier: &mut Frontier,
    ) -> Option<Finding> {
        self.check_chain(n, previous)
            .or_else(|| self.check_signature(trusted, &mut sealed.keys))
            .or_else(|| self.add_events(sealed, frontier))
    }

    /// Whether the seal follows the `n`th one (its id is the next, and its
    /// `previous` is that seal's root); the problem, if not.
    fn check_chain(&self, n: usize, previous: Hash) -> Option<Finding> {
        let seal_id = self.seal_id;
        if seal_id != n as i64 + 1 {
            return Some(Finding::seal(
                FindingKind::BrokenChain,
                seal_id,
                format!("seal {} is missing: seal {seal_id} follows seal {n}", n + 1),
            ));
        }
        if self.previous != previous {
            return Some(Finding::seal(
                FindingKind::BrokenChain,
                seal_id,
                format!("seal {seal_id}'s previous root is not seal {n}'s root"),
            ));
        }
        None
    }

    /// Whether the signature verifies with `trusted`, or else with the
    /// seal's own key (added to `keys`); the problem, if not.
    fn check_signature(
        &self,
        trusted: Option<VerifyingKey>,
        keys: &mut Vec<String>,
    ) -> Option<Finding> {
        let seal_id = self.seal_id;
        // The signature, over the text rebuilt from the stored fields.
        let text = signed_text(
            seal_id,
            u64::try_from(self.tree_size).unwrap_or(0),
            self.up_to_position,
            &hex::encode(&self.root),
            &hex::encode(&self.previous),
        );
        let own_key = <[u8; 32]>::try_from(self.public_key.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let key_hex = hex::encode(&self.public_key);
        if !keys.contains(&key_hex) {
            keys.push(key_hex);
        }
        let key = match (trusted, own_key) {
            (Some(trusted), Some(own)) if trusted != own => {
                return Some(Finding::seal(
                    FindingKind::BadSignature,
                    seal_id,
                    format!("seal {seal_id} was signed by another key than the trusted one"),
                ))
            }
            (Some(trusted), _) => trusted,
            (None, Some(own)) => own,
            (None, None) => {
                return Some(Finding::seal(
                    FindingKind::BadSignature,
                    seal_id,
                    format!("seal {seal_id}'s public key is not an Ed25519 key"),
                ))
            }
        };
        let signature_ok = <[u8; 64]>::try_from(self.signature.as_slice())
            .map(|s| {
                key.verify(text.as_bytes(), &Signature::from_bytes(&s))
                    .is_ok()
            })
            .unwrap_or(false);
        if !signature_ok {
            return Some(Finding::seal(
                FindingKind::BadSignature,
                seal_id,
                format!("seal {seal_id}'s signature does not verify over {text:?}"),
            ));
        }
        None
    }

    /// Adds the events stored with the seal to `sealed` and `frontier`;
    /// the problem, if they do not hash to the signed root.
    fn add_events(&self, sealed: &mut Sealed, frontier: &mut Frontier) -> Option<Finding> {
        let seal_id = self.seal_id;
        // The events stored with it must hash to the signed root.
        let Some(stored) = stored_events(&self.hashes, &self.positions) else {
            return Some(Finding::seal(
                FindingKind::SealData,
                seal_id,
                format!("seal {seal_id}'s stored event hashes and positions differ in number"),
            ));
        };
        for (hash, position) in stored {
            frontier.push(merkle::leaf_hash(&hash));
            sealed.hashes.push(hash);
            sealed.positions.push(position);
        }
        if frontier.size() != u64::try_from(self.tree_size).unwrap_or(0)
            || frontier.root().as_slice() != self.root.as_slice()
            || sealed.positions.last() != Some(&self.up_to_position)
        {
            return Some(Finding::seal(
                FindingKind::SealData,
                seal_id,
                format!(
                    "the events stored with seal {seal_id} do not hash to its signed root: the seals table was altered"
                ),
            ));
        }
        sealed.ends.push((frontier.size(), seal_id));
        None
    }
}
