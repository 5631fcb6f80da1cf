//! Gaps, skips and read-your-writes positions.

use domain::{CancelReason, DomainEvent, PaymentEvent};
use eventstore::{append_in, ExpectedVersion, NewEvent, RecordedEvent};
use projections::{has_position, position, Applied, Projection, ProjectionError};
use serde_json::json;
use uuid::Uuid;

use crate::given::World;

/// The events of stream `order-<order_id>`.
async fn order_events(w: &World, order_id: Uuid) -> Vec<RecordedEvent> {
    w.stream(&format!("order-{order_id}")).await
}

#[tokio::test]
async fn a_gap_is_answered_and_changes_nothing() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let order_id = w.place("c", &["A"], 2).await;
    w.confirm(order_id).await;
    w.cancel(order_id, CancelReason::CustomerCancelled).await;
    let events = order_events(&w, order_id).await;
    let [placed, confirmed, cancelled] = &events[..] else {
        panic!("three order events, got {}", events.len());
    };

    for projection in [Projection::Orders, Projection::Sales] {
        let schema = projection.live_schema();
        let empty = w.dump(projection, &schema).await;
        let gap = w.apply(projection, &schema, confirmed).await;
        assert_eq!(gap, Applied::Gap { expected: 1 }, "{projection}");
        assert_eq!(w.dump(projection, &schema).await, empty, "{projection}");

        assert_eq!(w.apply(projection, &schema, placed).await, Applied::Applied);
        let after_placed = w.dump(projection, &schema).await;
        assert_ne!(after_placed, empty);
        let gap = w.apply(projection, &schema, cancelled).await;
        assert_eq!(gap, Applied::Gap { expected: 2 }, "{projection}");
        assert_eq!(
            w.dump(projection, &schema).await,
            after_placed,
            "{projection}"
        );

        // A gap inside a transaction leaves it usable: the rest commits.
        let mut tx = w.db.pool.begin().await.unwrap();
        let answers = [
            projections::apply(&mut tx, projection, &schema, cancelled)
                .await
                .unwrap(),
            projections::apply(&mut tx, projection, &schema, confirmed)
                .await
                .unwrap(),
            projections::apply(&mut tx, projection, &schema, cancelled)
                .await
                .unwrap(),
            projections::apply(&mut tx, projection, &schema, placed)
                .await
                .unwrap(),
        ];
        tx.commit().await.unwrap();
        assert_eq!(
            answers,
            [
                Applied::Gap { expected: 2 },
                Applied::Applied,
                Applied::Applied,
                Applied::Duplicate
            ]
        );
        let clean = format!("clean_{projection}");
        w.build(projection, &clean).await;
        assert_eq!(
            w.dump(projection, &schema).await,
            w.dump(projection, &clean).await
        );
    }

    // An event of a stream the projection does not read is ignored.
    let catalog = w.dump(Projection::Catalog, "rm_catalog").await;
    let ignored = w.apply(Projection::Catalog, "rm_catalog", placed).await;
    assert_eq!(ignored, Applied::Ignored);
    assert_eq!(w.dump(Projection::Catalog, "rm_catalog").await, catalog);

    // Catching up from a checkpoint past an event the schema lacks is a
    // Gap error, and the batch it happened in is rolled back.
    w.create_schema(Projection::Orders, "late_orders").await;
    let from = placed.checkpoint();
    let error = projections::catch_up(&w.store, Projection::Orders, "late_orders", from)
        .await
        .unwrap_err();
    match error {
        ProjectionError::Gap {
            stream_id,
            expected,
            version,
        } => assert_eq!(
            (stream_id, expected, version),
            (format!("order-{order_id}"), 1, 2)
        ),
        other => panic!("expected a gap, got {other}"),
    }
    let dump = w.dump(Projection::Orders, "late_orders").await;
    assert_eq!(dump, json!({"orders": [], "stream_positions": []}));
}

#[tokio::test]
async fn skip_moves_the_position_past_an_event_without_changing_rows() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let order_id = w.place("c", &["A"], 2).await;
    w.confirm(order_id).await;
    let events = order_events(&w, order_id).await;
    let sales = Projection::Sales;
    assert_eq!(
        w.apply(sales, "rm_sales", &events[0]).await,
        Applied::Applied
    );

    let mut tx = w.db.pool.begin().await.unwrap();
    let skipped = projections::skip(&mut tx, sales, "rm_sales", &events[1])
        .await
        .unwrap();
    let again = projections::skip(&mut tx, sales, "rm_sales", &events[1])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((skipped, again), (Applied::Applied, Applied::Duplicate));
    // The confirmation was skipped: nothing counts, but the stream is at 2.
    assert_eq!(
        w.rows("rm_sales", "sales_days").await,
        Vec::<serde_json::Value>::new()
    );
    let positions = w.rows("rm_sales", "stream_positions").await;
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0]["version"], 2);
    assert_eq!(positions[0]["global_position"], events[1].global_position);
    assert_eq!(
        w.apply(sales, "rm_sales", &events[1]).await,
        Applied::Duplicate
    );
}

