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
        Err(error) => Err(ApiError::Unavailable(format!(
            "database unreachable: {error}"
        ))),
    }
}
