//! The operator console in a real browser (headless Debian chromium through
//! chromedriver) against a real server, Postgres and broker. Every test
//! saves screenshots under `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::auth::Role;
use fulcrum_tests::browser::Browser;
use fulcrum_tests::system::System;
use fulcrum_tests::{token, TestApp};
use saga::gateway::Operation;
use serde_json::{json, Value};

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, Some(&token("olga", Role::Operator))).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("a JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_finds_the_saga_of_a_declined_order_with_its_compensations() {
    let system = System::start(1).await;
    system.app.given_product("S", 100, 10).await;
    let order = system
        .place("cara", &[("S", 1)], "tok_declined", "DE")
        .await;
    system.saga_reaches(order, "compensated").await;

    let browser = Browser::start(&system.app.base).await;
    browser.sign_in(&token("olga", Role::Operator)).await;
    // The overview: live numbers (a rate needs two polls) and the sagas.
    browser
        .wait_text("#m-commands .big", "a commands/s figure", |t| {
            t.chars().any(|c| c.is_ascii_digit())
        })
        .await;
    browser
        .wait_text("#saga-counts", "the compensated saga", |t| {
            t.contains("compensated\n1") || t.contains("compensated 1")
        })
        .await;
    browser.shoot("overview").await;
    // Nothing came from another host: the page works offline.
    let foreign = browser
        .eval(
            "return performance.getEntriesByType('resource')\
             .map(e => e.name).filter(n => !n.startsWith(location.origin));",
        )
        .await;
    assert_eq!(foreign, json!([]), "resources from elsewhere");
    // Phone width: nothing sticks out sideways.
    browser.resize(390, 844).await;
    let fits = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, json!(true), "the overview overflows at phone width");
    browser.shoot("overview-phone").await;
    browser.resize(1280, 800).await;

    // Sagas → search by the order id.
    browser.click("#nav a[data-section=sagas]").await;
    browser
        .find("#saga-search")
        .await
        .send_keys(&order.to_string())
        .await
        .expect("typing the order id");
    browser.click("form[role=search] button").await;
    browser
        .wait_text("#saga-status", "compensated", |t| t == "compensated")
        .await;
    let steps = browser
        .wait_text("main table", "the compensation", |t| {
            t.contains("release_stock") && t.contains("compensation")
        })
        .await;
    assert!(steps.contains("authorize_payment"), "{steps}");
    assert!(steps.contains("refused"), "the declined step: {steps}");
    browser
        .wait_text("#order-events", "the order's cancellation", |t| {
            t.contains("OrderPlaced") && t.contains("OrderCancelled")
        })
        .await;
    // An operator looks; only an admin acts.
    assert!(browser
        .client
        .find(fantoccini::Locator::Css("#saga-retry, #saga-abort"))
        .await
        .is_err());
    browser.shoot("saga-declined").await;

    // The request's causal tree across streams.
    let events = get_json(
        &system.app,
        &format!("/api/v1/audit/streams/order-{order}/events"),
    )
    .await;
    let correlation = events["events"][0]["metadata"]["correlation_id"]
        .as_str()
        .expect("a correlation id")
        .to_owned();
    browser
        .open(&format!("#/audit/correlation/{correlation}"))
        .await;
    browser
        .wait_text("#causal-tree", "the order and its saga", |t| {
            t.contains("OrderPlaced") && t.contains(&format!("saga-{order}"))
        })
        .await;
    browser.shoot("correlation").await;

    // The live log shows the flow, newest first.
    browser.open("#/live").await;
    let log = browser
        .wait_text("#live-events", "the cancellation", |t| {
            t.contains("OrderCancelled")
        })
        .await;
    assert!(
        log.find("OrderCancelled") < log.find("OrderPlaced"),
        "newest first: {log}"
    );
    browser
        .find("#live-type")
        .await
        .send_keys("StockRes")
        .await
        .unwrap();
    browser
        .wait_text("#live-events", "only stock events", |t| {
            t.contains("StockReserved") && !t.contains("OrderCancelled")
        })
        .await;
    browser.shoot("live-log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_saga_is_retried_and_another_aborted_from_the_console() {
    let system = System::start(1).await;
    system.app.given_product("S", 100, 10).await;
    system.gateway.fail_next(Operation::Void, 1000);
    let retried = system.place("sam", &[("S", 1)], "tok_visa", "XX").await;
    let aborted = system.place("sam", &[("S", 1)], "tok_visa", "XX").await;
    system.saga_reaches(retried, "stuck").await;
    system.saga_reaches(aborted, "stuck").await;

    let browser = Browser::start(&system.app.base).await;
    browser.sign_in(&token("ada", Role::Admin)).await;
    browser.open("#/sagas?status=stuck").await;
    browser
        .wait_text("main table", "both stuck sagas", |t| {
            t.contains(&retried.to_string()) && t.contains(&aborted.to_string())
        })
        .await;
    browser.shoot("sagas-stuck").await;

    // Retry: asked first; cancelling changes nothing.
    browser.open(&format!("#/sagas/{retried}")).await;
    browser
        .wait_text("#saga-status", "stuck", |t| t == "stuck")
        .await;
    browser
        .wait_text("main table", "the stuck void", |t| {
            t.contains("void_payment")
        })
        .await;
    browser.click("#saga-retry").await;
    browser.click("#confirm-cancel").await;
    assert_eq!(system.saga(retried).await.unwrap()["status"], "stuck");
    system.gateway.clear_faults();
    browser.click("#saga-retry").await;
    browser.shoot("saga-retry-confirm").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_text("#saga-outcome", "the retry's outcome", |t| {
            t.starts_with("Retried")
        })
        .await;
    browser
        .wait_text("#saga-status", "compensated", |t| t == "compensated")
        .await;
    system.order_reaches(retried, "cancelled").await;

    // Abort: the reason is required, and recorded with who gave it.
    browser.open(&format!("#/sagas/{aborted}")).await;
    browser
        .wait_text("#saga-status", "stuck", |t| t == "stuck")
        .await;
    browser.click("#saga-abort").await;
    browser.click("#confirm-ok").await; // no reason yet: the form refuses
    assert_eq!(system.saga(aborted).await.unwrap()["status"], "stuck");
    browser
        .find("#abort-reason")
        .await
        .send_keys("refunded by hand")
        .await
        .expect("typing the reason");
    browser.click("#confirm-ok").await;
    browser
        .wait_text("#saga-aborted-by", "the operator", |t| t == "ada")
        .await;
    browser
        .wait_text("#saga-abort-reason", "the reason", |t| {
            t == "refunded by hand"
        })
        .await;
    browser
        .wait_text("#saga-history", "the abort in the history", |t| {
            t.contains("SagaAborted by ada")
        })
        .await;
    browser.shoot("saga-aborted").await;
    let saga = system.saga(aborted).await.unwrap();
    assert_eq!(saga["status"], "aborted");
    assert_eq!(saga["aborted_by"], "ada");
    assert_eq!(saga["abort_reason"], "refunded by hand");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_started_from_the_console_shows_progress_and_ends_running() {
    let system = System::start(1).await;
    system.app.given_product("S", 100, 10).await;
    for _ in 0..3 {
        system.place("rita", &[("S", 1)], "tok_visa", "DE").await;
    }
    // Holding the orders tables' lock keeps the rebuild at its swap, after
    // its bulk phase, so the page can be seen mid-rebuild.
    let mut holder = system.app.db.pool.acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('fulcrum.projection.orders', 0))")
        .execute(&mut *holder)
        .await
        .expect("the orders tables' lock");

    let browser = Browser::start(&system.app.base).await;
    browser.sign_in(&token("ada", Role::Admin)).await;
    browser.open("#/projections").await;
    browser
        .wait_text("#projection-orders .status", "running", |t| t == "running")
        .await;
    // The page re-renders every second; keyboard focus stays on its button.
    browser
        .eval(
            "const b = document.querySelector('#projection-catalog .rebuild-button'); \
             b.focus(); b.dataset.old = 'yes';",
        )
        .await;
    browser
        .wait_eval(
            "the table re-rendered",
            "return document.querySelector('#projection-catalog .rebuild-button')?.dataset.old !== 'yes'",
        )
        .await;
    let focus = browser
        .eval(
            "return document.activeElement === \
             document.querySelector('#projection-catalog .rebuild-button')",
        )
        .await;
    assert_eq!(focus, json!(true), "focus left the re-rendered button");
    browser.click("#projection-orders .rebuild-button").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_text("#projection-outcome", "the rebuild's start", |t| {
            t.contains("Rebuild of orders started")
        })
        .await;
    let progress = browser
        .wait_text("#projection-orders .rebuild.running", "progress", |t| {
            t.contains("ev/s") && !t.starts_with("0 events")
        })
        .await;
    assert!(progress.contains("ETA"), "{progress}");
    browser
        .wait_text("#projection-orders .status", "rebuilding", |t| {
            t == "rebuilding"
        })
        .await;
    browser.shoot("projection-rebuilding").await;

    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('fulcrum.projection.orders', 0))")
        .execute(&mut *holder)
        .await
        .expect("releasing the lock");
    drop(holder);
    let done = browser
        .wait_text("#projection-orders .rebuild.done", "the swap", |t| {
            t.starts_with("swapped in")
        })
        .await;
    browser
        .wait_text("#projection-orders .status", "running again", |t| {
            t == "running"
        })
        .await;
    browser.shoot("projections").await;

    let list = get_json(&system.app, "/api/v1/admin/projections").await;
    let orders = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["status"], "running");
    let events = orders["rebuild"]["events"].as_i64().unwrap();
    assert!(events > 0, "{orders}");
    assert!(orders["rebuild"]["finished_at"].is_string(), "{orders}");
    assert!(
        done.contains(&format!("{events} events")),
        "{done} vs {orders}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_altered_by_sql_shows_as_a_failed_verification_on_its_stream_page() {
    let app = TestApp::spawn().await;
    let operator = token("op", Role::Operator);
    let define = app
        .post(
            "/api/v1/products",
            Some(&operator),
            &json!({"sku": "SKU-V", "name": "Valve", "unit_price": 250, "currency": "EUR"}),
        )
        .await;
    assert_eq!(define.status(), 201);
    for _ in 0..3 {
        let receipt = app
            .post(
                "/api/v1/inventory/SKU-V/receipts",
                Some(&operator),
                &json!({"quantity": 1}),
            )
            .await;
        assert_eq!(receipt.status(), 201);
    }

    let browser = Browser::start(&app.base).await;
    browser.sign_in(&operator).await;
    browser.open("#/audit/stream/inventory-SKU-V").await;
    browser
        .wait_text("#verify-result", "an intact chain", |t| {
            t.contains("verified: 3 events intact")
        })
        .await;
    // Time travel to version 2: two receipts.
    browser
        .find("#state-version")
        .await
        .send_keys("2")
        .await
        .unwrap();
    browser.click("#state-form button").await;
    browser
        .wait_text("#stream-state", "the state at version 2", |t| {
            t.contains("State at version 2")
        })
        .await;

    // A seal, and an event's inclusion proof checked in the browser.
    let sealed = app
        .post("/api/v1/audit/seals", Some(&operator), &json!({}))
        .await;
    assert!(sealed.status().is_success(), "sealing: {}", sealed.status());
    let events = get_json(&app, "/api/v1/audit/streams/inventory-SKU-V/events").await;
    let event_id = events["events"][1]["event_id"].as_str().unwrap().to_owned();
    browser.open(&format!("#/audit/proof/{event_id}")).await;
    browser
        .wait_text("#proof-check", "the proof checked", |t| {
            t.contains("leads from the event's hash to the seal's root")
        })
        .await;
    browser.shoot("audit-proof").await;

    sqlx::raw_sql(
        "UPDATE events SET data = jsonb_set(data, '{quantity}', '500') \
         WHERE stream_id = 'inventory-SKU-V' AND version = 2",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    browser.open("#/audit").await;
    browser.open("#/audit/stream/inventory-SKU-V").await;
    browser
        .wait_text("#verify-result", "the failed verification", |t| {
            t.contains("Verification FAILED at version 2")
        })
        .await;
    let tampered = browser.find("tr.tampered").await.text().await.unwrap();
    assert!(
        tampered.starts_with('2'),
        "the first tampered row: {tampered}"
    );
    browser.shoot("stream-tampered").await;

    // The search, filtered by stream, pages through the log: versions 1 and
    // 2 on the first page, version 3 on the second.
    browser
        .open("#/audit?stream_id=inventory-SKU-V&limit=2")
        .await;
    browser
        .wait_text("#audit-results", "the first page", |t| {
            t.contains("2 events")
                && t.contains("inventory-SKU-V 1 ")
                && t.contains("inventory-SKU-V 2 ")
                && !t.contains("inventory-SKU-V 3 ")
        })
        .await;
    browser.click("#audit-next").await;
    browser
        .wait_text("#audit-results", "the second page", |t| {
            t.contains("inventory-SKU-V 3 ") && !t.contains("inventory-SKU-V 2 ")
        })
        .await;
    browser.shoot("audit-search").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_token_gets_no_operator_page() {
    let app = TestApp::spawn().await;
    let browser = Browser::start(&app.base).await;
    browser.sign_in(&token("cara", Role::Customer)).await;
    browser
        .wait_text("#refused", "the refusal", |t| t.contains("role customer"))
        .await;
    let nav_hidden = browser
        .eval("return document.getElementById('nav').hidden;")
        .await;
    assert_eq!(nav_hidden, json!(true));
    browser.shoot("customer-refused").await;
    for page in ["#/sagas", "#/projections", "#/audit", "#/live"] {
        browser.open(page).await;
        browser
            .wait_text("main h1", "the refusal", |t| {
                t == "No operator pages for this role"
            })
            .await;
        let tables = browser
            .eval("return document.querySelectorAll('main table').length;")
            .await;
        assert_eq!(tables, json!(0), "{page} shows data to a customer");
    }

    // A forged token is refused by the API and the page asks again.
    browser.eval("sessionStorage.clear(); return null;").await;
    let forged = format!("{}x", token("mallory", Role::Admin));
    browser.sign_in(&forged).await;
    browser
        .wait_text("#sign-in-error", "the 401", |t| t.contains("401"))
        .await;
}
