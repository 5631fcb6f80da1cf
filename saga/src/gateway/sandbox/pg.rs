//! The sandbox's books in Postgres (`sandbox_requests`,
//! `sandbox_authorizations`, `sandbox_movements`): one set for every process
//! of a deployment, so an authorisation one process made can be captured,
//! voided or refunded by another, and survives a restart.

use sqlx::{PgPool, Row};

use super::ledger::{
    same_call, unknown_authorization, Accepted, Authorization, Books, Movement, Rule,
};
use crate::gateway::{AuthorizationRequest, GatewayAnswer, GatewayError, Operation};

/// The sandbox's books in the event store's database.
#[derive(Clone)]
pub struct PgBooks {
    pool: PgPool,
}

impl PgBooks {
    /// Books in the database behind `pool` (its migrations create the tables).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The books could not be reached or answered oddly: worth retrying.
fn unavailable(error: impl std::fmt::Display) -> GatewayError {
    GatewayError::Transient(format!("sandbox books: {error}"))
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Authorize => "authorize",
        Operation::Capture => "capture",
        Operation::Void => "void",
        Operation::Refund => "refund",
    }
}

fn accepted_from(row: &sqlx::postgres::PgRow) -> Result<Accepted, GatewayError> {
    let request: serde_json::Value = row.try_get("request").map_err(unavailable)?;
    let answer: Option<serde_json::Value> = row.try_get("answer").map_err(unavailable)?;
    Ok(Accepted {
        request: serde_json::from_value::<AuthorizationRequest>(request).map_err(unavailable)?,
        due_at: row.try_get("due_at").map_err(unavailable)?,
        answer: answer
            .map(serde_json::from_value::<GatewayAnswer>)
            .transpose()
            .map_err(unavailable)?,
    })
}

const SELECT_REQUEST: &str =
    "SELECT request, due_at, answer FROM sandbox_requests WHERE idempotency_key = $1";

#[async_trait::async_trait]
impl Books for PgBooks {
    async fn accept(&self, accepted: &Accepted) -> Result<Option<Accepted>, GatewayError> {
        let request = serde_json::to_value(&accepted.request).map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO sandbox_requests (idempotency_key, request, due_at) VALUES ($1, $2, $3) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&accepted.request.idempotency_key)
        .bind(request)
        .bind(accepted.due_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        self.request(&accepted.request.idempotency_key).await
    }

    async fn request(&self, key: &str) -> Result<Option<Accepted>, GatewayError> {
        let row = sqlx::query(SELECT_REQUEST)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(accepted_from).transpose()
    }

    async fn answer(
        &self,
        key: &str,
        answer: GatewayAnswer,
        amount: i64,
    ) -> Result<GatewayAnswer, GatewayError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let value = serde_json::to_value(&answer).map_err(unavailable)?;
        let given = sqlx::query(
            "UPDATE sandbox_requests SET answer = $2, answered_at = now() \
             WHERE idempotency_key = $1 AND answer IS NULL",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if given == 0 {
            // Answered already (by the process that accepted it, or by a
            // status call that found it overdue): the first answer stands.
            let row = sqlx::query(SELECT_REQUEST)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| GatewayError::Refused(format!("no request with key {key}")))?;
            return accepted_from(&row)?
                .answer
                .ok_or_else(|| unavailable("a request neither answered nor answerable"));
        }
        if let GatewayAnswer::Approved { authorization_id } = &answer {
            sqlx::query(
                "INSERT INTO sandbox_authorizations (authorization_id, amount) VALUES ($1, $2)",
            )
            .bind(authorization_id)
            .bind(amount)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(answer)
    }

    async fn apply(&self, movement: &Movement, rule: Rule) -> Result<(), GatewayError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The authorisation's row lock first: two calls with one key queue
        // here, and the second sees the first's movement below.
        let row = sqlx::query(
            "SELECT amount, captured, refunded, voided FROM sandbox_authorizations \
             WHERE authorization_id = $1 FOR UPDATE",
        )
        .bind(&movement.authorization_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let done = sqlx::query(
            "SELECT authorization_id, amount FROM sandbox_movements \
             WHERE operation = $1 AND idempotency_key = $2",
        )
        .bind(operation_name(movement.operation))
        .bind(&movement.idempotency_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(done) = done {
            let done = Movement {
                operation: movement.operation,
                idempotency_key: movement.idempotency_key.clone(),
                authorization_id: done.try_get("authorization_id").map_err(unavailable)?,
                amount: done.try_get("amount").map_err(unavailable)?,
            };
            return same_call(&done, movement);
        }
        let row = row.ok_or_else(|| unknown_authorization(&movement.authorization_id))?;
        let mut authorization = Authorization {
            amount: row.try_get("amount").map_err(unavailable)?,
            captured: row.try_get("captured").map_err(unavailable)?,
            refunded: row.try_get("refunded").map_err(unavailable)?,
            voided: row.try_get("voided").map_err(unavailable)?,
        };
        rule(&mut authorization, movement.amount)?;
        sqlx::query(
            "UPDATE sandbox_authorizations SET captured = $2, refunded = $3, voided = $4 \
             WHERE authorization_id = $1",
        )
        .bind(&movement.authorization_id)
        .bind(authorization.captured)
        .bind(authorization.refunded)
        .bind(authorization.voided)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        // A key first used on another authorisation at this very moment
        // conflicts here; the caller's retry then finds it and is refused.
        sqlx::query(
            "INSERT INTO sandbox_movements (operation, idempotency_key, authorization_id, amount) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(operation_name(movement.operation))
        .bind(&movement.idempotency_key)
        .bind(&movement.authorization_id)
        .bind(movement.amount)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn movements(&self, operation: Operation) -> Result<Vec<Movement>, GatewayError> {
        let rows = sqlx::query(
            "SELECT idempotency_key, authorization_id, amount FROM sandbox_movements \
             WHERE operation = $1 ORDER BY seq",
        )
        .bind(operation_name(operation))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(Movement {
                    operation,
                    idempotency_key: row.try_get("idempotency_key").map_err(unavailable)?,
                    authorization_id: row.try_get("authorization_id").map_err(unavailable)?,
                    amount: row.try_get("amount").map_err(unavailable)?,
                })
            })
            .collect()
    }
}
