//! The query API end to end: every read route's answer shape, who may read
//! what, paging, query-string checking, and read-your-writes with
//! `min_position` and `X-Fulcrum-Position`. Read models are filled by the
//! real projection code ([`TestApp::project`]); no projector runs here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api::auth::Role;
use commands::CommandContext;
use domain::inventory::InventoryCommand;
use domain::order::OrderCommand;
use fulcrum_tests::{order_body, problem, token, TestApp};
use reqwest::Response;
use serde_json::{json, Value};
use uuid::Uuid;

/// Defines `sku` at `unit_price` EUR as an operator; the write's position.
async fn define(app: &TestApp, sku: &str, unit_price: i64) -> i64 {
    let body = json!({"sku": sku, "name": format!("Product {sku}"), "unit_price": unit_price, "currency": "EUR"});
    let response = app
        .post(
            "/api/v1/products",
            Some(&token("op", Role::Operator)),
            &body,
        )
        .await;
    position_of(response, 201).await
}

/// Receives `quantity` units of `sku` as an operator; the write's position.
async fn receive(app: &TestApp, sku: &str, quantity: i64) -> i64 {
    let path = format!("/api/v1/inventory/{sku}/receipts");
    let body = json!({"quantity": quantity});
    let response = app
        .post(&path, Some(&token("op", Role::Operator)), &body)
        .await;
    position_of(response, 201).await
}

/// Places an order of `quantity` SKU-1 for `customer`: its id and position.
async fn place(app: &TestApp, customer: &str, quantity: i64) -> (String, i64) {
    let response = app
        .post(
            "/api/v1/orders",
            Some(&token(customer, Role::Customer)),
            &order_body("SKU-1", quantity),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["order_id"].as_str().unwrap().to_owned();
    (id, body["position"].as_i64().unwrap())
}

/// The saga confirms orders; until it exists, confirm through the command layer.
async fn confirm(app: &TestApp, order_id: &str) -> i64 {
    let context = CommandContext::new("saga", "test");
    app.state
        .commands
        .orders
        .execute(order_id, OrderCommand::ConfirmOrder, context, Value::Null)
        .await
        .unwrap()
        .position
}

async fn position_of(response: Response, status: u16) -> i64 {
    assert_eq!(response.status().as_u16(), status);
    response.json::<Value>().await.unwrap()["position"]
        .as_i64()
        .unwrap()
}

/// GETs `path` expecting 200: the body and `X-Fulcrum-Position`.
async fn read(app: &TestApp, path: &str, token: &str) -> (Value, i64) {
    let response = app.get(path, Some(token)).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let position = header_position(&response);
    (response.json().await.unwrap(), position)
}

fn header_position(response: &Response) -> i64 {
    response.headers()["x-fulcrum-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// GETs `path` expecting a 422: the fields its errors name.
async fn invalid_fields(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let body = problem(app.get(path, Some(token)).await, 422).await;
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no field errors for {path}: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_owned())
        .collect()
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn an_order_reads_back_in_the_contract_shape_for_its_owner_and_staff() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 10).await;
    let (id, placed) = place(&app, "alice", 3).await;
    app.project().await;

    let (order, position) = read(
        &app,
        &format!("/api/v1/orders/{id}"),
        &token("alice", Role::Customer),
    )
    .await;

    assert_eq!(position, placed);
    let expected_keys = [
        "order_id",
        "customer_id",
        "status",
        "lines",
        "total",
        "currency",
        "cancel_reason",
        "version",
        "placed_at",
        "updated_at",
    ];
    assert_eq!(keys(&order), expected_keys.into_iter().collect());
    assert_eq!(order["order_id"], id);
    assert_eq!(order["customer_id"], "alice");
    assert_eq!(order["status"], "placed");
    assert_eq!(
        order["lines"],
        json!([{"sku": "SKU-1", "quantity": 3, "unit_price": 1250}])
    );
    assert_eq!(order["total"], 3750);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["cancel_reason"], Value::Null);
    assert_eq!(order["version"], 1);
    assert!(order["placed_at"].as_str().unwrap().starts_with("20"));
    assert_eq!(order["placed_at"], order["updated_at"]);
    for staff in [token("op", Role::Operator), token("root", Role::Admin)] {
        let (seen, _) = read(&app, &format!("/api/v1/orders/{id}"), &staff).await;
        assert_eq!(seen, order);
    }
}

