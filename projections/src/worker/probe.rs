//! The projectors' metrics: one labelled series per projection in the
//! process's registry, and the probe a projector counts on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::Projection;

/// The projectors' series in the process's metrics registry (see
/// [`eventstore::metrics`]): one labelled series per projection.
#[derive(Clone, Debug, Default)]
pub struct ProjectorMetrics {
    batches: Family<ProjectionLabel, Counter>,
    applied: Family<ProjectionLabel, Counter>,
    duplicates: Family<ProjectionLabel, Counter>,
    dead_letters: Family<ProjectionLabel, Counter>,
}

/// The `projection` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabel {
    projection: &'static str,
}

impl ProjectorMetrics {
    /// Adds these series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fulcrum_projection_batches",
            "Projector transactions committed",
            self.batches.clone(),
        );
        registry.register(
            "fulcrum_projection_events_applied",
            "Events applied to a read model",
            self.applied.clone(),
        );
        registry.register(
            "fulcrum_projection_duplicates",
            "Redelivered events a projector had already applied",
            self.duplicates.clone(),
        );
        registry.register(
            "fulcrum_projection_dead_lettered",
            "Events a projector dead-lettered",
            self.dead_letters.clone(),
        );
    }

    /// A probe counting on `projection`'s series.
    pub fn probe(&self, projection: Projection) -> ProjectorProbe {
        let label = ProjectionLabel {
            projection: projection.name(),
        };
        ProjectorProbe {
            applied: self.applied.get_or_create_owned(&label),
            duplicates: self.duplicates.get_or_create_owned(&label),
            batches: self.batches.get_or_create_owned(&label),
            dead_letters: self.dead_letters.get_or_create_owned(&label),
            ..ProjectorProbe::default()
        }
    }
}

/// One projector's series (from [`ProjectorMetrics::probe`], or series of
/// its own by default) and a fault hook, for tests and benchmarks. Share one
/// between a projector and the code watching it.
#[derive(Debug, Default)]
pub struct ProjectorProbe {
    /// Events whose transaction committed with [`crate::Applied::Applied`].
    pub applied: Counter,
    /// Events that were already applied (redeliveries).
    pub duplicates: Counter,
    /// Transactions committed.
    pub batches: Counter,
    /// Events dead-lettered.
    pub dead_letters: Counter,
    /// When non-zero: after this many committed transactions, the projector
    /// returns [`super::ProjectorError::Crashed`] without committing offsets.
    pub crash_after_batches: AtomicU64,
    record_lags: AtomicBool,
    lags: Mutex<Vec<Duration>>,
}

impl ProjectorProbe {
    /// Starts recording, per applied event, the time from its `recorded_at`
    /// (set just before its append) to the commit of its projector
    /// transaction.
    pub fn record_lags(&self) {
        self.record_lags.store(true, Ordering::Relaxed);
    }

    /// Records the lags of events recorded at `recorded` and applied now,
    /// when recording.
    pub(crate) fn count_lags(&self, recorded: &[DateTime<Utc>]) {
        if self.record_lags.load(Ordering::Relaxed) {
            let now = Utc::now();
            if let Ok(mut lags) = self.lags.lock() {
                lags.extend(recorded.iter().filter_map(|at| (now - *at).to_std().ok()));
            }
        }
    }

    /// The lags recorded so far (and forgets them).
    pub fn take_lags(&self) -> Vec<Duration> {
        self.lags
            .lock()
            .map(|mut lags| std::mem::take(&mut *lags))
            .unwrap_or_default()
    }
}
