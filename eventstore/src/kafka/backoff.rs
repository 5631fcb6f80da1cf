//! Exponential backoff with jitter, for everything that retries Kafka or
//! the database: the relay's re-sends, topic creation, a consumer's
//! receive errors, the projectors' transaction retries.
//!
//! Built on [`backon`]'s exponential backoff (factor 2) with jitter. backon
//! adds a random 0–100 % to each step, so the steps it is given are half
//! the wanted delays: step `n` (from 1) is `min·2ⁿ⁻¹/2`, capped at `max/2`,
//! and the delay drawn for it lies in `[step, 2·step)`. So the first delay
//! lies in `[min/2, min)`, each later one is on average about twice the one
//! before, and no delay exceeds `max`; at the cap delays keep their jitter
//! (in `[max/2, max)`), so that many clients waiting for the same broker do
//! not retry in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// How many steps it takes at most to reach any cap from any start:
/// doubling 64 times exceeds every `Duration` ratio that matters here.
const MAX_STEPS: u32 = 64;

/// Exponential backoff with jitter between `min` and `max`; see the
/// [module documentation](self). Not thread-safe: one per retry loop.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    steps: ExponentialBackoff,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first delay is about `min` (in `[min/2, min)`) and
    /// whose delays never exceed `max` (taken as `min` when smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        let builder = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .without_max_times();
        Backoff {
            builder,
            steps: builder.build(),
            max,
            failures: 0,
        }
    }

    /// The pause before the next attempt, and counts a failure. Grows from
    /// about `min` up to `max`, with jitter.
    // Not `Iterator::next`: a backoff never ends, so no `Option`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // The steps never end (no limit of times); the cap only guards
        // against rounding in backon's float arithmetic.
        self.steps.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts over (after a success): the next pause is about `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.steps = self.builder.build();
    }

    /// Failures counted by [`Backoff::next`] since the start or the last
    /// [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The pause before retry number `attempt` (1-based; 0 counts as 1),
    /// drawn as the `attempt`-th [`Backoff::next`] of a fresh backoff, but
    /// without keeping state: for durable retries whose attempt count is
    /// stored elsewhere.
    pub fn delay_for_attempt(min: Duration, max: Duration, attempt: u32) -> Duration {
        let mut backoff = Backoff::new(min, max);
        let mut delay = backoff.next();
        for _ in 1..attempt.min(MAX_STEPS) {
            delay = backoff.next();
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// Whether `delay` lies in `[low, high]`, give or take backon's float
    /// rounding.
    fn within(delay: Duration, low: Duration, high: Duration) -> bool {
        let slack = Duration::from_micros(10);
        delay + slack >= low && delay <= high + slack
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(MIN, MAX);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next()).collect();
        assert_eq!(backoff.failures(), 12);
        // Step n lies in [min·2ⁿ⁻¹/2, min·2ⁿ⁻¹), capped at [max/2, max).
        for (n, delay) in delays.iter().enumerate() {
            let step = MIN.saturating_mul(1 << n).min(MAX);
            assert!(
                within(*delay, step / 2, step),
                "delay {n} is {delay:?}, outside [{:?}, {step:?}]",
                step / 2
            );
        }
        // It grows: the last delays are far beyond the first.
        assert!(delays[0] <= MIN && within(delays[11], MAX / 2, MAX));
        // The cap holds and keeps its jitter.
        assert!(delays[6..]
            .iter()
            .all(|d| *d <= MAX && within(*d, MAX / 2, MAX)));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        let again = backoff.next();
        assert!(within(again, MIN / 2, MIN), "after reset: {again:?}");
    }

    #[test]
    fn delays_are_jittered() {
        let mut backoff = Backoff::new(MAX, MAX);
        let delays: std::collections::HashSet<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(delays.len() > 1, "twenty equal delays: no jitter");
    }

    #[test]
    fn a_maximum_below_the_minimum_is_the_minimum() {
        let mut backoff = Backoff::new(MIN, Duration::ZERO);
        for _ in 0..5 {
            let delay = backoff.next();
            assert!(within(delay, MIN / 2, MIN), "{delay:?}");
        }
    }

    #[test]
    fn the_delay_for_an_attempt_follows_the_same_curve() {
        for attempt in [0, 1] {
            let delay = Backoff::delay_for_attempt(MIN, MAX, attempt);
            assert!(within(delay, MIN / 2, MIN), "attempt {attempt}: {delay:?}");
        }
        let third = Backoff::delay_for_attempt(MIN, MAX, 3);
        assert!(within(third, MIN * 2, MIN * 4), "{third:?}");
        let late = Backoff::delay_for_attempt(MIN, MAX, u32::MAX);
        assert!(late <= MAX && within(late, MAX / 2, MAX), "{late:?}");
    }
}