#[tokio::test]
async fn another_customers_order_is_403_and_unknown_orders_are_404() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 10).await;
    let (id, _) = place(&app, "alice", 1).await;
    app.project().await;
    let bob = token("bob", Role::Customer);
    let operator = token("op", Role::Operator);

    let refused = app.get(&format!("/api/v1/orders/{id}"), Some(&bob)).await;
    assert!(refused.headers().contains_key("x-fulcrum-position"));
    problem(refused, 403).await;
    let unknown = format!("/api/v1/orders/{}", Uuid::new_v4());
    problem(app.get(&unknown, Some(&bob)).await, 404).await;
    // A 404 says how far the read model had got: "not there at position N".
    let missing = app.get(&unknown, Some(&operator)).await;
    let at: i64 = missing.headers()["x-fulcrum-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(at > 0);
    problem(missing, 404).await;
    let no_stock = app.get("/api/v1/inventory/SKU-NONE", Some(&operator)).await;
    assert!(no_stock.headers().contains_key("x-fulcrum-position"));
    problem(no_stock, 404).await;
    problem(
        app.get("/api/v1/orders/not-a-uuid", Some(&operator)).await,
        404,
    )
    .await;
    problem(app.get(&format!("/api/v1/orders/{id}"), None).await, 401).await;
}

#[tokio::test]
async fn a_customer_lists_only_their_own_orders_while_staff_list_all() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 100).await;
    let mut alices = Vec::new();
    let mut everyone = Vec::new();
    for customer in ["alice", "bob", "alice", "bob", "alice"] {
        let (id, _) = place(&app, customer, 1).await;
        if customer == "alice" {
            alices.push(id.clone());
        }
        everyone.push(id);
    }
    app.project().await;
    alices.reverse();
    everyone.reverse();

    let (page, _) = read(&app, "/api/v1/orders", &token("alice", Role::Customer)).await;
    assert_eq!(keys(&page), ["items", "next_cursor"].into_iter().collect());
    assert_eq!(ids(&page), alices, "alice's orders, newest first");
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["customer_id"] == "alice"));
    assert_eq!(page["next_cursor"], Value::Null);
    let (page, _) = read(&app, "/api/v1/orders", &token("bob", Role::Customer)).await;
    assert_eq!(ids(&page).len(), 2);
    let (page, _) = read(&app, "/api/v1/orders", &token("carol", Role::Customer)).await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    for staff in [token("op", Role::Operator), token("root", Role::Admin)] {
        let (page, _) = read(&app, "/api/v1/orders", &staff).await;
        assert_eq!(ids(&page), everyone);
    }
}

#[tokio::test]
async fn paging_with_the_cursor_returns_every_order_once_until_the_cursor_is_null() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 100).await;
    let mut placed = Vec::new();
    for i in 0..7 {
        let customer = if i % 3 == 0 { "bob" } else { "alice" };
        placed.push(place(&app, customer, 1).await.0);
    }
    app.project().await;
    placed.reverse();
    let operator = token("op", Role::Operator);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/orders?limit=3&cursor={cursor}");
        let (page, _) = read(&app, &path, &operator).await;
        sizes.push(ids(&page).len());
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }

    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, placed, "every order once, newest first");
    let (exact, _) = read(&app, "/api/v1/orders?limit=7", &operator).await;
    assert_eq!(ids(&exact), placed);
    assert_eq!(exact["next_cursor"], Value::Null);
    let alice = token("alice", Role::Customer);
    let (first, _) = read(&app, "/api/v1/orders?limit=2", &alice).await;
    let next = first["next_cursor"].as_str().unwrap();
    let (rest, _) = read(&app, &format!("/api/v1/orders?cursor={next}"), &alice).await;
    let mut alices = ids(&first);
    alices.extend(ids(&rest));
    assert_eq!(alices.len(), 4);
    assert_eq!(alices.iter().collect::<BTreeSet<_>>().len(), 4);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_status_filter_keeps_only_orders_in_that_status() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 100).await;
    let (a, _) = place(&app, "alice", 1).await;
    let (b, _) = place(&app, "alice", 1).await;
    let (c, _) = place(&app, "alice", 1).await;
    let (d, _) = place(&app, "bob", 1).await;
    confirm(&app, &a).await;
    confirm(&app, &d).await;
    let cancel = app
        .post(
            &format!("/api/v1/orders/{b}/cancel"),
            Some(&token("alice", Role::Customer)),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), 202);
    app.project().await;
    let operator = token("op", Role::Operator);
    let alice = token("alice", Role::Customer);

    let (confirmed, _) = read(&app, "/api/v1/orders?status=confirmed", &operator).await;
    let (cancelled, _) = read(&app, "/api/v1/orders?status=cancelled", &operator).await;
    let (placed, _) = read(&app, "/api/v1/orders?status=placed", &operator).await;
    let (shipped, _) = read(&app, "/api/v1/orders?status=shipped", &operator).await;
    let (own, _) = read(&app, "/api/v1/orders?status=confirmed", &alice).await;

    assert_eq!(ids(&confirmed), [d.clone(), a.clone()]);
    assert_eq!(ids(&cancelled), [b]);
    assert_eq!(cancelled["items"][0]["cancel_reason"], "customer_cancelled");
    assert_eq!(ids(&placed), [c]);
    assert_eq!(ids(&shipped), Vec::<String>::new());
    assert_eq!(ids(&own), [a]);
}

