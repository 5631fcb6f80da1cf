//! What a running relay counts: its series in the metrics registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{count, FloatGauge};
use crate::model::Checkpoint;

/// A relay's series (see [`crate::metrics`]): what it published, what
/// failed, how far behind it is. Read them here (tests, benchmarks, health
/// checks) or, once [registered](RelayStats::register), at `/metrics`;
/// both read the same atomics. Share one between the relays of a process
/// (a standby that takes over keeps counting on the same series).
#[derive(Debug, Default)]
pub struct RelayStats {
    published: Counter,
    publish_errors: Counter,
    retries: Counter,
    out_of_order: Counter,
    lag_seconds: FloatGauge,
    checkpoint_position: Gauge,
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
    /// Adds these series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fulcrum_relay_published",
            "Messages the broker acknowledged (re-sent duplicates included)",
            self.published.clone(),
        );
        registry.register(
            "fulcrum_relay_publish_errors",
            "Messages whose delivery failed (each is sent again)",
            self.publish_errors.clone(),
        );
        registry.register(
            "fulcrum_relay_retries",
            "Batches re-sent after a failure",
            self.retries.clone(),
        );
        registry.register(
            "fulcrum_relay_out_of_order",
            "Events acknowledged although an earlier event of their stream failed (should stay 0)",
            self.out_of_order.clone(),
        );
        registry.register(
            "fulcrum_relay_lag_seconds",
            "Age of the last event the broker acknowledged, when it was acknowledged",
            self.lag_seconds.clone(),
        );
        registry.register(
            "fulcrum_relay_checkpoint_position",
            "Global position of the relay's last saved checkpoint",
            self.checkpoint_position.clone(),
        );
    }

    /// Messages the broker acknowledged (re-sent duplicates included).
    pub fn acked(&self) -> u64 {
        self.published.get()
    }

    /// Messages whose delivery failed (each is sent again later).
    pub fn delivery_errors(&self) -> u64 {
        self.publish_errors.get()
    }

    /// Batches that were re-sent after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// Times a stream's event was acknowledged although an earlier event of
    /// the same stream in the same batch failed, so that Kafka may hold that
    /// stream's first copies out of order. The idempotent producer should
    /// keep this at 0; it is logged at `error` when it is not.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order.get()
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
        let lag = (chrono::Utc::now() - recorded_at)
            .to_std()
            .unwrap_or_default();
        if acked {
            self.lag_seconds.set(lag.as_secs_f64());
        }
        if !self.record_lags.load(Ordering::Relaxed) {
            return;
        }
        let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
        if acked {
            lags.acked.push(lag);
        } else {
            lags.read.push(lag);
        }
    }

    /// Records the checkpoint the relay saved (or loaded).
    pub(super) fn set_checkpoint(&self, checkpoint: Checkpoint) {
        self.checkpoint_position.set(checkpoint.position);
        *self
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = checkpoint;
    }

    /// Counts `n` acknowledged messages.
    pub(super) fn count_acked(&self, n: usize) {
        self.published.inc_by(count(n));
    }

    /// Counts `n` failed deliveries.
    pub(super) fn count_delivery_errors(&self, n: usize) {
        self.publish_errors.inc_by(count(n));
    }

    /// Counts a re-sent batch.
    pub(super) fn count_retry(&self) {
        self.retries.inc();
    }

    /// Counts an event acknowledged after an earlier one of its stream failed.
    pub(super) fn count_out_of_order(&self) {
        self.out_of_order.inc();
    }
}
