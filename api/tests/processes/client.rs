//! What the tests send the servers as a client: tokens, order bodies, and
//! the writes that set a scene (products, stock, orders), retried on 503
//! as a client retries them.

use std::time::{Duration, Instant};

use api::auth::{mint_hs256, Role};
use serde_json::{json, Value};

/// The HS256 secret the servers run with.
pub const SECRET: &str = "a-fault-injection-test-secret-long-enough";

/// A valid token for `sub` with `role`.
pub fn token(sub: &str, role: Role) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        sub,
        role,
        Duration::from_secs(600),
        "fulcrum",
        "fulcrum-api",
    )
    .unwrap()
}

/// A product that is defined but never stocked: an order for it is
/// cancelled (`out_of_stock`) by its saga without the payment gateway,
/// whose sandbox keeps its books in the memory of one process.
pub const UNSTOCKED: &str = "SKU-NONE";

/// An order of `quantity` of `sku`, paid with an approving sandbox token.
pub fn order_body(sku: &str, quantity: i64) -> Value {
    json!({
        "lines": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa"
    })
}

/// Posts `body` to `url` as the holder of `bearer` under one
/// idempotency key, again while the server answers 503 (a database
/// connection was not free in time, as under load while a broker is
/// away), as a client does: the key makes a repeat safe. At most 30 s.
pub async fn post_retrying(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: &Value,
) -> reqwest::Response {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .post(url)
            .bearer_auth(bearer)
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
            .await
            .unwrap();
        if response.status() != 503 || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Defines `sku` at `unit_price` (cents, EUR) through `base`.
pub async fn define_product(client: &reqwest::Client, base: &str, sku: &str, unit_price: i64) {
    let body = json!({"sku": sku, "name": "Widget", "unit_price": unit_price, "currency": "EUR"});
    let bearer = token("olga", Role::Operator);
    let defined = post_retrying(client, &format!("{base}/api/v1/products"), &bearer, &body).await;
    assert_eq!(defined.status(), 201);
}

/// Defines `sku` at 100 with 50 in stock through `base`.
pub async fn product(client: &reqwest::Client, base: &str, sku: &str) {
    define_product(client, base, sku, 100).await;
    receipt(client, base, sku, 50).await;
}

/// Receives `quantity` of `sku` through `base`; the position it reached.
pub async fn receipt(client: &reqwest::Client, base: &str, sku: &str, quantity: i64) -> i64 {
    let url = format!("{base}/api/v1/inventory/{sku}/receipts");
    let bearer = token("olga", Role::Operator);
    let received = post_retrying(client, &url, &bearer, &json!({"quantity": quantity})).await;
    assert_eq!(received.status(), 201);
    let body: serde_json::Value = received.json().await.unwrap();
    body["position"].as_i64().unwrap()
}

/// Places an order of `sku` through `base`.
pub async fn order(client: &reqwest::Client, base: &str, customer: &str, sku: &str) {
    let bearer = token(customer, Role::Customer);
    let url = format!("{base}/api/v1/orders");
    let placed = post_retrying(client, &url, &bearer, &order_body(sku, 1)).await;
    assert_eq!(placed.status(), 202);
}
