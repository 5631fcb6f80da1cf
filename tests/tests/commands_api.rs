//! The command API end to end: every route's happy path, and every error
//! class leaving the event store untouched.
#![allow(clippy::unwrap_used)]

use api::auth::Role;
use commands::CommandContext;
use domain::order::OrderCommand;
use fulcrum_tests::{order_body, problem, token, TestApp};
use serde_json::{json, Value};

async fn place(app: &TestApp, customer: &str) -> String {
    let response = app
        .post(
            "/api/v1/orders",
            Some(&token(customer, Role::Customer)),
            &order_body("SKU-1", 2),
        )
        .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The saga confirms orders; until it exists, confirm through the command layer.
async fn confirm(app: &TestApp, order_id: &str) {
    let context = CommandContext::new("saga", "test");
    app.state
        .commands
        .orders
        .execute(order_id, OrderCommand::ConfirmOrder, context, Value::Null)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_operator_defines_a_product_and_receives_stock() {
    let app = TestApp::spawn().await;
    let operator = token("olga", Role::Operator);
    let body = json!({"sku": "SKU-1", "name": "Widget", "unit_price": 1250, "currency": "EUR"});

    let defined = app.post("/api/v1/products", Some(&operator), &body).await;
    let received = app
        .post(
            "/api/v1/inventory/SKU-1/receipts",
            Some(&operator),
            &json!({"quantity": 40}),
        )
        .await;

    assert_eq!(defined.status(), 201);
    let defined: Value = defined.json().await.unwrap();
    assert_eq!(defined["sku"], "SKU-1");
    assert_eq!(received.status(), 201);
    let received: Value = received.json().await.unwrap();
    assert!(received["position"].as_i64().unwrap() > defined["position"].as_i64().unwrap());
    let events = app.audit_events().await;
    let types: Vec<_> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ProductDefined", "StockReceived"]);
    assert_eq!(events[1]["data"]["quantity"], 40);
    assert_eq!(events[1]["metadata"]["user_id"], "olga");
}

#[tokio::test]
async fn a_customer_places_an_order_priced_from_the_catalogue() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 10).await;

    let response = app
        .client
        .post(format!("{}/api/v1/orders", app.base))
        .bearer_auth(token("alice", Role::Customer))
        .header("X-Correlation-Id", "checkout-42")
        .json(&order_body("SKU-1", 3))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-correlation-id"], "checkout-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "placed");
    let order_id = body["order_id"].as_str().unwrap();
    let stream = format!("/api/v1/audit/streams/order-{order_id}/events");
    let history: Value = app
        .get(&stream, Some(&token("op", Role::Operator)))
        .await
        .json()
        .await
        .unwrap();
    let placed = &history["events"][0];
    assert_eq!(placed["event_type"], "OrderPlaced");
    assert_eq!(placed["data"]["total"], 3750);
    assert_eq!(placed["data"]["currency"], "EUR");
    assert_eq!(placed["data"]["customer_id"], "alice");
    assert_eq!(placed["metadata"]["correlation_id"], "checkout-42");
    assert_eq!(placed["global_position"], body["position"]);
}

#[tokio::test]
async fn a_response_carries_a_fresh_correlation_id_when_the_request_has_none() {
    let app = TestApp::spawn().await;

    let response = app.get("/healthz", None).await;

    let id = response.headers()["x-correlation-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn the_owner_and_staff_may_cancel_but_another_customer_may_not() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 10).await;
    let mine = place(&app, "alice").await;
    let theirs = place(&app, "alice").await;

    let by_bob = app
        .post(
            &format!("/api/v1/orders/{mine}/cancel"),
            Some(&token("bob", Role::Customer)),
            &json!({}),
        )
        .await;
    let by_alice = app
        .client
        .post(format!("{}/api/v1/orders/{mine}/cancel", app.base))
        .bearer_auth(token("alice", Role::Customer))
        .send()
        .await
        .unwrap();
    let by_operator = app
        .post(
            &format!("/api/v1/orders/{theirs}/cancel"),
            Some(&token("op", Role::Operator)),
            &json!({"reason": "duplicate"}),
        )
        .await;

    problem(by_bob, 403).await;
    assert_eq!(by_alice.status(), 202, "a cancel needs no body");
    assert_eq!(
        by_alice.json::<Value>().await.unwrap()["order_id"],
        mine.as_str()
    );
    assert_eq!(by_operator.status(), 202);
    let events = app.audit_events().await;
    let cancels: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "OrderCancelled")
        .collect();
    assert_eq!(cancels.len(), 2);
    assert!(cancels
        .iter()
        .all(|e| e["data"]["reason"] == "customer_cancelled"));
    assert_eq!(cancels[1]["metadata"]["note"], "duplicate");
}