#[tokio::test]
async fn has_position_means_the_event_and_every_earlier_one_of_its_stream_are_applied() {
    let w = World::new().await;
    let orders = Projection::Orders;
    let pool = &w.db.pool;
    let defined = {
        w.define("A", 250, "EUR").await;
        w.stream("product-A").await[0].global_position
    };
    let first = w.place("c", &["A"], 1).await;
    let second = w.place("c", &["A"], 2).await;
    w.confirm(first).await;
    let first_events = order_events(&w, first).await;
    let second_events = order_events(&w, second).await;
    let (p1, p2) = (
        first_events[0].global_position,
        first_events[1].global_position,
    );
    let q1 = second_events[0].global_position;
    assert!(p1 < q1 && q1 < p2);

    let has = |position| has_position(pool, orders, "rm_orders", position);
    assert!(!has(p1).await.unwrap(), "nothing applied yet");
    assert_eq!(position(pool, "rm_orders").await.unwrap(), 0);

    // The later stream first: it has its own event, not the earlier
    // position of another stream, although the read model's position is past it.
    w.apply(orders, "rm_orders", &second_events[0]).await;
    assert!(has(q1).await.unwrap());
    assert!(!has(p1).await.unwrap());
    assert_eq!(position(pool, "rm_orders").await.unwrap(), q1);

    w.apply(orders, "rm_orders", &first_events[0]).await;
    assert!(has(p1).await.unwrap());
    assert!(
        !has(p2).await.unwrap(),
        "the confirmation is not applied yet"
    );
    w.apply(orders, "rm_orders", &first_events[1]).await;
    assert!(has(p1).await.unwrap() && has(p2).await.unwrap() && has(q1).await.unwrap());
    assert_eq!(position(pool, "rm_orders").await.unwrap(), p2);

    // A stream type the projection does not consume can never change it.
    assert!(has(defined).await.unwrap());
    assert!(
        !has_position(pool, Projection::Catalog, "rm_catalog", defined)
            .await
            .unwrap()
    );
    let payment = PaymentEvent::PaymentDeclined {
        order_id: first,
        reason: "no".into(),
    };
    let declined = w
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
    for projection in Projection::ALL {
        let schema = projection.live_schema();
        assert!(has_position(pool, projection, &schema, declined)
            .await
            .unwrap());
    }

    // Before the first event; and positions no committed event has.
    assert!(has(0).await.unwrap());
    assert!(!has(declined + 1000).await.unwrap());
    let mut tx = pool.begin().await.unwrap();
    let data = json!({"order_id": Uuid::new_v4()});
    let pending = append_in(
        &mut tx,
        &format!("order-{}", Uuid::new_v4()),
        ExpectedVersion::NoStream,
        &[NewEvent::new("OrderConfirmed", 1, data)],
        &json!({}),
    )
    .await
    .unwrap()
    .position;
    assert!(!has(pending).await.unwrap(), "not committed");
    tx.rollback().await.unwrap();
    assert!(!has(pending).await.unwrap(), "rolled back");
    // The events of a catalog stream are, for the catalog, like any other.
    w.catch_up(Projection::Catalog).await;
    assert!(
        has_position(pool, Projection::Catalog, "rm_catalog", defined)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_batch_is_applied_already_only_when_all_its_streams_are_and_the_projection_runs() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let order_id = w.place("c", &["A"], 2).await;
    w.confirm(order_id).await;
    let events = order_events(&w, order_id).await;
    let [placed, confirmed] = &events[..] else {
        panic!("two order events, got {}", events.len());
    };
    let (orders, schema) = (Projection::Orders, Projection::Orders.live_schema());
    let pool = &w.db.pool;
    async fn applied_already(pool: &sqlx::PgPool, batch: Vec<&RecordedEvent>) -> bool {
        projections::applied_already(pool, Projection::Orders, &batch)
            .await
            .unwrap()
    }
    let applied = |batch| applied_already(pool, batch);

    // Nothing applied yet: no batch with an order event is.
    assert!(!applied(vec![placed]).await);
    // Once the first event is, a batch of it is, but not one with the next.
    assert_eq!(w.apply(orders, &schema, placed).await, Applied::Applied);
    assert!(applied(vec![placed]).await);
    assert!(!applied(vec![placed, confirmed]).await);
    assert_eq!(w.apply(orders, &schema, confirmed).await, Applied::Applied);
    assert!(applied(vec![confirmed, placed]).await);
    // Events of streams it does not read never need applying.
    let product = w.stream("product-A").await;
    assert!(!product.is_empty());
    assert!(applied(product.iter().collect()).await);

    // While a rebuild runs, nothing counts as applied: the fresh tables it
    // swaps in may lack what the live ones have.
    sqlx::query("UPDATE projection_status SET status = 'rebuilding' WHERE name = $1")
        .bind(orders.name())
        .execute(pool)
        .await
        .unwrap();
    assert!(!applied(vec![placed]).await);
}
