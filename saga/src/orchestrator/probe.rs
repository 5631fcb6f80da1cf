//! The orchestrator's metrics and its fault hooks for tests.

use std::sync::atomic::AtomicU64;

use eventstore::metrics::{latency_family, LatencyFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The orchestrator's series in the process's metrics registry (see
/// [`eventstore::metrics`]) and a fault hook, for tests, benchmarks and
/// operators. The series count whether or not they are
/// [registered](SagaProbe::register).
#[derive(Debug)]
pub struct SagaProbe {
    /// Kafka messages received by this process's consumer.
    pub received: Counter,
    /// Facts recorded (from Kafka, or in-process from the events this
    /// process appended).
    pub observed: Counter,
    /// Facts dropped as duplicates: redeliveries, and the Kafka copies of
    /// facts recorded in-process.
    pub duplicates: Counter,
    /// Messages that could not be read as events (logged as errors).
    pub discarded: Counter,
    /// Step attempts carried out (sent, or re-sent).
    pub steps: Counter,
    /// Step attempts that failed.
    pub failures: Counter,
    /// Saga changes committed.
    pub changes: Counter,
    /// Sweeps of this process's timer (it runs in one process at a time).
    pub timer_sweeps: Counter,
    /// Step attempts by step and outcome (ok, error).
    by_step: Family<StepLabels, Counter>,
    /// Step latency by step.
    step_seconds: LatencyFamily<StepLabel>,
    /// When non-zero: once this many saga changes committed, the
    /// orchestrator stops with
    /// [`SagaError::Crashed`](crate::SagaError::Crashed) before carrying
    /// out the steps of the last one or committing offsets (the test hook
    /// that stops it at a step boundary).
    pub crash_after_changes: AtomicU64,
    /// When non-zero: once this many step attempts were carried out, the
    /// orchestrator stops with
    /// [`SagaError::Crashed`](crate::SagaError::Crashed) after their
    /// commands committed and before the saga records their outcomes (the
    /// test hook that stops it between a step's command and its in-process
    /// continuation).
    pub crash_after_steps: AtomicU64,
}

/// The labels of a step attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
    outcome: &'static str,
}

/// The label of a step.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

impl Default for SagaProbe {
    fn default() -> Self {
        SagaProbe {
            received: Counter::default(),
            observed: Counter::default(),
            duplicates: Counter::default(),
            discarded: Counter::default(),
            steps: Counter::default(),
            failures: Counter::default(),
            changes: Counter::default(),
            timer_sweeps: Counter::default(),
            by_step: Family::default(),
            step_seconds: latency_family(),
            crash_after_changes: AtomicU64::new(0),
            crash_after_steps: AtomicU64::new(0),
        }
    }
}

impl SagaProbe {
    /// Adds these series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "fulcrum_saga_messages_received",
                "Kafka messages the saga consumer received",
                &self.received,
            ),
            (
                "fulcrum_saga_messages_observed",
                "Facts recorded by a saga (from Kafka or in-process)",
                &self.observed,
            ),
            (
                "fulcrum_saga_messages_duplicate",
                "Facts a saga had already recorded (redeliveries, Kafka copies of in-process facts)",
                &self.duplicates,
            ),
            (
                "fulcrum_saga_messages_discarded",
                "Messages that could not be read as events",
                &self.discarded,
            ),
            (
                "fulcrum_saga_step_attempts",
                "Step attempts carried out (sent or re-sent)",
                &self.steps,
            ),
            (
                "fulcrum_saga_step_failures",
                "Step attempts that failed",
                &self.failures,
            ),
            (
                "fulcrum_saga_changes",
                "Saga changes committed",
                &self.changes,
            ),
            (
                "fulcrum_saga_timer_sweeps",
                "Sweeps of the saga timer in this process",
                &self.timer_sweeps,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "fulcrum_saga_steps",
            "Step attempts by step and outcome (ok, error)",
            self.by_step.clone(),
        );
        registry.register(
            "fulcrum_saga_step_duration_seconds",
            "Latency of a step attempt, by step",
            self.step_seconds.clone(),
        );
    }

    /// Counts a step attempt that took `elapsed`.
    pub(super) fn step_done(&self, step: &'static str, ok: bool, elapsed: std::time::Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.by_step
            .get_or_create(&StepLabels { step, outcome })
            .inc();
        self.step_seconds
            .get_or_create(&StepLabel { step })
            .observe(eventstore::metrics::seconds(elapsed));
    }
}
