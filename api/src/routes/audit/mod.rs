//! Audit routes (operator, admin): a stream's history, its verification and
//! its state at any point; search over the global order; everything one
//! request caused; seals and inclusion proofs.
//!
//! Every route checks the role first (a customer gets 403 before any
//! lookup), then its query string by the shared rules of
//! [`crate::routes::queries::Params`].

mod correlation;
mod seals;
mod search;
mod streams;

use chrono::{DateTime, Utc};

use crate::error::ApiError;

pub use correlation::{
    correlation, CausalNode, Correlated, CorrelationAnswer, CorrelationFormat, CorrelationPath,
    CorrelationQuery, CorrelationTree, MAX_CORRELATED,
};
pub use seals::{proof, seal_now, seals, EventPath, SealListQuery, SealOutcome, SealPage};
pub use search::{events, Page, SearchQuery};
pub use streams::{
    stream_events, stream_state, verify_stream, StateQuery, StreamEvents, StreamPath, StreamState,
};

/// A failure of the store, answered as a 500 that names nothing inside.
fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(error.into())
}

/// A query parameter holding an RFC 3339 time.
fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 time, e.g. 2026-12-02T10:00:00Z".to_owned())
}
