//! The published contract: `/openapi.json` lists every route of the
//! contract with its roles, the reference page and the schemas are served
//! without a token, and answers validate against their schemas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::auth::Role;
use fulcrum_tests::{problem, token, TestApp};
use serde_json::{json, Value};

/// Every route of DESIGN.md's contract with the roles it admits.
const CONTRACT: &[(&str, &str, &[&str])] = &[
    ("post", "/api/v1/products", &["operator", "admin"]),
    (
        "get",
        "/api/v1/products",
        &["customer", "operator", "admin"],
    ),
    (
        "get",
        "/api/v1/inventory/{sku}",
        &["customer", "operator", "admin"],
    ),
    (
        "post",
        "/api/v1/inventory/{sku}/receipts",
        &["operator", "admin"],
    ),
    ("post", "/api/v1/orders", &["customer"]),
    ("get", "/api/v1/orders", &["customer", "operator", "admin"]),
    (
        "get",
        "/api/v1/orders/{id}",
        &["customer", "operator", "admin"],
    ),
    (
        "post",
        "/api/v1/orders/{id}/cancel",
        &["customer", "operator", "admin"],
    ),
    ("post", "/api/v1/orders/{id}/ship", &["operator", "admin"]),
    (
        "post",
        "/api/v1/orders/{id}/deliver",
        &["operator", "admin"],
    ),
    ("get", "/api/v1/stats/sales", &["operator", "admin"]),
    ("get", "/api/v1/admin/projections", &["operator", "admin"]),
    (
        "get",
        "/api/v1/admin/projections/{name}/dead-letters",
        &["operator", "admin"],
    ),
    (
        "post",
        "/api/v1/admin/projections/{name}/rebuild",
        &["admin"],
    ),
    ("get", "/api/v1/admin/sagas", &["operator", "admin"]),
    (
        "get",
        "/api/v1/audit/streams/{stream_id}/events",
        &["operator", "admin"],
    ),
    (
        "get",
        "/api/v1/audit/streams/{stream_id}/verify",
        &["operator", "admin"],
    ),
    (
        "get",
        "/api/v1/audit/streams/{stream_id}/state",
        &["operator", "admin"],
    ),
    ("get", "/api/v1/audit/events", &["operator", "admin"]),
    (
        "get",
        "/api/v1/audit/events/{event_id}/proof",
        &["operator", "admin"],
    ),
    (
        "get",
        "/api/v1/audit/correlations/{correlation_id}",
        &["operator", "admin"],
    ),
    ("get", "/api/v1/audit/seals", &["operator", "admin"]),
    ("post", "/api/v1/audit/seals", &["operator", "admin"]),
    ("get", "/api/v1/admin/sagas/{id}", &["operator", "admin"]),
    ("post", "/api/v1/admin/sagas/{id}/retry", &["admin"]),
    ("post", "/api/v1/admin/sagas/{id}/abort", &["admin"]),
];

#[tokio::test]
async fn openapi_json_lists_every_contract_route_with_its_roles() {
    let app = TestApp::spawn().await;

    let response = app.get("/openapi.json", None).await;

    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path, roles) in CONTRACT {
        let operation = &doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the contract"
        );
        assert_eq!(operation["x-roles"], json!(roles), "{method} {path}");
        assert_eq!(
            operation["security"],
            json!([{"bearer": []}]),
            "{method} {path}"
        );
        let responses = operation["responses"].as_object().unwrap();
        for status in ["401", "403", "500"] {
            assert!(
                responses.contains_key(status),
                "{method} {path} lacks {status}"
            );
        }
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no success answer"
        );
    }
    // The file a client can read offline is the one the server publishes.
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/openapi.json"
    ))
    .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&committed).unwrap(), doc);
}

#[tokio::test]
async fn the_reference_page_and_the_schemas_need_no_token() {
    let app = TestApp::spawn().await;

    let docs = app.get("/docs", None).await;
    let order = app.get("/schemas/order.json", None).await;
    let event = app.get("/schemas/events/order.json", None).await;
    let unknown = app.get("/schemas/nothing.json", None).await;

    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("Redoc.init(\"/openapi.json\""));
    assert!(
        !page.contains("<script src="),
        "the page loads nothing from elsewhere"
    );
    assert_eq!(order.status(), 200);
    assert_eq!(order.json::<Value>().await.unwrap()["title"], "OrderView");
    assert_eq!(event.status(), 200);
    problem(unknown, 404).await;
}

#[tokio::test]
async fn a_problem_answer_validates_against_its_schema() {
    let app = TestApp::spawn().await;
    let schema: Value = app
        .get("/schemas/problem.json", None)
        .await
        .json()
        .await
        .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let alice = token("alice", Role::Customer);
    let bad_order = json!({"lines": [{"sku": "A", "quantity": "two"}], "extra": 1});

    let invalid = problem(
        app.post("/api/v1/orders", Some(&alice), &bad_order).await,
        422,
    )
    .await;
    let unauthorized = problem(app.post("/api/v1/orders", None, &bad_order).await, 401).await;

    assert!(!invalid["errors"].as_array().unwrap().is_empty());
    for answer in [&invalid, &unauthorized] {
        let errors: Vec<String> = validator
            .iter_errors(answer)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{answer} does not match: {errors:?}");
    }
    let broken = json!({"type": "x", "title": "t", "status": "422", "detail": "d"});
    assert!(!validator.is_valid(&broken), "the schema checks the types");
}

/// A path of the contract with its parameters filled in with values of
/// the right shape, so that only the caller's role can refuse it.
fn concrete(path: &str) -> String {
    path.replace("{sku}", "SKU-1")
        .replace("{id}", "00000000-0000-4000-8000-000000000001")
        .replace("{order_id}", "00000000-0000-4000-8000-000000000001")
        .replace("{event_id}", "00000000-0000-4000-8000-000000000001")
        .replace("{stream_id}", "order-1")
        .replace("{correlation_id}", "c-1")
        .replace("{name}", "orders")
}

#[tokio::test]
async fn every_route_refuses_the_roles_its_contract_does_not_list() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let mut refused = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(admitted) = operation["x-roles"].as_array() else {
                continue;
            };
            for role in [Role::Customer, Role::Operator, Role::Admin] {
                if admitted.contains(&json!(role.as_str())) {
                    continue;
                }
                let bearer = token("mallory", role);
                let url = concrete(path);
                // Refused before anything else is looked at: even an empty
                // body is not checked for a role that may not send one.
                let response = match method.as_str() {
                    "get" => app.get(&url, Some(&bearer)).await,
                    "post" => app.post(&url, Some(&bearer), &json!({})).await,
                    other => panic!("{other} {path}: a method this test does not send"),
                };
                problem(response, 403).await;
                refused += 1;
            }
        }
    }
    assert!(refused >= 25, "only {refused} refusals were tried");
}
