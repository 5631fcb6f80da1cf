//! The command pipeline against a real Postgres: batching per stream,
//! retries across processes, idempotency, snapshots, metadata.
#![allow(clippy::unwrap_used)]

use commands::{
    CommandContext, CommandError, CommandHandler, ExecutorConfig, OrderRequest, RequestedLine,
};
use domain::inventory::InventoryCommand;
use domain::product::ProductCommand;
use domain::{Address, DomainError};
use eventstore::testing::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

fn ctx() -> CommandContext {
    CommandContext::new("tester", "corr-1")
}

fn receive(qty: i64) -> InventoryCommand {
    InventoryCommand::ReceiveStock {
        sku: "SKU-1".into(),
        quantity: qty,
    }
}

async fn on_hand(handler: &CommandHandler) -> i64 {
    handler
        .inventory
        .repository()
        .forget("inventory-SKU-1")
        .await;
    handler
        .inventory
        .repository()
        .load("inventory-SKU-1")
        .await
        .unwrap()
        .state
        .on_hand
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_receipts_to_one_sku_all_land() {
    let db = TestDb::with_pool_size(10).await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());

    let tasks: Vec<_> = (1..=100)
        .map(|q| {
            let handler = handler.clone();
            tokio::spawn(async move {
                handler
                    .inventory
                    .execute("SKU-1", receive(q), ctx(), Value::Null)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    assert_eq!(on_hand(&handler).await, (1..=100).sum::<i64>());
    let events = db
        .store()
        .read_stream("inventory-SKU-1", 1, 1000)
        .await
        .unwrap();
    assert_eq!(events.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_racing_from_two_processes_retry_on_conflict_and_all_land() {
    let db = TestDb::with_pool_size(10).await;
    // Two handlers with their own caches and queues: two processes.
    let a = CommandHandler::new(db.store(), ExecutorConfig::default());
    let b = CommandHandler::new(db.store(), ExecutorConfig::default());

    let tasks: Vec<_> = (1..=60)
        .map(|q| {
            let handler = if q % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                handler
                    .inventory
                    .execute("SKU-1", receive(q), ctx(), Value::Null)
                    .await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failed.push(e.to_string());
        }
    }

    assert_eq!(failed, Vec::<String>::new());
    assert_eq!(on_hand(&a).await, (1..=60).sum::<i64>());
    assert!(
        eventstore::verify_stream(&db.pool, "inventory-SKU-1")
            .await
            .unwrap()
            .valid
    );
}

#[tokio::test]
async fn a_stale_cache_is_evicted_on_conflict_and_the_command_retried() {
    let db = TestDb::new().await;
    let a = CommandHandler::new(db.store(), ExecutorConfig::default());
    let b = CommandHandler::new(db.store(), ExecutorConfig::default());
    a.inventory
        .execute("SKU-1", receive(1), ctx(), Value::Null)
        .await
        .unwrap();

    // b moves the stream behind a's back; a's cache still says version 1.
    b.inventory
        .execute("SKU-1", receive(10), ctx(), Value::Null)
        .await
        .unwrap();
    let outcome = a
        .inventory
        .execute("SKU-1", receive(100), ctx(), Value::Null)
        .await
        .unwrap();

    assert_eq!(outcome.version, 3);
    assert_eq!(
        a.inventory
            .repository()
            .load("inventory-SKU-1")
            .await
            .unwrap()
            .state
            .on_hand,
        111
    );
}

#[tokio::test]
async fn a_refused_command_appends_nothing_and_others_in_its_batch_still_land() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());

    let (ok, bad) = tokio::join!(
        handler
            .inventory
            .execute("SKU-1", receive(5), ctx(), Value::Null),
        handler
            .inventory
            .execute("SKU-1", receive(-1), ctx(), Value::Null),
    );

    assert_eq!(ok.unwrap().appended, 1);
    assert!(matches!(
        bad,
        Err(CommandError::Domain(DomainError::Invalid(_)))
    ));
    assert_eq!(
        db.store()
            .read_stream("inventory-SKU-1", 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn every_event_records_correlation_causation_user_and_command_id() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());
    let context = ctx();
    let command_id = context.command_id.to_string();

    handler
        .inventory
        .execute("SKU-1", receive(5), context, Value::Null)
        .await
        .unwrap();

    let event = &db
        .store()
        .read_stream("inventory-SKU-1", 1, 10)
        .await
        .unwrap()[0];
    assert_eq!(event.metadata["correlation_id"], "corr-1");
    assert_eq!(event.metadata["user_id"], "tester");
    assert_eq!(event.metadata["command_id"], json!(command_id));
    assert_eq!(event.metadata["causation_id"], json!(command_id));
}

#[tokio::test]
async fn a_retry_under_the_same_idempotency_key_returns_the_first_answer_and_appends_nothing() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());
    let keyed = |hash: &[u8]| ctx().with_idempotency("alice:key-1".into(), hash.to_vec());

    let first = handler
        .inventory
        .execute("SKU-1", receive(5), keyed(b"h1"), json!({"n": 1}))
        .await
        .unwrap();
    let retry = handler
        .inventory
        .execute("SKU-1", receive(5), keyed(b"h1"), json!({"n": 2}))
        .await
        .unwrap();
    let other = handler
        .inventory
        .execute("SKU-1", receive(6), keyed(b"h2"), json!({"n": 3}))
        .await;

    assert!(!first.replayed && retry.replayed);
    assert_eq!(retry.reply, json!({"n": 1}), "the first answer is replayed");
    assert_eq!(
        (retry.version, retry.position),
        (first.version, first.position)
    );
    assert!(matches!(other, Err(CommandError::IdempotencyKeyReused)));
    assert_eq!(
        db.store()
            .read_stream("inventory-SKU-1", 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_under_one_key_from_two_processes_append_once() {
    let db = TestDb::with_pool_size(10).await;
    let a = CommandHandler::new(db.store(), ExecutorConfig::default());
    let b = CommandHandler::new(db.store(), ExecutorConfig::default());

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let handler = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let context = ctx().with_idempotency("alice:k".into(), b"same".to_vec());
                handler
                    .inventory
                    .execute("SKU-1", receive(7), context, Value::Null)
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }

    assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
    assert_eq!(on_hand(&a).await, 7);
}

/// A keyed command loads its stream before its transaction takes a
/// connection. Were it to load inside (one connection held, a second one
/// wanted), three such commands on cold streams would hold the whole pool
/// of three and wait on each other until the pool's acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_commands_on_many_cold_streams_do_not_starve_a_small_pool() {
    let db = TestDb::with_pool_size(3).await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());

    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let handler = handler.clone();
            tokio::spawn(async move {
                let context = ctx().with_idempotency(format!("op:k-{i}"), vec![i]);
                let command = InventoryCommand::ReceiveStock {
                    sku: format!("SKU-{i}"),
                    quantity: 1,
                };
                handler
                    .inventory
                    .execute(&format!("SKU-{i}"), command, context, Value::Null)
                    .await
            })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert_eq!((outcome.version, outcome.appended), (1, 1));
    }
}

#[tokio::test]
async fn loading_starts_from_the_latest_snapshot() {
    let db = TestDb::new().await;
    let config = ExecutorConfig {
        snapshot_every: 10,
        ..ExecutorConfig::default()
    };
    let handler = CommandHandler::new(db.store(), config);
    for _ in 0..25 {
        handler
            .inventory
            .execute("SKU-1", receive(1), ctx(), Value::Null)
            .await
            .unwrap();
    }
    // Snapshots are saved in the background.
    let mut version = 0;
    for _ in 0..100 {
        if let Some(s) = eventstore::load_snapshot(&db.pool, "inventory-SKU-1")
            .await
            .unwrap()
        {
            version = s.version;
            if version == 20 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(version, 20);

    // Mark the snapshot: a fresh process that loads through it shows the mark.
    sqlx::query("UPDATE snapshots SET state = jsonb_set(state, '{state,on_hand}', '1000')")
        .execute(&db.pool)
        .await
        .unwrap();
    let fresh = CommandHandler::new(db.store(), config);
    let loaded = fresh
        .inventory
        .repository()
        .load("inventory-SKU-1")
        .await
        .unwrap();

    assert_eq!(loaded.version, 25);
    assert_eq!(
        loaded.state.on_hand,
        1000 + 5,
        "snapshot at 20 plus five receipts after it"
    );
}

#[tokio::test]
async fn an_order_is_priced_from_the_catalogue_and_unknown_skus_are_field_errors() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());
    let define = ProductCommand::DefineProduct {
        sku: "SKU-1".into(),
        name: "Widget".into(),
        unit_price: 250,
        currency: "EUR".into(),
    };
    handler
        .products
        .execute("SKU-1", define, ctx(), Value::Null)
        .await
        .unwrap();
    let request = |lines: Vec<RequestedLine>| OrderRequest {
        order_id: Uuid::new_v4(),
        customer_id: "alice".into(),
        lines,
        shipping_address: Address {
            name: "Alice".into(),
            line1: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        payment_method: "tok_visa".into(),
    };
    let line = |sku: &str, quantity| RequestedLine {
        sku: sku.into(),
        quantity,
    };

    let placed = handler
        .place_order(request(vec![line("SKU-1", 3)]), ctx())
        .await
        .unwrap();
    let unknown = handler
        .place_order(
            request(vec![line("SKU-1", 1), line("NOPE", 1), line("bad sku!", 1)]),
            ctx(),
        )
        .await;

    let order = handler
        .orders
        .repository()
        .load(&placed.stream_id)
        .await
        .unwrap();
    assert_eq!(order.state.total, 750);
    assert_eq!(order.state.currency, "EUR");
    assert_eq!(placed.reply["status"], "placed");
    match unknown {
        Err(CommandError::Domain(DomainError::Invalid(errors))) => {
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["lines[1].sku", "lines[2].sku"]);
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[tokio::test]
async fn creating_a_stream_that_exists_after_all_is_decided_on_its_real_state() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store(), ExecutorConfig::default());
    let define = |name: &str| ProductCommand::DefineProduct {
        sku: "SKU-1".into(),
        name: name.into(),
        unit_price: 100,
        currency: "EUR".into(),
    };
    handler
        .products
        .execute("SKU-1", define("first"), ctx(), Value::Null)
        .await
        .unwrap();

    // `create` skips the read; the append's expected version catches the clash.
    let again = handler
        .products
        .create("SKU-1", define("second"), ctx(), Value::Null)
        .await;

    assert!(matches!(
        again,
        Err(CommandError::Domain(DomainError::Conflict(_)))
    ));
    assert_eq!(
        db.store()
            .read_stream("product-SKU-1", 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Two processes: `a` caches a state, `b` moves the stream on.
async fn two_processes() -> (TestDb, CommandHandler, CommandHandler) {
    let db = TestDb::with_pool_size(10).await;
    let a = CommandHandler::new(db.store(), ExecutorConfig::default());
    let b = CommandHandler::new(db.store(), ExecutorConfig::default());
    (db, a, b)
}

#[tokio::test]
async fn a_command_refused_on_a_stale_cached_state_is_decided_again_on_the_store() {
    use domain::order::OrderCommand;
    let (_db, a, b) = two_processes().await;
    define(&a, "SKU-1").await;
    let order_id = Uuid::new_v4();
    a.place_order(order_request(order_id), ctx()).await.unwrap();
    let id = order_id.to_string();
    // `a` caches the order as placed; `b` confirms it.
    a.orders
        .repository()
        .load(&format!("order-{id}"))
        .await
        .unwrap();
    b.orders
        .execute(&id, OrderCommand::ConfirmOrder, ctx(), Value::Null)
        .await
        .unwrap();
    let ship = OrderCommand::ShipOrder {
        carrier: "DHL".into(),
        tracking_number: "T-1".into(),
    };
    // Shipping a placed order would be refused; the order is confirmed.
    let shipped = a
        .orders
        .execute(&id, ship.clone(), ctx(), Value::Null)
        .await;
    assert_eq!(shipped.unwrap().appended, 1);
    // The same under an idempotency key.
    let cancel = OrderCommand::CancelOrder {
        reason: domain::CancelReason::CustomerCancelled,
    };
    let other = Uuid::new_v4();
    a.place_order(order_request(other), ctx()).await.unwrap();
    let other_id = other.to_string();
    a.orders
        .repository()
        .load(&format!("order-{other_id}"))
        .await
        .unwrap();
    b.orders
        .execute(&other_id, OrderCommand::ConfirmOrder, ctx(), Value::Null)
        .await
        .unwrap();
    b.orders
        .execute(&other_id, ship, ctx(), Value::Null)
        .await
        .unwrap();
    let keyed = ctx().with_idempotency("k:cancel".into(), vec![1]);
    let refused = a
        .orders
        .execute(&other_id, cancel, keyed, Value::Null)
        .await;
    assert!(
        matches!(refused, Err(CommandError::Domain(DomainError::Conflict(ref m))) if m.contains("shipped")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn absence_is_never_trusted_from_the_cache() {
    let (_db, a, b) = two_processes().await;
    // `a` looks the product up before it exists, then `b` defines it.
    let order_id = Uuid::new_v4();
    let early = a.place_order(order_request(order_id), ctx()).await;
    assert!(matches!(
        early,
        Err(CommandError::Domain(DomainError::Invalid(_)))
    ));
    define(&b, "SKU-1").await;
    a.receive_stock("SKU-1", 5, ctx(), Value::Null)
        .await
        .unwrap();
    a.place_order(order_request(order_id), ctx()).await.unwrap();
    let actor = commands::Actor {
        user_id: "alice",
        staff: false,
    };
    b.authorize_order(order_id, &actor).await.unwrap();
}

async fn define(handler: &CommandHandler, sku: &str) {
    let define = ProductCommand::DefineProduct {
        sku: sku.into(),
        name: "Widget".into(),
        unit_price: 250,
        currency: "EUR".into(),
    };
    handler
        .products
        .execute(sku, define, ctx(), Value::Null)
        .await
        .unwrap();
}

fn order_request(order_id: Uuid) -> OrderRequest {
    OrderRequest {
        order_id,
        customer_id: "alice".into(),
        lines: vec![RequestedLine {
            sku: "SKU-1".into(),
            quantity: 1,
        }],
        shipping_address: Address {
            name: "Alice".into(),
            line1: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        payment_method: "tok_visa".into(),
    }
}
