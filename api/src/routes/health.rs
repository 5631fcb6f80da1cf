//! Liveness and readiness probes (no token needed).

use axum::extract::State;
use axum::Json;

use super::answer::Health;

use crate::error::ApiError;
use crate::startup::AppState;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the database answers and every migration is applied.
#[tracing::instrument(skip(state))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // A probe answers within a second, whatever the database does.
    let checked = tokio::time::timeout(
        READY_TIMEOUT,
        eventstore::db::migrations_applied(state.store.pool()),
    )
    .await;
    match checked {
        Ok(Ok(true)) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Ok(Ok(false)) => Err(ApiError::Unavailable("migrations are not applied".into())),
        Err(_late) => {
            tracing::warn!("readiness: the database did not answer in time");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
        Ok(Err(error)) => {
            // The reason is for the logs; a probe needs no internals.
            tracing::warn!(%error, "readiness: the database is unreachable");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
    }
}
