//! Liveness and readiness probes (no token needed).

use axum::extract::State;
use axum::Json;

use super::answer::Health;

use crate::error::ApiError;
use crate::startup::AppState;

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the database answers and every migration is applied.
#[tracing::instrument(skip(state))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match eventstore::db::migrations_applied(state.store.pool()).await {
        Ok(true) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Ok(false) => Err(ApiError::Unavailable("migrations are not applied".into())),
        Err(error) => {
            // The reason is for the logs; a probe needs no internals.
            tracing::warn!(%error, "readiness: the database is unreachable");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
    }
}
