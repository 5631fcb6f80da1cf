//! What a running relay counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::model::Checkpoint;

/// Counters a running relay updates, for tests, benchmarks and health checks.
#[derive(Debug, Default)]
pub struct RelayStats {
    acked: AtomicU64,
    delivery_errors: AtomicU64,
    retries: AtomicU64,
    out_of_order: AtomicU64,
    checkpoint: Mutex<Checkpoint>,
    record_lags: AtomicBool,
    lags: Mutex<RelayLags>,
}

/// Per-event lags a relay recorded after [`RelayStats::record_lags`], each
/// measured from the event's `recorded_at` (stamped just before its append).
#[derive(Debug, Default, Clone)]
pub struct RelayLags {
    /// Until the relay took the event from its subscription.
    pub read: Vec<Duration>,
    /// Until the broker acknowledged it.
    pub acked: Vec<Duration>,
}

impl RelayStats {
    /// Messages the broker acknowledged (re-sent duplicates included).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Messages whose delivery failed (each is sent again later).
    pub fn delivery_errors(&self) -> u64 {
        self.delivery_errors.load(Ordering::Relaxed)
    }

    /// Batches that were re-sent after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Times a stream's event was acknowledged although an earlier event of
    /// the same stream in the same batch failed, so that Kafka may hold that
    /// stream's first copies out of order. The idempotent producer should
    /// keep this at 0; it is logged at `error` when it is not.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order.load(Ordering::Relaxed)
    }

    /// The last checkpoint the relay saved (or loaded at start).
    pub fn checkpoint(&self) -> Checkpoint {
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts recording per-event lags (for benchmarks: a clock read and a
    /// push per event).
    pub fn record_lags(&self) {
        self.record_lags.store(true, Ordering::Relaxed);
    }

    /// The lags recorded so far (and forgets them).
    pub fn take_lags(&self) -> RelayLags {
        std::mem::take(&mut *self.lags.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records the lag of an event taken from the subscription (`acked`
    /// false) or acknowledged by the broker, when recording.
    pub(super) fn note_lag(&self, recorded_at: chrono::DateTime<chrono::Utc>, acked: bool) {
        if acked {
            let behind = (chrono::Utc::now() - recorded_at).num_microseconds();
            metrics::gauge!("fulcrum_relay_lag_seconds")
                .set(behind.unwrap_or(0) as f64 / 1_000_000.0);
        }
        if !self.record_lags.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(lag) = (chrono::Utc::now() - recorded_at).to_std() {
            let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
            if acked {
                lags.acked.push(lag);
            } else {
                lags.read.push(lag);
            }
        }
    }

    /// Records the checkpoint the relay saved (or loaded).
    pub(super) fn set_checkpoint(&self, checkpoint: Checkpoint) {
        metrics::gauge!("fulcrum_relay_checkpoint_position").set(checkpoint.position as f64);
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = checkpoint;
    }

    /// Counts `n` acknowledged messages.
    pub(super) fn count_acked(&self, n: usize) {
        self.acked.fetch_add(as_u64(n), Ordering::Relaxed);
        metrics::counter!("fulcrum_relay_published_total").increment(as_u64(n));
    }

    /// Counts `n` failed deliveries.
    pub(super) fn count_delivery_errors(&self, n: usize) {
        self.delivery_errors.fetch_add(as_u64(n), Ordering::Relaxed);
        metrics::counter!("fulcrum_relay_publish_errors_total").increment(as_u64(n));
    }

    /// Counts a re-sent batch.
    pub(super) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an event acknowledged after an earlier one of its stream failed.
    pub(super) fn count_out_of_order(&self) {
        self.out_of_order.fetch_add(1, Ordering::Relaxed);
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