#[tokio::test]
async fn an_operator_ships_and_delivers_a_confirmed_order_which_then_cannot_be_cancelled() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 10).await;
    let order = place(&app, "alice").await;
    confirm(&app, &order).await;
    let operator = token("op", Role::Operator);

    let shipped = app
        .post(
            &format!("/api/v1/orders/{order}/ship"),
            Some(&operator),
            &json!({"carrier": "DHL", "tracking_number": "JD0001"}),
        )
        .await;
    let cancel = app
        .post(
            &format!("/api/v1/orders/{order}/cancel"),
            Some(&token("alice", Role::Customer)),
            &json!({}),
        )
        .await;
    let delivered = app
        .post(
            &format!("/api/v1/orders/{order}/deliver"),
            Some(&operator),
            &json!({}),
        )
        .await;

    assert_eq!(shipped.status(), 202);
    problem(cancel, 409).await;
    assert_eq!(delivered.status(), 202);
    let types: Vec<_> = app
        .audit_events()
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        &types[types.len() - 3..],
        ["OrderConfirmed", "OrderShipped", "OrderDelivered"]
    );
}

/// Every rejected request below must leave the store as it was.
#[tokio::test]
async fn every_error_class_is_problem_json_and_appends_nothing() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 10).await;
    let order = place(&app, "alice").await;
    let before = app.audit_events().await.len();
    let alice = token("alice", Role::Customer);
    let operator = token("op", Role::Operator);
    let product = json!({"sku": "SKU-2", "name": "Gadget", "unit_price": 100, "currency": "EUR"});

    // 400: malformed JSON.
    let malformed = app
        .client
        .post(format!("{}/api/v1/orders", app.base))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"lines\": [")
        .send()
        .await
        .unwrap();
    problem(malformed, 400).await;
    // 401: no token, a garbage token.
    problem(
        app.post("/api/v1/orders", None, &order_body("SKU-1", 1))
            .await,
        401,
    )
    .await;
    problem(
        app.post("/api/v1/orders", Some("not.a.jwt"), &order_body("SKU-1", 1))
            .await,
        401,
    )
    .await;
    // 403: a customer on an operator route, even for an unknown order.
    problem(
        app.post("/api/v1/products", Some(&alice), &product).await,
        403,
    )
    .await;
    // The role check comes before the body is read: a customer sending a
    // malformed body, no JSON content type or a bad idempotency key to an
    // operator route learns only that the route is not theirs.
    for (content_type, body, key) in [
        ("application/json", "{\"sku\": [", "k-1"),
        ("text/plain", "hello", "k-2"),
        ("application/json", "{}", "a key with spaces"),
    ] {
        let refused = app
            .client
            .post(format!("{}/api/v1/products", app.base))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .header("idempotency-key", key)
            .body(body)
            .send()
            .await
            .unwrap();
        problem(refused, 403).await;
    }
    let unknown = uuid::Uuid::new_v4();
    let ship = json!({"carrier": "DHL", "tracking_number": "1"});
    problem(
        app.post(
            &format!("/api/v1/orders/{unknown}/ship"),
            Some(&alice),
            &ship,
        )
        .await,
        403,
    )
    .await;
    // 404: an unknown order, a malformed id, an unknown SKU.
    problem(
        app.post(
            &format!("/api/v1/orders/{unknown}/ship"),
            Some(&operator),
            &ship,
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post(
            "/api/v1/orders/not-a-uuid/cancel",
            Some(&operator),
            &json!({}),
        )
        .await,
        404,
    )
    .await;
    // A path segment that does not decode to UTF-8 names nothing: 404 as
    // problem+json (not axum's plain-text 400), after the role check.
    problem(
        app.post("/api/v1/orders/%FF/ship", Some(&alice), &ship)
            .await,
        403,
    )
    .await;
    let admin = token("root", Role::Admin);
    for (path, body) in [
        ("/api/v1/orders/%FF/cancel", json!({})),
        ("/api/v1/orders/%FF/ship", ship.clone()),
        ("/api/v1/orders/%FF/deliver", json!({})),
        ("/api/v1/inventory/%FF/receipts", json!({"quantity": 1})),
        ("/api/v1/admin/projections/%FF/rebuild", json!({})),
    ] {
        problem(app.post(path, Some(&admin), &body).await, 404).await;
    }
    for path in [
        "/api/v1/orders/%FF",
        "/api/v1/inventory/%FF",
        "/api/v1/audit/streams/%FF/events",
    ] {
        problem(app.get(path, Some(&admin)).await, 404).await;
    }
    problem(
        app.post(
            "/api/v1/inventory/NOPE/receipts",
            Some(&operator),
            &json!({"quantity": 1}),
        )
        .await,
        404,
    )
    .await;
    // 409: the product exists; shipping an order that is not confirmed.
    let again = json!({"sku": "SKU-1", "name": "Again", "unit_price": 5, "currency": "EUR"});
    problem(
        app.post("/api/v1/products", Some(&operator), &again).await,
        409,
    )
    .await;
    problem(
        app.post(
            &format!("/api/v1/orders/{order}/ship"),
            Some(&operator),
            &ship,
        )
        .await,
        409,
    )
    .await;
    // 413: a body over 64 KiB.
    let huge =
        json!({"sku": "SKU-3", "name": "x".repeat(70 * 1024), "unit_price": 1, "currency": "EUR"});
    problem(
        app.post("/api/v1/products", Some(&operator), &huge).await,
        413,
    )
    .await;
    // 415: not JSON.
    let text = app
        .client
        .post(format!("{}/api/v1/products", app.base))
        .bearer_auth(&operator)
        .header("content-type", "text/plain")
        .body(product.to_string())
        .send()
        .await
        .unwrap();
    problem(text, 415).await;
    // 422: an unknown field, invalid values, with field errors.
    let mut extra = product.clone();
    extra["colour"] = json!("red");
    let unknown_field = problem(
        app.post("/api/v1/products", Some(&operator), &extra).await,
        422,
    )
    .await;
    assert_eq!(unknown_field["errors"][0]["field"], "colour");
    let bad_values = json!({"sku": "SKU-2", "name": "Gadget", "unit_price": 0, "currency": "euro"});
    let invalid = problem(
        app.post("/api/v1/products", Some(&operator), &bad_values)
            .await,
        422,
    )
    .await;
    let fields: Vec<_> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"unit_price") && fields.contains(&"currency"),
        "{fields:?}"
    );
    let mut bad_order = order_body("SKU-1", 0);
    bad_order["shipping_address"]["country"] = json!("germany");
    let invalid = problem(
        app.post("/api/v1/orders", Some(&alice), &bad_order).await,
        422,
    )
    .await;
    let fields: Vec<_> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"lines[0].quantity") && fields.contains(&"shipping_address.country"),
        "{fields:?}"
    );
    problem(
        app.post("/api/v1/orders", Some(&alice), &order_body("UNKNOWN", 1))
            .await,
        422,
    )
    .await;
    problem(
        app.post(
            "/api/v1/inventory/SKU-1/receipts",
            Some(&operator),
            &json!({"quantity": -5}),
        )
        .await,
        422,
    )
    .await;
    problem(
        app.post(
            "/api/v1/inventory/SKU-1/receipts",
            Some(&operator),
            &json!({"quantity": "5"}),
        )
        .await,
        422,
    )
    .await;

    assert_eq!(
        app.audit_events().await.len(),
        before,
        "a rejected request appended events"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_first_answer_and_appends_nothing() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 10).await;
    let before = app.audit_events().await.len();
    let send = |body: Value, key: &'static str| {
        app.client
            .post(format!("{}/api/v1/orders", app.base))
            .bearer_auth(token("alice", Role::Customer))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    let first: Value = send(order_body("SKU-1", 1), "k-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retry = send(order_body("SKU-1", 1), "k-1").await.unwrap();
    let status = retry.status();
    let retry: Value = retry.json().await.unwrap();
    let other = send(order_body("SKU-1", 2), "k-1").await.unwrap();

    assert_eq!(status, 202);
    assert_eq!(retry["order_id"], first["order_id"]);
    assert_eq!(retry["position"], first["position"]);
    let problem = problem(other, 422).await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.audit_events().await.len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_receipts_to_one_sku_all_land() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 1).await;
    let operator = token("op", Role::Operator);

    let requests = (1..=100).map(|q| {
        let (client, base, operator) = (app.client.clone(), app.base.clone(), operator.clone());
        async move {
            client
                .post(format!("{base}/api/v1/inventory/SKU-1/receipts"))
                .bearer_auth(operator)
                .json(&json!({"quantity": q}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(requests).await;

    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let receipts: i64 = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e["event_type"] == "StockReceived")
        .map(|e| e["data"]["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(receipts, 1 + (1..=100).sum::<i64>());
    let inventory = app.state.commands.inventory.repository();
    inventory.forget("inventory-SKU-1").await;
    assert_eq!(
        inventory
            .load("inventory-SKU-1")
            .await
            .unwrap()
            .state
            .on_hand,
        receipts
    );
}

#[tokio::test]
async fn a_body_naming_a_key_twice_is_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let operator = token("olga", Role::Operator);
    for body in [
        r#"{"sku":"A","sku":"B","name":"W","unit_price":1,"currency":"EUR"}"#,
        r#"{"sku":"A","name":"W","unit_price":1,"currency":"EUR","name":"X"}"#,
    ] {
        let response = app
            .client
            .post(format!("{}/api/v1/products", app.base))
            .bearer_auth(&operator)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = problem(response, 400).await;
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate key"));
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn nul_characters_in_a_body_or_a_path_are_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let operator = token("olga", Role::Operator);
    let customer = token("alice", Role::Customer);
    let product = json!({"sku": "N", "name": "a\u{0}b", "unit_price": 1, "currency": "EUR"});
    let answer = problem(
        app.post("/api/v1/products", Some(&operator), &product)
            .await,
        422,
    )
    .await;
    assert_eq!(answer["errors"][0]["field"], "name");

    let mut address = order_body("N", 1);
    address["shipping_address"]["city"] = json!("Ber\u{0}lin");
    let mut payment = order_body("N", 1);
    payment["payment_method"] = json!("tok\u{0}visa");
    for (body, field) in [
        (address, "shipping_address.city"),
        (payment, "payment_method"),
    ] {
        let answer = problem(
            app.post("/api/v1/orders", Some(&customer), &body).await,
            422,
        )
        .await;
        assert_eq!(answer["errors"][0]["field"], field);
    }

    for path in [
        "/api/v1/audit/streams/a%00b/events",
        "/api/v1/inventory/a%00b",
    ] {
        problem(app.get(path, Some(&operator)).await, 404).await;
    }
    let receipt = app
        .post(
            "/api/v1/inventory/a%00b/receipts",
            Some(&operator),
            &json!({"quantity": 1}),
        )
        .await;
    assert!(
        [404, 422].contains(&receipt.status().as_u16()),
        "a receipt for a SKU with a NUL: {}",
        receipt.status()
    );

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}
