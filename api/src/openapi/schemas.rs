//! The committed contract files (`schemas/openapi.json` and
//! `schemas/<name>.json`) and the routes that serve them.

use std::collections::BTreeMap;
use std::sync::Arc;

use aide::redoc::Redoc;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use projections::read::{OrderPage, OrderView, ProductView, StockView};
use projections::status::{DeadLetter, ProjectionInfo};
use saga::admin::{SagaDetail, SagaPage};
use schemars::schema_for;

use crate::error::{ApiError, Problem};
use crate::routes::admin::{DeadLetters, RebuildStarted};
use crate::routes::answer::{Items, OrderPlacedReply, OrderReply, SkuReply, Written};
use crate::routes::orders::{Cancel, PlaceOrder, Ship};
use crate::routes::products::DefineProduct;
use crate::routes::queries::Days;
use crate::routes::sagas::{Abort, SagaChanged};

/// The files `api` owns under `schemas/`, by path, pretty-printed with a
/// final newline (as committed): `openapi.json` and one schema per request
/// body and answer. The commands' and events' schemas are the domain's
/// ([`domain::schemas::all`]).
pub fn contract_schemas() -> Vec<(String, String)> {
    let mut files = vec![("openapi.json".to_owned(), pretty(&super::document()))];
    let types = [
        ("problem", schema_for!(Problem)),
        ("define-product", schema_for!(DefineProduct)),
        (
            "receive-stock",
            schema_for!(crate::routes::inventory::Receipt),
        ),
        ("place-order", schema_for!(PlaceOrder)),
        ("cancel-order", schema_for!(Cancel)),
        ("ship-order", schema_for!(Ship)),
        ("abort-saga", schema_for!(Abort)),
        ("sku-written", schema_for!(Written<SkuReply>)),
        ("order-placed", schema_for!(Written<OrderPlacedReply>)),
        ("order-written", schema_for!(Written<OrderReply>)),
        ("order", schema_for!(OrderView)),
        ("order-page", schema_for!(OrderPage)),
        ("products", schema_for!(Items<ProductView>)),
        ("stock", schema_for!(StockView)),
        ("sales", schema_for!(Days)),
        ("projections", schema_for!(Items<ProjectionInfo>)),
        ("dead-letters", schema_for!(DeadLetters)),
        ("dead-letter", schema_for!(DeadLetter)),
        ("rebuild-started", schema_for!(RebuildStarted)),
        ("saga-page", schema_for!(SagaPage)),
        ("saga", schema_for!(SagaDetail)),
        ("saga-changed", schema_for!(SagaChanged)),
        ("event", schema_for!(eventstore::RecordedEvent)),
        ("event-page", schema_for!(crate::routes::audit::Page)),
        (
            "stream-events",
            schema_for!(crate::routes::audit::StreamEvents),
        ),
        ("stream-verification", schema_for!(eventstore::Verification)),
        (
            "stream-state",
            schema_for!(crate::routes::audit::StreamState),
        ),
        (
            "correlation",
            schema_for!(crate::routes::audit::CorrelationAnswer),
        ),
        ("seal", schema_for!(eventstore::seal::Seal)),
        ("seal-page", schema_for!(crate::routes::audit::SealPage)),
        ("proof", schema_for!(eventstore::seal::Proof)),
    ];
    files.extend(
        types
            .into_iter()
            .map(|(name, schema)| (format!("{name}.json"), pretty(&schema))),
    );
    files
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    // Serialising a schema (maps with string keys) cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Every contract file, generated once at start-up, and the reference page.
#[derive(Clone)]
pub struct Contract {
    files: Arc<BTreeMap<String, String>>,
    docs: Arc<str>,
}

impl Contract {
    /// Generates the files (`api`'s and the domain's) and the `/docs` page.
    pub fn new() -> Self {
        let mut files: BTreeMap<String, String> = contract_schemas().into_iter().collect();
        for (path, schema) in domain::schemas::all() {
            files.insert(path.to_owned(), pretty(&schema));
        }
        let docs = Redoc::new("/openapi.json").with_title("Fulcrum API").html();
        Contract {
            files: Arc::new(files),
            docs: docs.into(),
        }
    }

    /// The no-token routes: `GET /openapi.json`, `GET /docs` and
    /// `GET /schemas/{path}` (e.g. `/schemas/order.json`,
    /// `/schemas/events/order.json`).
    pub fn routes<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let openapi = self.clone();
        let docs = self.docs.clone();
        Router::new()
            .route(
                "/openapi.json",
                get(move || async move { openapi.file("openapi.json") }),
            )
            .route("/docs", get(move || async move { Html(docs.to_string()) }))
            .route(
                "/schemas/{*path}",
                get(move |Path(path): Path<String>| async move { self.file(&path) }),
            )
    }

    fn file(&self, path: &str) -> Response {
        match self.files.get(path) {
            Some(text) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                text.clone(),
            )
                .into_response(),
            None => ApiError::NotFound(format!("no schema {path}")).into_response(),
        }
    }
}

impl Default for Contract {
    fn default() -> Self {
        Self::new()
    }
}
