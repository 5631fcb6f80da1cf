//! Rate limits (DESIGN.md, "HTTP conventions"): requests per second per
//! client address, checked before anything else, and per token subject,
//! checked once the token is verified. Over a limit is 429 problem+json
//! with `Retry-After`. `FULCRUM_RATE_LIMIT` sets both (the burst equals
//! the rate); 0 turns them off. GCRA, from the `governor` crate.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The default `FULCRUM_RATE_LIMIT`: requests per second per subject (and
/// per client address).
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

/// Keys remembered before idle ones are forgotten.
const KEYS_KEPT: usize = 10_000;

/// One keyed limit, or none (off).
#[derive(Debug)]
pub struct Limit<K: Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: Hash + Eq + Clone> Limit<K> {
    /// `per_second` requests per second per key, with a burst of as many;
    /// 0: no limit.
    pub fn per_second(per_second: u32) -> Self {
        Limit(
            NonZeroU32::new(per_second)
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate).allow_burst(rate))),
        )
    }

    /// Admits one request of `key`, or answers 429 with when to retry.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        if limiter.len() > KEYS_KEPT {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().saturating_add(1),
            }
        })
    }
}

/// The limit per client address, applied by [`crate::serve`].
pub type AddressLimit = Limit<IpAddr>;

/// The limit per token subject, applied by [`crate::auth::Caller`].
pub type SubjectLimit = Limit<String>;
