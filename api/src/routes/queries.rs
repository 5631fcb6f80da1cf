//! The query API: answers from the read models, with read-your-writes.
//!
//! Every query route checks the role first, then its query string (see
//! [`params`] for the rules), then waits for `min_position` if asked, and
//! only then looks anything up. A successful answer carries
//! `X-Fulcrum-Position`: the read model's position, read before the data,
//! so the answer reflects at least the event at that position (passing it
//! back as `min_position` never waits).

mod catalog;
mod orders;
mod params;
mod sales;

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use projections::{Projection, ProjectionError};
use serde::Serialize;

use crate::error::ApiError;
use crate::startup::AppState;

pub use catalog::{products, stock};
pub use orders::{order, orders};
pub use params::{parse_limit, Checked, Params, MIN_POSITION};
pub use sales::{sales, Days};

/// The longest a query waits for its read model to reach `min_position`
/// before answering 504.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The longest pause between two looks at the read model while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The header carrying the read model's position on every query answer.
pub static POSITION_HEADER: HeaderName = HeaderName::from_static("x-fulcrum-position");

/// A read model ready to answer a query.
struct ReadModel {
    /// The schema to read (the projection's live one).
    schema: String,
    /// Its position when the query started.
    position: i64,
}

impl ReadModel {
    /// Waits until `projection` has `min_position` (when asked; at most
    /// [`MAX_WAIT`], else 504), then reads its position.
    async fn ready(
        state: &AppState,
        projection: Projection,
        min_position: Option<i64>,
    ) -> Result<ReadModel, ApiError> {
        let schema = projection.live_schema();
        if let Some(wanted) = min_position {
            wait_for(state, projection, &schema, wanted).await?;
        }
        let position = projections::position(state.store.pool(), &schema)
            .await
            .map_err(internal)?;
        Ok(ReadModel { schema, position })
    }

    /// A 200 with `body` and this read model's position.
    fn answer<T: Serialize>(&self, body: T) -> Positioned<T> {
        Positioned {
            position: self.position,
            body,
        }
    }

    /// `error`, answered with this read model's position: a 404 then tells
    /// "not in the read model at position N", which a client that wrote
    /// something later can wait out with `min_position`.
    fn refuse(&self, error: ApiError) -> Refusal {
        Refusal {
            position: Some(self.position),
            error,
        }
    }
}

/// A query's error, with `X-Fulcrum-Position` once the read model was read.
pub struct Refusal {
    position: Option<i64>,
    error: ApiError,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            position: None,
            error,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(position) = self.position {
            response
                .headers_mut()
                .insert(POSITION_HEADER.clone(), HeaderValue::from(position));
        }
        response
    }
}

/// Polls [`projections::has_position`], soon at first and then every
/// [`POLL_INTERVAL`], for at most [`MAX_WAIT`].
async fn wait_for(
    state: &AppState,
    projection: Projection,
    schema: &str,
    wanted: i64,
) -> Result<(), ApiError> {
    let pool = state.store.pool();
    let poll = async {
        let mut pause = Duration::from_millis(1);
        while !projections::has_position(pool, projection, schema, wanted)
            .await
            .map_err(internal)?
        {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_INTERVAL);
        }
        Ok::<(), ApiError>(())
    };
    tokio::time::timeout(MAX_WAIT, poll).await.map_err(|_| {
        ApiError::Timeout(format!(
            "the {projection} read model did not reach position {wanted} within {} s",
            MAX_WAIT.as_secs()
        ))
    })?
}

/// A 200 JSON answer with `X-Fulcrum-Position`.
pub struct Positioned<T> {
    /// The read model's position.
    pub position: i64,
    /// The answer.
    pub body: T,
}

impl<T: Serialize> IntoResponse for Positioned<T> {
    fn into_response(self) -> Response {
        let header = [(POSITION_HEADER.clone(), HeaderValue::from(self.position))];
        (header, Json(self.body)).into_response()
    }
}

pub use super::answer::Items;

/// A read-model failure is ours, not the client's.
fn internal(error: ProjectionError) -> ApiError {
    ApiError::Internal(error.into())
}
