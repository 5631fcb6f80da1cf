//! What the admin list shows: position, head, lag, status and dead letters.

use domain::{DomainEvent, PaymentEvent};
use eventstore::{ExpectedVersion, NewEvent, RecordedEvent};
use projections::status::{self, ProjectionInfo, Status};
use projections::Projection;
use serde_json::json;

use crate::given::World;

fn line(name: &str, position: i64, head: i64, lag: i64) -> ProjectionInfo {
    ProjectionInfo {
        name: name.into(),
        position,
        head,
        lag,
        status: Status::Running,
        dead_letters: 0,
        last_error: None,
        rebuild: None,
    }
}

/// The highest global position among `events` of streams of `stream_type`.
fn last_of(events: &[RecordedEvent], stream_type: &str) -> i64 {
    events
        .iter()
        .filter(|e| e.stream_type == stream_type)
        .map(|e| e.global_position)
        .max()
        .unwrap()
}

#[tokio::test]
async fn the_list_shows_position_head_and_lag_of_every_projection() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    w.define("B", 1000, "EUR").await;
    w.change_price("B", 900).await;
    w.receive("A", 10).await;
    w.receive("B", 5).await;
    let first = w.place("c", &["A"], 1).await;
    let second = w.place("c", &["A", "B"], 1).await;
    w.confirm(first).await;
    w.cancel(second, domain::CancelReason::OutOfStock).await;
    // A stream no projection consumes: in the head, in no lag.
    let payment = PaymentEvent::PaymentDeclined {
        order_id: first,
        reason: "no".into(),
    };
    let head = w
        .store
        .append(
            &format!("payment-{first}"),
            ExpectedVersion::NoStream,
            &[NewEvent::new(payment.event_type(), 1, payment.to_data())],
            &json!({}),
        )
        .await
        .unwrap()
        .position;
    let events = w.events().await;
    assert_eq!(events.iter().map(|e| e.global_position).max(), Some(head));

    let list = status::list(&w.db.pool).await.unwrap();
    assert_eq!(
        list,
        [
            line("orders", 0, head, 4),
            line("inventory", 0, head, 2),
            line("catalog", 0, head, 3),
            line("sales", 0, head, 4),
        ]
    );

    // Caught up: no lag, at the last event it consumes (not the head).
    w.catch_up(Projection::Orders).await;
    w.catch_up(Projection::Catalog).await;
    // Partly: inventory-A's event, not inventory-B's.
    let inventory: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.stream_id == "inventory-A")
        .collect();
    w.apply(Projection::Inventory, "rm_inventory", inventory[0])
        .await;
    let list = status::list(&w.db.pool).await.unwrap();
    assert_eq!(
        list,
        [
            line("orders", last_of(&events, "order"), head, 0),
            line("inventory", inventory[0].global_position, head, 1),
            line("catalog", last_of(&events, "product"), head, 0),
            line("sales", 0, head, 4),
        ]
    );

    // A new event of a consumed stream: one more behind; the head moves.
    let later = w.ship(first).await;
    let list = status::list(&w.db.pool).await.unwrap();
    assert_eq!(list[0], line("orders", last_of(&events, "order"), later, 1));
    assert_eq!(list[3], line("sales", 0, later, 5));
}

#[tokio::test]
async fn dead_letters_are_counted_once_and_listed_with_the_last_error() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let event = w.stream("product-A").await.remove(0);
    let mut tx = w.db.pool.begin().await.unwrap();
    let new = status::dead_letter(&mut tx, Projection::Catalog, &event, "boom")
        .await
        .unwrap();
    let again = status::dead_letter(&mut tx, Projection::Catalog, &event, "boom again")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((new, again), (true, false));
    let info = w.info(Projection::Catalog).await;
    assert_eq!(
        (info.dead_letters, info.last_error.as_deref()),
        (1, Some("boom again"))
    );
    let letters = status::dead_letters(&w.db.pool, Projection::Catalog)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].event_id,
            letters[0].stream_id.as_str(),
            letters[0].version,
            letters[0].global_position,
            letters[0].event_type.as_str(),
            letters[0].error.as_str()
        ),
        (
            event.event_id,
            "product-A",
            1,
            event.global_position,
            "ProductDefined",
            "boom"
        )
    );
    let orders = w.info(Projection::Orders).await;
    assert_eq!((orders.dead_letters, orders.last_error), (0, None));
    assert!(status::dead_letters(&w.db.pool, Projection::Orders)
        .await
        .unwrap()
        .is_empty());
}
