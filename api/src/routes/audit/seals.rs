//! Seals over the audit trail: listing them, sealing on demand, and an
//! event's inclusion proof in the latest seal.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventstore::seal::{self, Proof, ProofError, Seal};
use serde::Serialize;
use uuid::Uuid;

use super::internal;
use crate::auth::{Admitted, Staff};
use crate::error::ApiError;
use crate::extract::Segment;
use crate::routes::paging::{Limit, DEFAULT_LIMIT, MAX_LIMIT};
use crate::routes::queries::{parse_limit, Params};
use crate::startup::AppState;

/// One page of seals.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SealPage {
    /// Seals, oldest first.
    pub items: Vec<Seal>,
    /// Pass back as `after=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Hex Ed25519 public key this server seals with (null when it has no
    /// seal key).
    pub public_key: Option<String>,
}

/// `GET /api/v1/audit/seals?after=&limit=`: the seals, oldest first, and
/// the public key they are checked with.
#[tracing::instrument(skip_all)]
pub async fn seals(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    params: Params,
) -> Result<Json<SealPage>, ApiError> {
    let mut query = params.check_exact(&["after", "limit"]);
    let after = query
        .get("after", |v| {
            v.parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| "must be a seal id (0 or more)".to_owned())
        })
        .unwrap_or(0);
    let limit = query
        .get("limit", |v| parse_limit(v, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    query.finish()?;
    let mut items = seal::list_seals(state.store.pool(), after, limit + 1)
        .await
        .map_err(internal)?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|s| s.seal_id.to_string()))
        .flatten();
    Ok(Json(SealPage {
        items,
        next_cursor,
        public_key: state.seal_key.as_ref().map(|k| k.public_key_hex()),
    }))
}

/// What sealing on demand did.
#[derive(Debug)]
pub enum SealOutcome {
    /// 201: a new seal.
    Sealed(Seal),
    /// 200: nothing was new; the latest seal.
    Latest(Seal),
}

impl IntoResponse for SealOutcome {
    fn into_response(self) -> Response {
        match self {
            SealOutcome::Sealed(seal) => (StatusCode::CREATED, Json(seal)).into_response(),
            SealOutcome::Latest(seal) => Json(seal).into_response(),
        }
    }
}

/// `POST /api/v1/audit/seals`: seals what is new now, without waiting for
/// the sealer's interval. 201 with the new seal; 200 with the latest seal
/// when nothing is new; 409 when the store has no events; 503 when this
/// server has no seal key.
#[tracing::instrument(skip_all)]
pub async fn seal_now(
    State(state): State<AppState>,
    _: Admitted<Staff>,
) -> Result<SealOutcome, ApiError> {
    let key = state.seal_key.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this server has no seal key (FULCRUM_SEAL_KEY)".into())
    })?;
    if let Some(sealed) = seal::seal_now(state.store.pool(), key)
        .await
        .map_err(internal)?
    {
        return Ok(SealOutcome::Sealed(sealed));
    }
    match seal::latest_seal(state.store.pool())
        .await
        .map_err(internal)?
    {
        Some(latest) => Ok(SealOutcome::Latest(latest)),
        None => Err(ApiError::Conflict(
            "nothing to seal: the store has no events yet".into(),
        )),
    }
}

/// `GET /api/v1/audit/events/{event_id}/proof`: the inclusion proof of the
/// event in the latest seal. 404 for an unknown event; 409 when no seal
/// covers it yet, or when it was altered after it was sealed.
#[tracing::instrument(skip(state))]
pub async fn proof(
    State(state): State<AppState>,
    _: Admitted<Staff>,
    Segment(event_id): Segment,
) -> Result<Json<Proof>, ApiError> {
    let event_id = Uuid::parse_str(&event_id)
        .map_err(|_| ApiError::NotFound(format!("no event {event_id}")))?;
    match seal::proof_for(state.store.pool(), event_id).await {
        Ok(proof) => Ok(Json(proof)),
        Err(error @ ProofError::NoSuchEvent(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ (ProofError::NotSealed(_) | ProofError::AlteredSinceSealed(_))) => {
            Err(ApiError::Conflict(error.to_string()))
        }
        Err(ProofError::SealData(message)) => Err(internal(anyhow::anyhow!(message))),
        Err(ProofError::Store(error)) => Err(internal(error)),
    }
}

/// The path of an event's proof.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EventPath {
    /// The event's id.
    pub event_id: Uuid,
}

/// The query of `GET /api/v1/audit/seals`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SealListQuery {
    /// The `next_cursor` (a seal id) of the previous page.
    #[schemars(range(min = 0))]
    pub after: Option<i64>,
    /// Page size.
    #[serde(flatten)]
    pub limit: Limit,
}
