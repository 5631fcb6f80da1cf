//! Helpers for the end-to-end tests in `tests/`: a real server on a free
//! port over a fresh database, tokens, and requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
mod invariants;
pub mod system;

use api::auth::{mint_hs256, Authenticator, JwtConfig, Role};
use api::{AppState, Application};
use eventstore::testing::TestDb;
use reqwest::{Response, StatusCode};
use serde_json::Value;

/// The HS256 secret test servers run with.
pub const SECRET: &str = "an-end-to-end-test-secret-of-enough-bytes";

/// A running server and what it runs on.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The server's database.
    pub db: TestDb,
    /// The server's state (to arrange a "given" through the command layer).
    pub state: AppState,
    /// An HTTP client.
    pub client: reqwest::Client,
}

/// JWT settings matching [`SECRET`].
pub fn jwt_config() -> JwtConfig {
    JwtConfig {
        jwt_secret: Some(SECRET.into()),
        jwt_public_key_pem: None,
        jwt_issuer: "fulcrum".into(),
        jwt_audience: "fulcrum-api".into(),
        jwt_max_ttl: api::auth::DEFAULT_MAX_TTL,
        dev: false,
    }
}

/// A valid token for `sub` with `role`.
pub fn token(sub: &str, role: Role) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        sub,
        role,
        std::time::Duration::from_secs(600),
        "fulcrum",
        "fulcrum-api",
    )
    .unwrap()
}

impl TestApp {
    /// Starts a server over a fresh, migrated database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with_pool(10).await
    }

    /// [`TestApp::spawn`] with a pool of `connections`.
    pub async fn spawn_with_pool(connections: u32) -> TestApp {
        let db = TestDb::with_pool_size(connections).await;
        let store = db.store();
        let mut state = AppState::new(store, Authenticator::from_config(&jwt_config()).unwrap());
        state.seal_key = Some(eventstore::seal::SealKey::ephemeral());
        let app = Application::with_state(state.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            db,
            state,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` as JSON to `path` with `token` (if any).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// GETs `path` with `token` (if any).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Waits (up to 10 s) until every committed event is readable in the
    /// gap-free global order. Readers only see events of transactions older
    /// than every running one, and the horizon is cluster-wide: another
    /// test's `CREATE DATABASE` holds it back for a moment.
    pub async fn settle(&self) {
        for _ in 0..1000 {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            if behind == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the global order did not settle within 10 s");
    }

    /// Every event in the store, read through `GET /api/v1/audit/events`
    /// once the store has settled.
    pub async fn audit_events(&self) -> Vec<Value> {
        self.settle().await;
        let operator = token("auditor", Role::Operator);
        let mut events = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get(
                    &format!("/api/v1/audit/events?limit=500&after={cursor}"),
                    Some(&operator),
                )
                .await;
            assert_eq!(page.status(), StatusCode::OK);
            let page: Value = page.json().await.unwrap();
            events.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return events,
            }
        }
    }

    /// Defines product `sku` at `unit_price` EUR and receives `stock` units, as an operator.
    pub async fn given_product(&self, sku: &str, unit_price: i64, stock: i64) {
        let operator = token("op", Role::Operator);
        let body = serde_json::json!({"sku": sku, "name": format!("Product {sku}"), "unit_price": unit_price, "currency": "EUR"});
        assert_eq!(
            self.post("/api/v1/products", Some(&operator), &body)
                .await
                .status(),
            201
        );
        let receipt = serde_json::json!({"quantity": stock});
        let path = format!("/api/v1/inventory/{sku}/receipts");
        assert_eq!(
            self.post(&path, Some(&operator), &receipt).await.status(),
            201
        );
    }

    /// Catches every read model up with the whole store, as the projectors
    /// would (these tests run no Kafka projector), once the global order
    /// has settled. Events already applied are skipped, so calling it again
    /// only applies what is new.
    pub async fn project(&self) {
        self.settle().await;
        for projection in projections::Projection::ALL {
            projections::catch_up(
                &self.state.store,
                projection,
                &projection.live_schema(),
                eventstore::Checkpoint::START,
            )
            .await
            .unwrap();
        }
    }
}

/// A valid order body for `sku`.
pub fn order_body(sku: &str, quantity: i64) -> Value {
    serde_json::json!({
        "lines": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa"
    })
}

/// Asserts `response` is problem+json with `status`; returns the problem.
pub async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}