#[tokio::test]
async fn bad_query_parameters_are_422_problems_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    let cases = [
        ("/api/v1/orders?limit=0", "limit"),
        ("/api/v1/orders?limit=501", "limit"),
        ("/api/v1/orders?limit=-1", "limit"),
        ("/api/v1/orders?limit=ten", "limit"),
        ("/api/v1/orders?limit=1&limit=2", "limit"),
        ("/api/v1/orders?status=lost", "status"),
        ("/api/v1/orders?status=Placed", "status"),
        ("/api/v1/orders?cursor=garbage", "cursor"),
        ("/api/v1/orders?cursor=o0", "cursor"),
        ("/api/v1/orders?customer_id=bob", "customer_id"),
        ("/api/v1/orders?min_position=-1", "min_position"),
        (
            "/api/v1/orders/00000000-0000-0000-0000-000000000000?min_position=x",
            "min_position",
        ),
        (
            "/api/v1/orders/00000000-0000-0000-0000-000000000000?limit=5",
            "limit",
        ),
        ("/api/v1/products?min_position=1.5", "min_position"),
        ("/api/v1/products?sku=SKU-1", "sku"),
        ("/api/v1/inventory/SKU-1?min_position=%2D1", "min_position"),
        ("/api/v1/stats/sales?from=2026-13-01", "from"),
        ("/api/v1/stats/sales?to=2026-2-1", "to"),
        ("/api/v1/stats/sales?from=yesterday", "from"),
        ("/api/v1/stats/sales?from=2026-02-02&to=2026-02-01", "from"),
    ];

    for (path, field) in cases {
        assert_eq!(
            invalid_fields(&app, path, &operator).await,
            [field],
            "{path}"
        );
    }
    let both = invalid_fields(&app, "/api/v1/orders?limit=0&status=lost&x=1", &operator).await;
    assert_eq!(both, ["x", "status", "limit"]);
    for fine in [
        "/api/v1/orders?limit=1",
        "/api/v1/orders?limit=500",
        "/api/v1/orders?status=&limit=&cursor=",
        "/api/v1/orders?min_position=0",
        "/api/v1/stats/sales?from=2026-02-01&to=2026-02-01",
        "/api/v1/stats/sales?min_position=",
        "/api/v1/products?min_position=0",
    ] {
        read(&app, fine, &operator).await;
    }
}

#[tokio::test]
async fn every_query_needs_a_token_and_sales_stats_need_staff() {
    let app = TestApp::spawn().await;
    let routes = [
        "/api/v1/orders",
        "/api/v1/orders/00000000-0000-0000-0000-000000000000",
        "/api/v1/products",
        "/api/v1/inventory/SKU-1",
        "/api/v1/stats/sales",
    ];
    for path in routes {
        problem(app.get(path, None).await, 401).await;
    }
    let customer = token("alice", Role::Customer);

    problem(app.get("/api/v1/stats/sales", Some(&customer)).await, 403).await;
    // The role check comes before the query string is looked at.
    problem(
        app.get("/api/v1/stats/sales?from=bad&x=1", Some(&customer))
            .await,
        403,
    )
    .await;
    for staff in [token("op", Role::Operator), token("root", Role::Admin)] {
        let (stats, position) = read(&app, "/api/v1/stats/sales", &staff).await;
        assert_eq!(stats, json!({"days": []}));
        assert_eq!(position, 0);
    }
}

