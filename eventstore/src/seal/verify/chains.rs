//! The stream hash chains behind `verify --seals`: worker threads that
//! recompute each stream's chain while the reader reads on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Finding, FindingKind};
use crate::hash;
use crate::seal::merkle::Hash;
use crate::{RecordedEvent, StoreError};

/// Events handed to a chain worker at a time.
const BATCH: usize = 512;

/// An event with its global index and stored hash, as a worker takes it.
type Indexed = (u64, RecordedEvent, Hash);

/// A worker's answer: the first event that breaks its stream's chain, with
/// its global index.
type ChainFinding = Option<(u64, Finding)>;

/// The chain workers, a lane each: every stream's events go to one lane,
/// in global order, so its worker sees the whole stream.
pub(super) struct ChainWorkers {
    workers: usize,
    first_chain_failure: Arc<AtomicU64>,
    lanes: Vec<(mpsc::Sender<Vec<Indexed>>, Vec<Indexed>)>,
    handles: Vec<JoinHandle<ChainFinding>>,
}

impl ChainWorkers {
    /// Starts two to four workers (as the machine has cores).
    pub(super) fn spawn() -> ChainWorkers {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        let first_chain_failure = Arc::new(AtomicU64::new(u64::MAX));
        let mut lanes = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (send, receive) = mpsc::channel::<Vec<Indexed>>(16);
            lanes.push((send, Vec::with_capacity(BATCH)));
            let failure = first_chain_failure.clone();
            handles.push(tokio::task::spawn_blocking(move || {
                check_chains(receive, &failure)
            }));
        }
        ChainWorkers {
            workers,
            first_chain_failure,
            lanes,
            handles,
        }
    }

    /// Whether a worker already found a chain broken before the event at
    /// `index` (reading further would not change the first finding).
    pub(super) fn failed_before(&self, index: u64) -> bool {
        index > self.first_chain_failure.load(Ordering::Relaxed)
    }

    /// Hands the event at `index` to the worker of its stream, a batch at
    /// a time.
    pub(super) async fn push(&mut self, index: u64, event: RecordedEvent, stored: Hash) {
        let lane = lane_of(&event.stream_id, self.workers);
        let (send, batch) = &mut self.lanes[lane];
        batch.push((index, event, stored));
        if batch.len() == BATCH {
            // A worker that stopped (it found a problem) takes no more.
            let _ = send.send(std::mem::take(batch)).await;
        }
    }

    /// Hands over what is left and waits for every worker: the first
    /// broken chain in global order, with its global index.
    pub(super) async fn finish(self) -> Result<ChainFinding, StoreError> {
        for (send, batch) in self.lanes {
            if !batch.is_empty() {
                let _ = send.send(batch).await;
            }
        }
        let mut chain_finding: ChainFinding = None;
        for handle in self.handles {
            if let Some((at, found)) = handle
                .await
                .map_err(|e| StoreError::Corrupt(format!("a verify worker failed: {e}")))?
            {
                if chain_finding.as_ref().is_none_or(|(first, _)| at < *first) {
                    chain_finding = Some((at, found));
                }
            }
        }
        Ok(chain_finding)
    }
}

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
    mut receive: mpsc::Receiver<Vec<Indexed>>,
    first_failure: &AtomicU64,
) -> ChainFinding {
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
                let finding = broken_chain(&event, previous_version, expected);
                first_failure.fetch_min(index, Ordering::Relaxed);
                return Some((index, finding));
            }
            heads.insert(event.stream_id, (event.version, stored));
        }
    }
    None
}

/// The finding for `event`, which does not follow its stream's event at
/// `previous_version` (it should be version `expected`, hashed onto it).
fn broken_chain(event: &RecordedEvent, previous_version: u64, expected: u64) -> Finding {
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
    Finding {
        kind,
        seal_id: None,
        leaf_index: None,
        global_position: Some(event.global_position),
        event_id: Some(event.event_id),
        stream_id: Some(event.stream_id.clone()),
        version: Some(event.version),
        detail,
    }
}
