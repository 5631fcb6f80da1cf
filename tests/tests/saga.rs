//! The order saga end to end: HTTP → event store → relay → Kafka → saga
//! orchestrator → commands → … → read models, over the real broker, with
//! the sandbox payment gateway. Every test checks the invariants over the
//! whole event store at the end (see [`System::check_invariants`]).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use api::auth::Role;
use fulcrum_tests::system::System;
use fulcrum_tests::{problem, token};
use saga::gateway::Operation;
use saga::SagaProbe;
use serde_json::{json, Value};
use uuid::Uuid;

fn steps(saga: &Value) -> Vec<(String, String, String)> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = match s["sku"].as_str() {
                Some(sku) => format!("{}:{sku}", s["name"].as_str().unwrap()),
                None => s["name"].as_str().unwrap().to_owned(),
            };
            (
                name,
                s["kind"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn step<'a>(saga: &'a Value, name: &str) -> &'a Value {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {saga:#}"))
}

fn payment_events(
    streams: &std::collections::BTreeMap<String, Vec<Value>>,
    order: Uuid,
) -> Vec<String> {
    streams
        .get(&format!("payment-{order}"))
        .map(|events| {
            events
                .iter()
                .map(|e| e["event_type"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until step `name` of the saga of `order` is `status`.
async fn wait_for_step(system: &System, order: Uuid, name: &str, status: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let saga = system.saga(order).await.unwrap_or_default();
        let found = saga["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|s| s["name"] == name && s["status"] == status)
        });
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "step {name} of {order} never became {status}: {saga:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_confirmed_shipped_and_delivered_and_its_saga_completes() {
    let system = System::start(1).await;
    system.app.given_product("SKU-1", 1250, 10).await;
    system.app.given_product("SKU-2", 300, 5).await;

    let order = system
        .place("alice", &[("SKU-1", 2), ("SKU-2", 1)], "tok_visa", "DE")
        .await;

    let confirmed = system.order_reaches(order, "confirmed").await;
    assert_eq!(confirmed["total"], 2800);
    system.stock_reaches("SKU-1", 10, 2).await;
    let base = format!("/api/v1/orders/{order}");
    let ship = json!({"carrier": "DHL", "tracking_number": "TRK-1"});
    assert_eq!(
        system.operator_post(&format!("{base}/ship"), &ship).await,
        202
    );
    system.order_reaches(order, "shipped").await;
    system.stock_reaches("SKU-1", 8, 0).await;
    system.stock_reaches("SKU-2", 4, 0).await;
    assert_eq!(
        system
            .operator_post(&format!("{base}/deliver"), &json!({}))
            .await,
        202
    );
    system.order_reaches(order, "delivered").await;
    let saga = system.saga_reaches(order, "completed").await;
    let names: Vec<String> = steps(&saga)
        .into_iter()
        .map(|(name, kind, status)| {
            assert_eq!(kind, "action");
            assert_eq!(status, "succeeded", "{name}");
            name
        })
        .collect();
    for expected in [
        "reserve_stock:SKU-1",
        "reserve_stock:SKU-2",
        "authorize_payment",
        "request_shipment",
        "capture_payment",
        "confirm_order",
        "commit_stock:SKU-1",
        "commit_stock:SKU-2",
        "ship_shipment",
        "deliver_shipment",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} missing from {names:?}"
        );
    }

    // Cancelling after shipment is refused and changes nothing.
    let before = system.app.audit_events().await.len();
    let alice = token("alice", Role::Customer);
    let refused = system
        .app
        .post(&format!("{base}/cancel"), Some(&alice), &json!({}))
        .await;
    problem(refused, 409).await;
    let streams = system.check_invariants().await;
    assert_eq!(streams.values().map(Vec::len).sum::<usize>(), before);
    assert_eq!(
        payment_events(&streams, order),
        ["PaymentAuthorized", "PaymentCaptured"]
    );
    // What the saga does carries the correlation id of the request that
    // made it due: placing the order, or the operator's ship notice.
    let order_stream = &streams[&format!("order-{order}")];
    let placed = order_stream[0]["metadata"]["correlation_id"].clone();
    let shipped = order_stream
        .iter()
        .find(|e| e["event_type"] == "OrderShipped")
        .unwrap()["metadata"]["correlation_id"]
        .clone();
    assert_ne!(placed, shipped);
    for stream in [
        format!("payment-{order}"),
        format!("shipment-{order}"),
        "inventory-SKU-1".to_owned(),
    ] {
        for event in &streams[&stream] {
            let expected = match event["event_type"].as_str().unwrap() {
                "StockReceived" => continue,
                "ShipmentShipped" | "StockCommitted" => &shipped,
                "ShipmentDelivered" => continue,
                _ => &placed,
            };
            assert_eq!(
                &event["metadata"]["correlation_id"],
                expected,
                "{stream} {} (placed {placed}); saga: {:#}",
                event["event_type"],
                streams[&format!("saga-{order}")]
                    .iter()
                    .map(|e| json!([
                        e["event_type"],
                        e["data"]["step"],
                        e["metadata"]["correlation_id"]
                    ]))
                    .collect::<Value>()
            );
            assert!(event["metadata"]["causation_id"].is_string());
        }
    }
    // The sales read model counts the confirmation.
    let sales: Value = system
        .app
        .get("/api/v1/stats/sales", Some(&token("olga", Role::Operator)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sales["days"][0]["orders"], 1);
    assert_eq!(sales["days"][0]["revenue"], 2800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failing_step_is_compensated_and_the_order_cancelled_with_its_reason() {
    let system = System::start(1).await;
    system.app.given_product("A", 100, 100).await;
    system.app.given_product("SCARCE", 100, 1).await;

    let out_of_stock = system
        .place("bob", &[("A", 2), ("SCARCE", 5)], "tok_visa", "DE")
        .await;
    let declined = system.place("bob", &[("A", 1)], "tok_declined", "DE").await;
    let timeout = system.place("bob", &[("A", 1)], "tok_timeout", "DE").await;
    let late = system.place("bob", &[("A", 1)], "tok_late", "DE").await;
    let rejected = system.place("bob", &[("A", 1)], "tok_visa", "XX").await;
    let not_shipped_to = system.place("bob", &[("A", 1)], "tok_visa", "FR").await;
    let flaky = system.place("bob", &[("A", 1)], "tok_flaky", "DE").await;

    for (order, reason) in [
        (out_of_stock, "out_of_stock"),
        (declined, "payment_declined"),
        (timeout, "payment_timeout"),
        (late, "payment_timeout"),
        (rejected, "shipment_rejected"),
        (not_shipped_to, "shipment_rejected"),
    ] {
        let cancelled = system.order_reaches(order, "cancelled").await;
        assert_eq!(cancelled["cancel_reason"], reason, "{order}");
        let saga = system.saga_reaches(order, "compensated").await;
        assert_eq!(saga["reason"], reason);
        assert_eq!(step(&saga, "cancel_order")["kind"], "compensation");
    }
    // The first line of the out-of-stock order was reserved, then released.
    let saga = system.saga(out_of_stock).await.unwrap();
    assert!(steps(&saga).contains(&(
        "release_stock:A".into(),
        "compensation".into(),
        "succeeded".into()
    )));
    assert!(steps(&saga).contains(&(
        "reserve_stock:SCARCE".into(),
        "action".into(),
        "refused".into()
    )));
    // The timed-out payment step says so.
    assert_eq!(
        step(&system.saga(timeout).await.unwrap(), "authorize_payment")["status"],
        "timed_out"
    );
    // The late approval arrives after the saga gave up, and is voided.
    wait_for_step(&system, late, "void_payment", "succeeded").await;
    system.saga_reaches(late, "compensated").await;
    // The rejected shipment's authorisation is voided.
    assert_eq!(
        step(&system.saga(rejected).await.unwrap(), "void_payment")["status"],
        "succeeded"
    );
    // Flaky: two transient failures, then confirmed.
    system.order_reaches(flaky, "confirmed").await;
    let saga = system.saga(flaky).await.unwrap();
    assert_eq!(step(&saga, "authorize_payment")["attempts"], 3);
    assert_eq!(step(&saga, "authorize_payment")["status"], "succeeded");

    // Only the flaky order holds stock.
    system.stock_reaches("A", 100, 1).await;
    system.stock_reaches("SCARCE", 1, 0).await;
    let streams = system.check_invariants().await;
    assert_eq!(
        payment_events(&streams, late),
        ["PaymentAuthorized", "PaymentVoided"]
    );
    assert_eq!(
        payment_events(&streams, rejected),
        ["PaymentAuthorized", "PaymentVoided"]
    );
    assert_eq!(payment_events(&streams, declined), ["PaymentDeclined"]);
    assert!(payment_events(&streams, timeout).is_empty());
    assert!(payment_events(&streams, out_of_stock).is_empty());
    assert_eq!(
        payment_events(&streams, not_shipped_to),
        ["PaymentAuthorized", "PaymentVoided"]
    );
    assert_eq!(system.gateway.voids().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_before_shipment_refunds_and_releases_whoever_asks() {
    let system = System::start(1).await;
    system.app.given_product("C", 500, 10).await;
    let by_customer = system.place("carol", &[("C", 2)], "tok_visa", "DE").await;
    let by_operator = system.place("carol", &[("C", 3)], "tok_visa", "DE").await;
    system.order_reaches(by_customer, "confirmed").await;
    system.order_reaches(by_operator, "confirmed").await;

    let carol = token("carol", Role::Customer);
    let cancel = |order: Uuid| format!("/api/v1/orders/{order}/cancel");
    let answer = system
        .app
        .post(
            &cancel(by_customer),
            Some(&carol),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert_eq!(
        system.operator_post(&cancel(by_operator), &json!({})).await,
        202
    );

    for order in [by_customer, by_operator] {
        let cancelled = system.order_reaches(order, "cancelled").await;
        assert_eq!(cancelled["cancel_reason"], "customer_cancelled");
        let saga = system.saga_reaches(order, "compensated").await;
        assert_eq!(step(&saga, "refund_payment")["status"], "succeeded");
    }
    system.stock_reaches("C", 10, 0).await;
    let streams = system.check_invariants().await;
    assert_eq!(
        payment_events(&streams, by_customer),
        ["PaymentAuthorized", "PaymentCaptured", "PaymentRefunded"]
    );
    assert_eq!(system.gateway.refunds().await.unwrap().len(), 2);
    // Someone else's order cannot be cancelled.
    let mallory = token("mallory", Role::Customer);
    problem(
        system
            .app
            .post(&cancel(by_customer), Some(&mallory), &json!({}))
            .await,
        403,
    )
    .await;
}

/// The saga goes on from the events its own steps, and this process's
/// gateway callbacks, appended without waiting for their copies to come
/// back through the relay and Kafka: each of those facts is delivered twice
/// (in-process and by Kafka) and recorded once, so the five facts of a
/// happy order up to its confirmation come with five duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_continues_on_the_outcomes_it_causes_and_drops_their_kafka_copies() {
    let mut system = System::start(0).await;
    let probe = Arc::new(SagaProbe::default());
    system.start_orchestrator(probe.clone());
    system.app.given_product("C", 100, 10).await;

    let order = system.place("carl", &[("C", 1)], "tok_visa", "DE").await;

    system.order_reaches(order, "confirmed").await;
    wait_for_step(&system, order, "confirm_order", "succeeded").await;
    // StockReserved, PaymentAuthorized, ShipmentRequested, PaymentCaptured
    // and OrderConfirmed: each once in-process, once from Kafka.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while probe.observed.get() + probe.duplicates.get() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "observed {}, duplicates {}: the facts were not delivered twice",
            probe.observed.get(),
            probe.duplicates.get()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(probe.observed.get(), 5);
    assert_eq!(probe.duplicates.get(), 5);
    system.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orchestrator_stopped_at_any_step_boundary_resumes_without_acting_twice() {
    let mut system = System::start(0).await;
    system.app.given_product("R", 100, 100).await;
    // No timer-driven change of an earlier saga may fire during a round:
    // each round's crash must land on its own order's boundary.
    let mut config = system.saga_config();
    config.step_check = std::time::Duration::from_secs(600);
    // A happy order takes three saga changes up to its confirmation, each
    // one transaction with the commands it carries out inline (reserve;
    // request the shipment; confirm), and two steps sent apart (authorise,
    // capture), each followed by an in-process continuation. Stop after
    // each change (before its steps are sent) and after each sent step
    // (before the saga records its outcome).
    let hooks = (1..=3u64).map(|n| (n, 0)).chain((1..=2u64).map(|n| (0, n)));
    for (changes, steps) in hooks {
        let boundary = format!("after {changes} changes / {steps} steps");
        let probe = Arc::new(SagaProbe::default());
        probe.crash_after_changes.store(changes, Ordering::Relaxed);
        probe.crash_after_steps.store(steps, Ordering::Relaxed);
        let crashing = system.start_orchestrator_with(probe.clone(), config.clone());
        system.joined(&probe, "R").await;
        let order = system.place("rita", &[("R", 1)], "tok_visa", "DE").await;
        let ended = system.orchestrator_ended(crashing).await;
        assert!(
            matches!(ended, Err(saga::SagaError::Crashed)),
            "boundary {boundary}: {ended:?}"
        );

        let resumed_probe = Arc::new(SagaProbe::default());
        let resumed = system.start_orchestrator_with(resumed_probe.clone(), config.clone());
        system.order_reaches(order, "confirmed").await;
        // Until the saga has seen the confirmation, so that the next round
        // starts with nothing left over.
        wait_for_step(&system, order, "confirm_order", "succeeded").await;
        // And until its consumer joined the group (the saga may finish
        // in-process before; see `System::joined`).
        system.joined(&resumed_probe, "R").await;
        system.stop_orchestrator(resumed).await.unwrap();
    }
    // Two units received per round (one for each orchestrator to join on).
    system.stock_reaches("R", 110, 5).await;
    let streams = system.check_invariants().await;
    let captures: usize = streams
        .iter()
        .filter(|(id, _)| id.starts_with("payment-"))
        .map(|(_, events)| {
            events
                .iter()
                .filter(|e| e["event_type"] == "PaymentCaptured")
                .count()
        })
        .sum();
    assert_eq!(captures, 5);
    assert_eq!(system.gateway.captures().await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrators_in_one_group_settle_every_order_once() {
    let system = System::start(2).await;
    system.app.given_product("T", 100, 1000).await;
    let mut orders = Vec::new();
    for i in 0..20 {
        let token = if i % 4 == 0 {
            "tok_declined"
        } else {
            "tok_visa"
        };
        orders.push((
            system.place("tom", &[("T", 1)], token, "DE").await,
            i % 4 == 0,
        ));
    }
    for (order, declined) in &orders {
        let status = if *declined { "cancelled" } else { "confirmed" };
        system.order_reaches(*order, status).await;
    }
    system.stock_reaches("T", 1000, 15).await;
    // The admin list pages through every saga, newest first, once.
    let operator = token("olga", Role::Operator);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = system
            .app
            .get(
                &format!("/api/v1/admin/sagas?limit=6&cursor={cursor}"),
                Some(&operator),
            )
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 6);
        seen.extend(
            items
                .iter()
                .map(|i| i["order_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut expected: Vec<String> = orders.iter().rev().map(|(o, _)| o.to_string()).collect();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    expected.sort();
    assert_eq!(sorted_seen, expected);
    system.check_invariants().await;
    assert_eq!(system.gateway.captures().await.unwrap().len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compensation_that_keeps_failing_is_stuck_until_an_operator_retries_or_aborts() {
    let system = System::start(1).await;
    system.app.given_product("S", 100, 10).await;
    system.gateway.fail_next(Operation::Void, 1000);
    let retried = system.place("sam", &[("S", 1)], "tok_visa", "XX").await;
    let aborted = system.place("sam", &[("S", 1)], "tok_visa", "XX").await;
    for order in [retried, aborted] {
        let saga = system.saga_reaches(order, "stuck").await;
        let void = step(&saga, "void_payment");
        assert_eq!(void["status"], "stuck");
        assert_eq!(void["attempts"], 3);
        assert!(
            void["error"].as_str().unwrap().contains("unavailable"),
            "{void}"
        );
    }
    let operator = token("olga", Role::Operator);
    let listed: Value = system
        .app
        .get("/api/v1/admin/sagas?status=stuck", Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&retried.to_string().as_str()));
    assert_eq!(listed["items"][0]["step"], "void_payment");

    // An operator may look but not act; an admin acts.
    let admin = token("ada", Role::Admin);
    let retry = format!("/api/v1/admin/sagas/{retried}/retry");
    problem(
        system.app.post(&retry, Some(&operator), &json!({})).await,
        403,
    )
    .await;
    system.gateway.clear_faults();
    assert_eq!(
        system
            .app
            .post(&retry, Some(&admin), &json!({}))
            .await
            .status(),
        202
    );
    system.saga_reaches(retried, "compensated").await;
    let cancelled = system.order_reaches(retried, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "shipment_rejected");
    problem(system.app.post(&retry, Some(&admin), &json!({})).await, 409).await;

    let abort = format!("/api/v1/admin/sagas/{aborted}/abort");
    problem(system.app.post(&abort, Some(&admin), &json!({})).await, 422).await;
    let answer = system
        .app
        .post(&abort, Some(&admin), &json!({"reason": "refunded by hand"}))
        .await;
    assert_eq!(answer.status(), 202);
    let saga = system.saga(aborted).await.unwrap();
    assert_eq!(saga["status"], "aborted");
    assert_eq!(saga["aborted_by"], "ada");
    assert_eq!(saga["abort_reason"], "refunded by hand");
    let last = saga["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "SagaAborted");
    assert_eq!(last["user_id"], "ada");
    problem(
        system
            .app
            .post(&abort, Some(&admin), &json!({"reason": "again"}))
            .await,
        409,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_for_fifty_units_confirm_exactly_fifty() {
    let system = Arc::new(System::start(1).await);
    system.app.given_product("HOT", 100, 50).await;
    let placing = (0..200).map(|i| {
        let system = system.clone();
        tokio::spawn(async move {
            system
                .place(&format!("c{}", i % 20), &[("HOT", 1)], "tok_visa", "DE")
                .await
        })
    });
    let orders: Vec<Uuid> = futures::future::join_all(placing)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (mut confirmed, mut cancelled) = (0, 0);
    for order in &orders {
        let saga = system
            .saga_reaches_any(*order, &["running", "compensated"])
            .await;
        let _ = saga;
    }
    for order in &orders {
        let operator = token("olga", Role::Operator);
        loop {
            let body: Value = system
                .app
                .get(&format!("/api/v1/orders/{order}"), Some(&operator))
                .await
                .json()
                .await
                .unwrap();
            match body["status"].as_str() {
                Some("confirmed") => {
                    confirmed += 1;
                    break;
                }
                Some("cancelled") => {
                    assert_eq!(body["cancel_reason"], "out_of_stock");
                    cancelled += 1;
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
    assert_eq!((confirmed, cancelled), (50, 150));
    system.stock_reaches("HOT", 50, 50).await;
    system.check_invariants().await;
}

#[tokio::test]
async fn the_saga_routes_check_the_role_before_anything_else() {
    let app = fulcrum_tests::TestApp::spawn().await;
    let customer = token("alice", Role::Customer);
    let operator = token("olga", Role::Operator);
    let unknown = Uuid::new_v4();
    problem(app.get("/api/v1/admin/sagas", Some(&customer)).await, 403).await;
    problem(
        app.get(&format!("/api/v1/admin/sagas/{unknown}"), Some(&customer))
            .await,
        403,
    )
    .await;
    problem(app.get("/api/v1/admin/sagas", None).await, 401).await;
    problem(
        app.post(
            &format!("/api/v1/admin/sagas/{unknown}/retry"),
            Some(&customer),
            &json!({}),
        )
        .await,
        403,
    )
    .await;
    problem(
        app.get(&format!("/api/v1/admin/sagas/{unknown}"), Some(&operator))
            .await,
        404,
    )
    .await;
    problem(
        app.get("/api/v1/admin/sagas/not-a-uuid", Some(&operator))
            .await,
        404,
    )
    .await;
    let bad = problem(
        app.get(
            "/api/v1/admin/sagas?status=lost&limit=0&cursor=x&other=1",
            Some(&operator),
        )
        .await,
        422,
    )
    .await;
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["status", "limit", "cursor", "other"] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    let empty: Value = app
        .get("/api/v1/admin/sagas", Some(&operator))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        empty,
        json!({"items": [], "next_cursor": null, "counts": {}})
    );
    let admin = token("ada", Role::Admin);
    problem(
        app.post(
            &format!("/api/v1/admin/sagas/{unknown}/retry"),
            Some(&admin),
            &json!({}),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_that_passed_while_no_orchestrator_ran_fires_once() {
    let mut system = System::start(0).await;
    system.app.given_product("D", 100, 10).await;
    // Stop the only orchestrator once the payment step is recorded (the
    // first change: the reservation made and observed, the authorisation
    // started).
    let probe = Arc::new(SagaProbe::default());
    probe.crash_after_changes.store(1, Ordering::Relaxed);
    let crashing = system.start_orchestrator(probe);
    let order = system.place("dora", &[("D", 1)], "tok_timeout", "DE").await;
    assert!(matches!(
        system.orchestrator_ended(crashing).await,
        Err(saga::SagaError::Crashed)
    ));
    let saga = system.saga(order).await.unwrap();
    let payment = step(&saga, "authorize_payment");
    assert_eq!(payment["status"], "started");
    let deadline: chrono::DateTime<chrono::Utc> =
        payment["deadline"].as_str().unwrap().parse().unwrap();
    // Nothing runs until the deadline has passed.
    while chrono::Utc::now() <= deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Two orchestrators start after it: the timeout fires once.
    system.start_orchestrator(Arc::new(SagaProbe::default()));
    system.start_orchestrator(Arc::new(SagaProbe::default()));
    let cancelled = system.order_reaches(order, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "payment_timeout");
    let saga = system.saga_reaches(order, "compensated").await;
    let timeouts = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "SagaStepTimedOut")
        .count();
    assert_eq!(timeouts, 1);
    system.stock_reaches("D", 10, 0).await;
    system.check_invariants().await;
}

/// The audit correlation view of one order: every stream the saga touched,
/// in global order, with causation links that form one causal tree.
#[tokio::test]
async fn the_correlation_view_of_an_order_spans_its_streams_and_forms_a_causal_tree() {
    let system = System::start(1).await;
    system.app.given_product("SKU-C", 500, 5).await;
    let order = system
        .place("carol", &[("SKU-C", 2)], "tok_visa", "DE")
        .await;
    system.order_reaches(order, "confirmed").await;
    system.saga_reaches(order, "running").await;
    let operator = token("auditor", Role::Operator);
    let get = |path: String| {
        let (app, operator) = (&system.app, &operator);
        async move {
            let response = app.get(&path, Some(operator)).await;
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let history = get(format!("/api/v1/audit/streams/order-{order}/events")).await;
    let placed = &history["events"][0];
    assert_eq!(placed["event_type"], "OrderPlaced");
    assert_eq!(placed["metadata"]["user_id"], "carol");
    let correlation = placed["metadata"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let view = get(format!("/api/v1/audit/correlations/{correlation}")).await;
    let events = view["events"].as_array().unwrap();
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "by global position"
    );
    let streams: std::collections::BTreeSet<String> = events
        .iter()
        .map(|e| {
            e["stream_id"]
                .as_str()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in ["order", "inventory", "payment", "shipment", "saga"] {
        assert!(streams.contains(kind), "{kind} missing from {streams:?}");
    }
    assert!(events
        .iter()
        .all(|e| e["metadata"]["correlation_id"] == correlation.as_str()));
    assert!(events
        .iter()
        .all(|e| e["metadata"]["causation_id"].is_string()));

    let tree = get(format!(
        "/api/v1/audit/correlations/{correlation}?format=tree"
    ))
    .await;
    assert_eq!(tree["events"], events.len());
    fn walk(node: &Value, depth: usize, seen: &mut Vec<(String, usize, String)>) {
        seen.push((
            node["event"]["event_type"].as_str().unwrap().to_owned(),
            depth,
            node["event"]["event_id"].as_str().unwrap().to_owned(),
        ));
        for child in node["caused"].as_array().unwrap() {
            assert_eq!(
                child["event"]["metadata"]["causation_id"], node["event"]["event_id"],
                "a child names its parent as its cause"
            );
            walk(child, depth + 1, seen);
        }
    }
    let mut seen = Vec::new();
    for root in tree["roots"].as_array().unwrap() {
        walk(root, 0, &mut seen);
    }
    assert_eq!(seen.len(), events.len(), "every event once in the tree");
    assert!(seen.iter().any(|(t, d, _)| t == "OrderPlaced" && *d == 0));
    // The reservation was caused, through the saga, by the order.
    let reserved_depth = seen
        .iter()
        .find(|(t, _, _)| t == "StockReserved")
        .unwrap()
        .1;
    assert!(
        reserved_depth >= 2,
        "StockReserved at depth {reserved_depth}"
    );
    // The saga carried the reservation out inside its own change: one
    // `SagaStepCompleted` records the step and its answer, and is the
    // reservation's cause.
    let reserved = events
        .iter()
        .find(|e| e["event_type"] == "StockReserved")
        .unwrap();
    let cause = events
        .iter()
        .find(|e| e["event_id"] == reserved["metadata"]["causation_id"])
        .unwrap();
    assert_eq!(cause["event_type"], "SagaStepCompleted", "{cause}");
    assert_eq!(cause["data"]["step"]["name"], "reserve_stock");
    assert_eq!(cause["data"]["fact"]["type"], "StockReserved");
    assert_eq!(cause["data"]["source"]["event_id"], reserved["event_id"]);
    assert!(
        !events.iter().any(|e| e["event_type"] == "SagaStepStarted"
            && e["data"]["step"]["name"] == "reserve_stock"),
        "no separate start for a step carried out inline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrators_run_one_timer_and_the_other_takes_over_when_it_stops() {
    let mut system = System::start(0).await;
    let (first, second) = (
        Arc::new(SagaProbe::default()),
        Arc::new(SagaProbe::default()),
    );
    let a = system.start_orchestrator(first.clone());
    system.start_orchestrator(second.clone());
    let sweeps = |p: &SagaProbe| p.timer_sweeps.get();
    // One of them sweeps; give the other many sweep intervals to join in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sweeps(&first) + sweeps(&second) < 60 {
        assert!(std::time::Instant::now() < deadline, "no timer sweeps");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (before_first, before_second) = (sweeps(&first), sweeps(&second));
    assert!(
        before_first == 0 || before_second == 0,
        "both timers swept ({before_first} and {before_second})"
    );
    let (holder, standby, standby_before) = if before_first > 0 {
        (a, second.clone(), before_second)
    } else {
        (a + 1, first.clone(), before_first)
    };
    system.stop_orchestrator(holder).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sweeps(&standby) == standby_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby's timer never took over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    system.check_invariants().await;
}
