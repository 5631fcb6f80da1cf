//! What every list route shares: its page size and its paging parameters,
//! in one place. Each list's query is also a type, so the contract lists
//! exactly the parameters the handler's checks accept.

use chrono::NaiveDate;
use domain::{OrderStatus, SagaStatus};
use schemars::JsonSchema;
use serde::Deserialize;

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 500;

/// `limit`: how many items a page holds.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Limit {
    /// Page size, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// `limit` and `cursor`: one page of a list, newest first.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Paging {
    /// Page size, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (absent for the first page).
    pub cursor: Option<String>,
}

/// `min_position`, which every read-model query takes (read-your-writes).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadQuery {
    /// Wait (up to 5 s, else 504) until the read model has this global
    /// position: the `position` a write answered.
    #[schemars(range(min = 0))]
    pub min_position: Option<i64>,
}

/// The query of `GET /api/v1/orders`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct OrderListQuery {
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
    /// Paging.
    #[serde(flatten)]
    pub paging: Paging,
    /// Read-your-writes.
    #[serde(flatten)]
    pub read: ReadQuery,
}

/// The query of `GET /api/v1/stats/sales`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SalesQuery {
    /// First day (UTC, `YYYY-MM-DD`, inclusive).
    pub from: Option<NaiveDate>,
    /// Last day (UTC, `YYYY-MM-DD`, inclusive); not before `from`.
    pub to: Option<NaiveDate>,
    /// Read-your-writes.
    #[serde(flatten)]
    pub read: ReadQuery,
}

/// The query of `GET /api/v1/admin/sagas`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SagaListQuery {
    /// Only sagas with this status.
    pub status: Option<SagaStatus>,
    /// Paging.
    #[serde(flatten)]
    pub paging: Paging,
}