#[tokio::test]
async fn the_catalogue_and_stock_read_back_with_their_read_models_positions() {
    let app = TestApp::spawn().await;
    define(&app, "SKU-2", 990).await;
    define(&app, "SKU-1", 1250).await;
    // SKU-3 is in the catalogue but never stocked.
    let last_product = define(&app, "SKU-3", 5).await;
    receive(&app, "SKU-1", 10).await;
    let reservation = InventoryCommand::ReserveStock {
        sku: "SKU-1".into(),
        order_id: Uuid::new_v4(),
        quantity: 3,
    };
    let reserved = app
        .state
        .commands
        .inventory
        .execute(
            "SKU-1",
            reservation,
            CommandContext::new("saga", "test"),
            Value::Null,
        )
        .await
        .unwrap()
        .position;
    app.project().await;
    let customer = token("alice", Role::Customer);

    let (products, catalog_position) = read(&app, "/api/v1/products", &customer).await;
    let (stock, stock_position) = read(&app, "/api/v1/inventory/SKU-1", &customer).await;

    assert_eq!(
        products,
        json!({"items": [
            {"sku": "SKU-1", "name": "Product SKU-1", "unit_price": 1250, "currency": "EUR"},
            {"sku": "SKU-2", "name": "Product SKU-2", "unit_price": 990, "currency": "EUR"},
            {"sku": "SKU-3", "name": "Product SKU-3", "unit_price": 5, "currency": "EUR"},
        ]})
    );
    assert_eq!(catalog_position, last_product);
    assert_eq!(
        stock,
        json!({"sku": "SKU-1", "on_hand": 10, "reserved": 3, "available": 7})
    );
    assert_eq!(stock_position, reserved);
    problem(
        app.get("/api/v1/inventory/SKU-3", Some(&customer)).await,
        404,
    )
    .await;
    problem(
        app.get("/api/v1/inventory/NOPE-9", Some(&customer)).await,
        404,
    )
    .await;
    problem(app.get("/api/v1/inventory/%20", Some(&customer)).await, 404).await;
}

#[tokio::test]
async fn sales_stats_count_confirmed_orders_per_day() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 100).await;
    let (a, _) = place(&app, "alice", 2).await;
    let (b, _) = place(&app, "bob", 1).await;
    place(&app, "carol", 5).await;
    confirm(&app, &a).await;
    let last = confirm(&app, &b).await;
    app.project().await;
    let operator = token("op", Role::Operator);
    let (order, _) = read(&app, &format!("/api/v1/orders/{b}"), &operator).await;
    let day = &order["updated_at"].as_str().unwrap()[..10];

    let (all, position) = read(&app, "/api/v1/stats/sales", &operator).await;
    let (that_day, _) = read(
        &app,
        &format!("/api/v1/stats/sales?from={day}&to={day}"),
        &operator,
    )
    .await;
    let (long_ago, _) = read(
        &app,
        "/api/v1/stats/sales?from=2000-01-01&to=2000-12-31",
        &operator,
    )
    .await;

    let expected = json!({"days": [{"day": day, "orders": 2, "revenue": 3750, "currency": "EUR"}]});
    assert_eq!(all, expected);
    assert_eq!(that_day, expected);
    assert_eq!(long_ago, json!({"days": []}));
    assert_eq!(position, last);
}

#[tokio::test]
async fn a_query_waits_for_min_position_and_gives_up_with_504_after_5_s() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 10).await;
    app.project().await;
    let (id, placed) = place(&app, "alice", 1).await;
    let alice = token("alice", Role::Customer);

    let started = Instant::now();
    let response = app
        .get(
            &format!("/api/v1/orders/{id}?min_position={placed}"),
            Some(&alice),
        )
        .await;
    let waited = started.elapsed();

    assert!(!response.headers().contains_key("x-fulcrum-position"));
    let body = problem(response, 504).await;
    assert!(body["detail"].as_str().unwrap().contains("position"));
    assert!(waited >= Duration::from_millis(4900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    // The catalogue does not read order streams: that position is no wait there.
    let started = Instant::now();
    let (_, catalog) = read(
        &app,
        &format!("/api/v1/products?min_position={placed}"),
        &alice,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(catalog < placed);
}

#[tokio::test]
async fn a_query_with_min_position_answers_once_the_projection_catches_up() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 1250, 10).await;
    app.project().await;
    let (id, placed) = place(&app, "alice", 4).await;
    let alice = token("alice", Role::Customer);
    let path = format!("/api/v1/orders/{id}?min_position={placed}");
    let list = format!("/api/v1/orders?min_position={placed}");

    let started = Instant::now();
    let (response, listed, ()) = tokio::join!(
        app.get(&path, Some(&alice)),
        app.get(&list, Some(&alice)),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            app.project().await;
        }
    );
    let waited = started.elapsed();

    assert_eq!(response.status(), 200);
    assert_eq!(header_position(&response), placed);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["order_id"], id);
    assert_eq!(order["total"], 5000);
    assert_eq!(listed.status(), 200);
    assert_eq!(header_position(&listed), placed);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(ids(&listed), [id]);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    // Without min_position the same read would have been a 404 before the
    // catch-up; with a reached position it answers at once.
    let started = Instant::now();
    read(&app, &path, &alice).await;
    assert!(started.elapsed() < Duration::from_secs(1));
}
