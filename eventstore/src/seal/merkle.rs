//! The Merkle tree hash of RFC 6962 §2.1 over event hashes, built
//! incrementally, with inclusion proofs (audit paths) and their check
//! (RFC 9162 §2.1.3.2).
//!
//! - leaf = SHA-256(0x00 ‖ event hash)
//! - node = SHA-256(0x01 ‖ left ‖ right)
//! - the tree of n > 1 leaves splits at the largest power of two below n;
//!   the tree of no leaves hashes to SHA-256 of nothing.

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 hash.
pub type Hash = [u8; 32];

/// The leaf hash of an event whose stored hash is `event_hash`.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A tree that grows one leaf at a time, keeping only the roots of its
/// perfect subtrees: one per set bit of its size, largest (leftmost) first.
/// Its root equals the RFC 6962 tree hash of every leaf pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// A frontier stored by [`Frontier::to_bytes`] for a tree of `size`
    /// leaves; `None` when the bytes cannot be that frontier.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
        if !bytes.len().is_multiple_of(32) || bytes.len() / 32 != size.count_ones() as usize {
            return None;
        }
        let peaks = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().ok())
            .collect::<Option<Vec<Hash>>>()?;
        Some(Frontier { size, peaks })
    }

    /// The peaks, concatenated.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.peaks.concat()
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (already hashed with [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        // Each trailing one bit of the old size is a peak of the same height
        // as the carry: merge them, as a binary counter carries.
        let mut size = self.size;
        while size & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                carry = node_hash(&left, &carry);
            }
            size >>= 1;
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// The tree hash of every leaf pushed.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The tree hash of `leaves` (already hashed with [`leaf_hash`]).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The audit path of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1),
/// from the leaf's sibling upwards; `None` when `index` is out of range.
pub fn audit_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if index < k {
        path_into(&leaves[..k], index, path);
        path.push(root(&leaves[k..]));
    } else {
        path_into(&leaves[k..], index - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// The root that `path` proves leaf `leaf` at `index` of a tree of `size`
/// leaves belongs to (RFC 9162 §2.1.3.2); `None` when the path cannot be a
/// path of that leaf in a tree of that size.
pub fn root_from_path(leaf: Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&Sha256::digest(i.to_be_bytes()).into()))
            .collect()
    }

    #[test]
    fn the_frontier_root_equals_the_recursive_tree_hash_at_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.root(), root(&all[..=i]), "size {}", i + 1);
            let stored = Frontier::from_bytes(frontier.size(), &frontier.to_bytes());
            assert_eq!(stored.as_ref(), Some(&frontier));
        }
    }

    #[test]
    fn the_tree_hash_follows_rfc_6962_splits() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        let l = leaves(7);
        let left = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        let right = node_hash(&node_hash(&l[4], &l[5]), &l[6]);
        assert_eq!(root(&l), node_hash(&left, &right));
    }

    #[test]
    fn every_audit_path_proves_its_leaf_and_nothing_else() {
        for n in 1..40usize {
            let all = leaves(n);
            let expected = root(&all);
            for i in 0..n {
                let path = audit_path(&all, i).unwrap_or_default();
                assert_eq!(
                    root_from_path(all[i], i as u64, n as u64, &path),
                    Some(expected),
                    "leaf {i} of {n}"
                );
                // Another leaf or another index does not prove. (The tree size is
                // bound by the seal's signature, not by the path.)
                let other = all[(i + 1) % n];
                if n > 1 {
                    assert_ne!(
                        root_from_path(other, i as u64, n as u64, &path),
                        Some(expected)
                    );
                    let j = (i + 1) % n;
                    assert_ne!(
                        root_from_path(all[i], j as u64, n as u64, &path),
                        Some(expected)
                    );
                }
            }
        }
        assert_eq!(audit_path(&leaves(3), 3), None);
        assert_eq!(root_from_path(leaves(1)[0], 1, 1, &[]), None);
    }

    #[test]
    fn a_frontier_of_the_wrong_shape_is_refused() {
        assert!(Frontier::from_bytes(3, &[0; 32]).is_none());
        assert!(Frontier::from_bytes(3, &[0; 64]).is_some());
        assert!(Frontier::from_bytes(1, &[0; 31]).is_none());
    }
}
