//! The typed answers of the write and admin routes: each status code and
//! body is a Rust type, so the OpenAPI contract is derived from what the
//! handlers really return.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A JSON answer with the status `STATUS` (201, 202, ...), fixed by the type.
#[derive(Debug)]
pub struct Answer<const STATUS: u16, T>(pub T);

/// 201 Created with a JSON body.
pub type Created<T> = Answer<201, T>;
/// 202 Accepted with a JSON body.
pub type Accepted<T> = Answer<202, T>;

impl<const STATUS: u16, T: Serialize> IntoResponse for Answer<STATUS, T> {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(STATUS).unwrap_or(StatusCode::OK);
        (status, Json(self.0)).into_response()
    }
}

/// A write's answer: what the command reports plus the global `position`
/// the write reached (pass it as `min_position` to read your write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Written<T> {
    /// What the command reports.
    #[serde(flatten)]
    pub reply: T,
    /// The global position of the last event the write appended (or of the
    /// stream's last event, when it appended nothing).
    pub position: i64,
}

/// The reply of a product definition or a stock receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SkuReply {
    /// The product's SKU.
    pub sku: String,
}

/// The reply of placing an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedReply {
    /// The new order's id.
    pub order_id: Uuid,
    /// Always `placed`: the saga takes it from here.
    pub status: PlacedStatus,
}

/// The status of a just placed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacedStatus {
    /// Placed; the saga reserves stock and takes payment next.
    Placed,
}

/// The reply of a command on an existing order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderReply {
    /// The order.
    pub order_id: Uuid,
}

/// `{"status"}` of the probes.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: String,
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Items<T> {
    /// The listed things.
    pub items: Vec<T>,
}
