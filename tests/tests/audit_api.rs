//! Audit reads: roles, stream history, cursor paging over the global order.
#![allow(clippy::unwrap_used)]

use api::auth::Role;
use fulcrum_tests::{problem, token, TestApp};
use serde_json::{json, Value};

#[tokio::test]
async fn audit_routes_are_for_operators_and_admins_only() {
    let app = TestApp::spawn().await;

    problem(
        app.get(
            "/api/v1/audit/events",
            Some(&token("alice", Role::Customer)),
        )
        .await,
        403,
    )
    .await;
    problem(
        app.get(
            "/api/v1/audit/streams/order-x/events",
            Some(&token("alice", Role::Customer)),
        )
        .await,
        403,
    )
    .await;
    problem(app.get("/api/v1/audit/events", None).await, 401).await;
    assert_eq!(
        app.get("/api/v1/audit/events", Some(&token("root", Role::Admin)))
            .await
            .status(),
        200
    );
    problem(
        app.get(
            "/api/v1/audit/streams/order-x/events",
            Some(&token("op", Role::Operator)),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn paging_through_the_global_order_returns_every_event_once() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    // Nine events at three per page: the third page is the last one, and
    // says so with a null cursor rather than sending the client to an
    // empty fourth page.
    for i in 0..9 {
        let body =
            json!({"sku": format!("SKU-{i}"), "name": "P", "unit_price": 1, "currency": "EUR"});
        assert_eq!(
            app.post("/api/v1/products", Some(&operator), &body)
                .await
                .status(),
            201
        );
    }

    app.settle().await;

    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page: Value = app
            .get(
                &format!("/api/v1/audit/events?limit=3&after={after}"),
                Some(&operator),
            )
            .await
            .json()
            .await
            .unwrap();
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["data"]["sku"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }

    assert_eq!(seen, (0..9).map(|i| format!("SKU-{i}")).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // `after` may also be a global position.
    let all: Value = app
        .get("/api/v1/audit/events", Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    let third = all["items"][2]["global_position"].as_i64().unwrap();
    let rest: Value = app
        .get(
            &format!("/api/v1/audit/events?after={third}"),
            Some(&operator),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 6);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_paging_parameters_are_field_errors_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=5&limit=6", "limit"),
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("colour=red", "colour"),
        // The audit reads the event store itself: there is no read model to wait for.
        ("min_position=1", "min_position"),
    ] {
        let body = problem(
            app.get(&format!("/api/v1/audit/events?{query}"), Some(&operator))
                .await,
            422,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_plain_position_with_no_event_reads_on_from_the_last_event_before_it() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    let define = |skus: std::ops::Range<usize>| {
        let (app, operator) = (&app, &operator);
        async move {
            for i in skus {
                let body = json!({"sku": format!("SKU-{i}"), "name": "P", "unit_price": 1, "currency": "EUR"});
                let status = app
                    .post("/api/v1/products", Some(operator), &body)
                    .await
                    .status();
                assert_eq!(status, 201);
            }
        }
    };
    define(0..3).await;
    // A position no event holds, as a rolled-back append leaves behind.
    let burnt: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('events', 'position'))")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    define(3..5).await;
    app.settle().await;
    let page = |query: String| {
        let app = &app;
        let operator = &operator;
        async move {
            let response = app
                .get(&format!("/api/v1/audit/events?{query}"), Some(operator))
                .await;
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };
    let skus = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["sku"].as_str().unwrap().to_owned())
            .collect()
    };

    assert_eq!(
        skus(&page(format!("after={burnt}")).await),
        ["SKU-3", "SKU-4"]
    );
    let beyond = page(format!("after={}", burnt + 1000)).await;
    assert!(skus(&beyond).is_empty());
    assert!(beyond["next_cursor"].is_null());
    // DESIGN's template, sent as is: empty values count as absent.
    let all = page("after=&limit=".into()).await;
    assert_eq!(skus(&all), ["SKU-0", "SKU-1", "SKU-2", "SKU-3", "SKU-4"]);
}

#[tokio::test]
async fn a_stream_history_lists_every_event_with_its_metadata_and_hash() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-1", 100, 5).await;

    let history: Value = app
        .get(
            "/api/v1/audit/streams/inventory-SKU-1/events",
            Some(&token("op", Role::Operator)),
        )
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(history["stream_id"], "inventory-SKU-1");
    let event = &history["events"][0];
    for field in [
        "event_id",
        "stream_id",
        "version",
        "global_position",
        "event_type",
        "schema_version",
        "data",
        "recorded_at",
        "hash",
    ] {
        assert!(!event[field].is_null(), "missing {field}");
    }
    for field in ["correlation_id", "causation_id", "user_id", "command_id"] {
        assert!(
            event["metadata"][field].is_string(),
            "missing metadata.{field}"
        );
    }
}

#[tokio::test]
async fn a_page_holds_fifty_events_unless_asked_otherwise() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    for i in 0..51 {
        let body =
            json!({"sku": format!("SKU-{i}"), "name": "P", "unit_price": 1, "currency": "EUR"});
        let status = app
            .post("/api/v1/products", Some(&operator), &body)
            .await
            .status();
        assert_eq!(status, 201);
    }
    app.settle().await;

    let first: Value = app
        .get("/api/v1/audit/events", Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let next = first["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(
            &format!("/api/v1/audit/events?after={next}"),
            Some(&operator),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["data"]["sku"], "SKU-50");
    assert!(rest["next_cursor"].is_null());
}
