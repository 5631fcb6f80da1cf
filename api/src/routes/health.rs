//! Liveness and readiness probes (no token needed).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::startup::AppState;

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and every migration is applied.
#[tracing::instrument(skip(state))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match eventstore::db::migrations_applied(state.store.pool()).await {
        Ok(true) => Ok(Json(json!({"status": "ready"}))),
        Ok(false) => Err(ApiError::Unavailable("migrations are not applied".into())),
        Err(error) => {
            // The reason is for the logs; a probe needs no internals.
            tracing::warn!(%error, "readiness: the database is unreachable");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
    }
}
