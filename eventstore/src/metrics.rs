//! Series for the process's one metrics registry
//! ([`prometheus_client::registry::Registry`], rendered at `/metrics`).
//!
//! Every component owns handles to its series and counts on them directly:
//! the relay through [`crate::relay::RelayStats`], the event store through
//! [`StoreMetrics`], and likewise the projectors and the saga in their
//! crates. A handle *is* the series (an `Arc`ed atomic), so what a test or a
//! health check reads from a component is exactly what `/metrics` renders
//! once the component's series are registered; a component that is never
//! registered (a library user's, or a test's) still counts, unobserved.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// Upper bounds (seconds) of every latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`] (observe seconds).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A family of latency histograms, one per label set.
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An empty [`LatencyFamily`].
pub fn latency_family<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug>(
) -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// A gauge of a fractional value (seconds, ratios).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Seconds as a histogram observes them.
pub fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// A count as a counter increment (saturating).
pub fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The outcome label of an append.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What [`crate::EventStore::append`] counts: appends by outcome, their
/// latency, and the events appended.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    appends: Family<OutcomeLabel, Counter>,
    append_seconds: Histogram,
    appended_events: Counter,
    group_appends: Histogram,
    group_events: Histogram,
}

/// Bucket bounds of the group-size histograms (appends or events per group).
const GROUP_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 2000.0];

impl Default for StoreMetrics {
    fn default() -> Self {
        let appends = Family::default();
        // Both outcomes exist from the start, so dashboards see 0, not nothing.
        for outcome in ["ok", "error"] {
            drop(appends.get_or_create(&OutcomeLabel { outcome }));
        }
        StoreMetrics {
            appends,
            append_seconds: latency_histogram(),
            appended_events: Counter::default(),
            group_appends: Histogram::new(GROUP_BUCKETS),
            group_events: Histogram::new(GROUP_BUCKETS),
        }
    }
}

impl StoreMetrics {
    /// Adds these series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fulcrum_appends",
            "Appends to the event store by outcome (ok, error)",
            self.appends.clone(),
        );
        registry.register(
            "fulcrum_append_duration_seconds",
            "Latency of an append, from the call to its answer",
            self.append_seconds.clone(),
        );
        registry.register(
            "fulcrum_appended_events",
            "Events appended to the event store",
            self.appended_events.clone(),
        );
        registry.register(
            "fulcrum_append_group_appends",
            "Appends per group commit",
            self.group_appends.clone(),
        );
        registry.register(
            "fulcrum_append_group_events",
            "Events per group commit",
            self.group_events.clone(),
        );
    }

    /// Records the size of a group about to be written.
    pub(crate) fn group_formed(&self, appends: usize, events: usize) {
        self.group_appends.observe(appends as f64);
        self.group_events.observe(events as f64);
    }

    /// Counts one append that took `elapsed` and, when it succeeded, wrote
    /// `events` events.
    pub(crate) fn append(&self, ok: bool, elapsed: Duration, events: usize) {
        let outcome = if ok { "ok" } else { "error" };
        self.appends.get_or_create(&OutcomeLabel { outcome }).inc();
        self.append_seconds.observe(seconds(elapsed));
        if ok {
            self.appended_events.inc_by(count(events));
        }
    }

    /// Appends that ended with `outcome` (`"ok"` or `"error"`).
    pub fn appends(&self, outcome: &'static str) -> u64 {
        self.appends
            .get(&OutcomeLabel { outcome })
            .map_or(0, |c| c.get())
    }

    /// Events appended.
    pub fn appended_events(&self) -> u64 {
        self.appended_events.get()
    }
}
