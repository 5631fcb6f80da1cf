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

/// GETs `path` as an operator and answers the JSON body, asserting `status`.
async fn read(app: &TestApp, path: &str, status: u16) -> Value {
    let response = app.get(path, Some(&token("auditor", Role::Operator))).await;
    assert_eq!(response.status().as_u16(), status, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_audit_route_refuses_customers_and_strangers_before_any_lookup() {
    let app = TestApp::spawn().await;
    let customer = token("alice", Role::Customer);
    let id = uuid::Uuid::new_v4();
    for path in [
        "/api/v1/audit/events?event_type=OrderPlaced".to_owned(),
        "/api/v1/audit/streams/order-x/events".to_owned(),
        "/api/v1/audit/streams/order-x/verify".to_owned(),
        "/api/v1/audit/streams/order-x/state?version=1".to_owned(),
        format!("/api/v1/audit/correlations/{id}"),
        "/api/v1/audit/seals".to_owned(),
        format!("/api/v1/audit/events/{id}/proof"),
    ] {
        problem(app.get(&path, Some(&customer)).await, 403).await;
        problem(app.get(&path, None).await, 401).await;
    }
    problem(
        app.post("/api/v1/audit/seals", Some(&customer), &json!({}))
            .await,
        403,
    )
    .await;
}

#[tokio::test]
async fn a_stream_has_contiguous_versions_and_metadata_names_the_request_and_the_user() {
    let app = TestApp::spawn().await;
    let operator = token("op-ann", Role::Operator);
    for (i, body) in [json!({"sku": "SKU-M", "name": "Mug", "unit_price": 900, "currency": "EUR"})]
        .iter()
        .enumerate()
    {
        let response = app
            .client
            .post(format!("{}/api/v1/products", app.base))
            .bearer_auth(&operator)
            .header("X-Correlation-Id", format!("corr-define-{i}"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    for n in 0..3 {
        let response = app
            .client
            .post(format!("{}/api/v1/inventory/SKU-M/receipts", app.base))
            .bearer_auth(&operator)
            .header("X-Correlation-Id", format!("corr-receipt-{n}"))
            .json(&json!({"quantity": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let stream = read(&app, "/api/v1/audit/streams/inventory-SKU-M/events", 200).await;
    let events = stream["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["version"], i as u64 + 1);
        assert_eq!(
            event["metadata"]["correlation_id"],
            format!("corr-receipt-{i}")
        );
        assert_eq!(event["metadata"]["user_id"], "op-ann");
        assert!(event["metadata"]["causation_id"].is_string());
        assert_eq!(event["hash"].as_str().unwrap().len(), 64);
    }
    let verify = read(&app, "/api/v1/audit/streams/inventory-SKU-M/verify", 200).await;
    assert_eq!(
        verify,
        json!({"stream_id": "inventory-SKU-M", "valid": true, "events_checked": 3, "first_invalid_version": null})
    );
    read(&app, "/api/v1/audit/streams/inventory-NOPE/verify", 404).await;
}

#[tokio::test]
async fn verify_names_the_first_altered_or_removed_version() {
    let app = TestApp::spawn().await;
    app.given_product("SKU-V", 100, 1).await;
    let operator = token("op", Role::Operator);
    for _ in 0..3 {
        let status = app
            .post(
                "/api/v1/inventory/SKU-V/receipts",
                Some(&operator),
                &json!({"quantity": 1}),
            )
            .await
            .status();
        assert_eq!(status, 201);
    }
    sqlx::raw_sql("UPDATE events SET data = jsonb_set(data, '{quantity}', '500') WHERE stream_id = 'inventory-SKU-V' AND version = 3")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let verify = read(&app, "/api/v1/audit/streams/inventory-SKU-V/verify", 200).await;
    assert_eq!(verify["valid"], false);
    assert_eq!(verify["first_invalid_version"], 3);
    sqlx::raw_sql("DELETE FROM events WHERE stream_id = 'inventory-SKU-V' AND version >= 3")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let verify = read(&app, "/api/v1/audit/streams/inventory-SKU-V/verify", 200).await;
    assert_eq!(verify["valid"], false);
    assert_eq!(verify["first_invalid_version"], 3, "{verify}");
}

#[tokio::test]
async fn time_travel_folds_to_a_version_or_a_time_over_an_upcast_event() {
    let app = TestApp::spawn().await;
    // Schema version 0 of ProductDefined called the price `price`.
    let store = &app.state.store;
    store
        .append(
            "product-SKU-T",
            eventstore::ExpectedVersion::NoStream,
            &[eventstore::NewEvent::new(
                "ProductDefined",
                0,
                json!({"sku": "SKU-T", "name": "Teapot", "price": 1500, "currency": "EUR"}),
            )],
            &json!({"correlation_id": "c-old", "user_id": "legacy"}),
        )
        .await
        .unwrap();
    let recorded = store.read_stream("product-SKU-T", 1, 1).await.unwrap();
    // At the first event's own time: the second is recorded after it.
    let between = recorded[0].recorded_at;
    store
        .append(
            "product-SKU-T",
            eventstore::ExpectedVersion::Exact(1),
            &[eventstore::NewEvent::new(
                "ProductPriceChanged",
                1,
                json!({"sku": "SKU-T", "unit_price": 1800}),
            )],
            &json!({"correlation_id": "c-new", "user_id": "op"}),
        )
        .await
        .unwrap();

    let v1 = read(
        &app,
        "/api/v1/audit/streams/product-SKU-T/state?version=1",
        200,
    )
    .await;
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["state"]["unit_price"], 1500, "upcast from `price`: {v1}");
    let v2 = read(
        &app,
        "/api/v1/audit/streams/product-SKU-T/state?version=2",
        200,
    )
    .await;
    assert_eq!(v2["state"]["unit_price"], 1800);
    let head = read(&app, "/api/v1/audit/streams/product-SKU-T/state", 200).await;
    assert_eq!(head["version"], 2);

    let at = |t: chrono::DateTime<chrono::Utc>| {
        format!(
            "/api/v1/audit/streams/product-SKU-T/state?at={}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        )
    };
    let then = read(&app, &at(between), 200).await;
    assert_eq!(
        (
            then["version"].as_u64(),
            then["state"]["unit_price"].as_i64()
        ),
        (Some(1), Some(1500))
    );
    let before = read(
        &app,
        &at(recorded[0].recorded_at - chrono::Duration::seconds(1)),
        200,
    )
    .await;
    assert_eq!(
        before,
        json!({"stream_id": "product-SKU-T", "version": 0, "state": null})
    );

    for (query, field) in [
        ("version=3", "version"),
        ("version=0", "version"),
        ("at=yesterday", "at"),
        ("version=1&at=2026-01-01T00:00:00Z", "at"),
        ("colour=red", "colour"),
    ] {
        let body = problem(
            app.get(
                &format!("/api/v1/audit/streams/product-SKU-T/state?{query}"),
                Some(&token("op", Role::Operator)),
            )
            .await,
            422,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    read(&app, "/api/v1/audit/streams/product-NOPE/state", 404).await;
}

/// Pages `query` to the end, 3 at a time; every item's (position, type, stream, user).
async fn search_all(app: &TestApp, query: &str) -> Vec<(i64, String, String, String)> {
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = read(
            app,
            &format!("/api/v1/audit/events?{query}&limit=3&after={after}"),
            200,
        )
        .await;
        for e in page["items"].as_array().unwrap() {
            seen.push((
                e["global_position"].as_i64().unwrap(),
                e["event_type"].as_str().unwrap().to_owned(),
                e["stream_id"].as_str().unwrap().to_owned(),
                e["metadata"]["user_id"].as_str().unwrap_or("").to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn each_search_filter_and_their_combinations_page_to_the_end_while_writes_arrive() {
    let app = TestApp::spawn().await;
    let (ann, bob) = (token("ann", Role::Operator), token("bob", Role::Operator));
    for i in 0..4 {
        let who = if i % 2 == 0 { &ann } else { &bob };
        let body =
            json!({"sku": format!("SKU-{i}"), "name": "P", "unit_price": 10, "currency": "EUR"});
        assert_eq!(
            app.post("/api/v1/products", Some(who), &body)
                .await
                .status(),
            201
        );
        for _ in 0..2 {
            let path = format!("/api/v1/inventory/SKU-{i}/receipts");
            let status = app
                .post(&path, Some(who), &json!({"quantity": 1}))
                .await
                .status();
            assert_eq!(status, 201);
        }
    }
    app.settle().await;
    let started = chrono::Utc::now();

    // A writer keeps appending matching events while the searches page.
    let writer = {
        let (base, client, ann) = (app.base.clone(), app.client.clone(), ann.clone());
        tokio::spawn(async move {
            for n in 0..30 {
                let response = client
                    .post(format!("{base}/api/v1/inventory/SKU-{}/receipts", n % 4))
                    .bearer_auth(&ann)
                    .json(&json!({"quantity": 1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        })
    };
    let stocked = search_all(&app, "event_type=StockReceived").await;
    let by_ann = search_all(&app, "user_id=ann&stream_type=inventory").await;
    writer.await.unwrap();
    app.settle().await;

    // Paging while writes arrived: in global order, no duplicates, and
    // nothing written before the search started is missing.
    for seen in [&stocked, &by_ann] {
        let mut positions: Vec<i64> = seen.iter().map(|s| s.0).collect();
        let count = positions.len();
        positions.dedup();
        assert_eq!(positions.len(), count, "a duplicate");
    }
    assert!(stocked.iter().all(|s| s.1 == "StockReceived"));
    assert!(stocked.len() >= 8, "{}", stocked.len());
    assert!(by_ann
        .iter()
        .all(|s| s.3 == "ann" && s.2.starts_with("inventory-")));

    // After the writes: every filter against what the store holds.
    let everything = app.audit_events().await;
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<i64> {
        everything
            .iter()
            .filter(|e| keep(e))
            .map(|e| e["global_position"].as_i64().unwrap())
            .collect()
    };
    let positions = |query: &str| {
        let app = &app;
        let query = query.to_owned();
        async move {
            search_all(app, &query)
                .await
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        positions("event_type=StockReceived").await,
        expect(&|e| e["event_type"] == "StockReceived")
    );
    assert_eq!(
        positions("stream_type=product").await,
        expect(&|e| e["stream_id"].as_str().unwrap().starts_with("product-"))
    );
    assert_eq!(
        positions("stream_id=inventory-SKU-2").await,
        expect(&|e| e["stream_id"] == "inventory-SKU-2")
    );
    assert_eq!(
        positions("user_id=bob").await,
        expect(&|e| e["metadata"]["user_id"] == "bob")
    );
    let one_correlation = everything[3]["metadata"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        positions(&format!("correlation_id={one_correlation}")).await,
        expect(&|e| e["metadata"]["correlation_id"] == one_correlation.as_str())
    );
    let since = started
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let recorded = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["recorded_at"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        positions(&format!("from={since}")).await,
        expect(&|e| recorded(e) >= started)
    );
    assert_eq!(
        positions(&format!("to={since}")).await,
        expect(&|e| recorded(e) < started)
    );
    assert_eq!(
        positions(&format!(
            "event_type=StockReceived&user_id=ann&stream_id=inventory-SKU-1&from={since}"
        ))
        .await,
        expect(&|e| e["event_type"] == "StockReceived"
            && e["metadata"]["user_id"] == "ann"
            && e["stream_id"] == "inventory-SKU-1"
            && recorded(e) >= started)
    );
    assert_eq!(
        positions(&format!("user_id=bob&from={since}")).await,
        Vec::<i64>::new()
    );

    for (query, field) in [
        ("from=tomorrow", "from"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("event_type=A&event_type=B", "event_type"),
    ] {
        let body = problem(
            app.get(&format!("/api/v1/audit/events?{query}"), Some(&ann))
                .await,
            422,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn seals_on_demand_are_listed_and_every_event_has_a_proof_that_checks() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    problem(
        app.post("/api/v1/audit/seals", Some(&operator), &json!({}))
            .await,
        409,
    )
    .await;
    app.given_product("SKU-S", 100, 3).await;
    app.settle().await;
    let created = app
        .post("/api/v1/audit/seals", Some(&operator), &json!({}))
        .await;
    assert_eq!(created.status(), 201);
    let seal: Value = created.json().await.unwrap();
    assert_eq!(
        (seal["seal_id"].as_i64(), seal["tree_size"].as_u64()),
        (Some(1), Some(2))
    );
    // Nothing new: the latest seal, 200.
    let again = app
        .post("/api/v1/audit/seals", Some(&operator), &json!({}))
        .await;
    assert_eq!(again.status(), 200);

    let seals = read(&app, "/api/v1/audit/seals", 200).await;
    let public_key = seals["public_key"].as_str().unwrap().to_owned();
    assert_eq!(seals["items"].as_array().unwrap().len(), 1);
    assert_eq!(seals["items"][0]["public_key"], public_key.as_str());
    assert_eq!(seals["next_cursor"], Value::Null);

    let key: [u8; 32] = hex::decode(&public_key).unwrap().try_into().unwrap();
    for event in app.audit_events().await {
        let id = event["event_id"].as_str().unwrap();
        let proof = read(&app, &format!("/api/v1/audit/events/{id}/proof"), 200).await;
        for field in [
            "event_id",
            "seal_id",
            "leaf_index",
            "tree_size",
            "root",
            "audit_path",
        ] {
            assert!(!proof[field].is_null(), "{field}");
        }
        let proof: eventstore::seal::Proof = serde_json::from_value(proof).unwrap();
        assert!(eventstore::seal::check_proof(&proof, Some(key)).valid);
    }

    // An event no seal covers yet: 409; unknown or malformed ids: 404.
    let status = app
        .post(
            "/api/v1/inventory/SKU-S/receipts",
            Some(&operator),
            &json!({"quantity": 1}),
        )
        .await
        .status();
    assert_eq!(status, 201);
    let newest = app.audit_events().await.pop().unwrap();
    let id = newest["event_id"].as_str().unwrap();
    problem(
        app.get(&format!("/api/v1/audit/events/{id}/proof"), Some(&operator))
            .await,
        409,
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    problem(
        app.get(
            &format!("/api/v1/audit/events/{unknown}/proof"),
            Some(&operator),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.get("/api/v1/audit/events/not-a-uuid/proof", Some(&operator))
            .await,
        404,
    )
    .await;
}
