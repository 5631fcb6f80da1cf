//! The local feed (`projections::local`): a process's own writes reach its
//! read models at once, a stream's earlier events always first, and the
//! projectors' copies are then duplicates.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use api::auth::Role;
use eventstore::testing::eventually;
use fulcrum_tests::{order_body, token, TestApp};
use projections::status::{self, Status};
use projections::worker::ProjectorProbe;
use projections::{local, Projection};
use serde_json::{json, Value};
use uuid::Uuid;

async fn place(app: &TestApp, sku: &str) -> Uuid {
    let response = app
        .post(
            "/api/v1/orders",
            Some(&token("alice", Role::Customer)),
            &order_body(sku, 1),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["order_id"].as_str().unwrap().parse().unwrap()
}

async fn cancel(app: &TestApp, order: Uuid) {
    let path = format!("/api/v1/orders/{order}/cancel");
    let response = app
        .post(&path, Some(&token("alice", Role::Customer)), &json!({}))
        .await;
    assert_eq!(response.status(), 202);
}

/// The order's status in the orders read model, if it has the order.
async fn status_of(app: &TestApp, order: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM rm_orders.orders WHERE order_id = $1")
        .bind(order)
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
}

/// The local feed for the orders projection, from the store's head.
struct Feed {
    probe: Arc<ProjectorProbe>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    async fn start(app: &TestApp) -> Feed {
        let probe = Arc::new(ProjectorProbe::default());
        let head = eventstore::head_position(&app.db.pool).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(local::run_after(
            app.state.store.clone(),
            vec![(Projection::Orders, probe.clone())],
            head,
            async move {
                let _ = stopped.await;
            },
        ));
        Feed { probe, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn an_order_placed_through_the_process_is_in_its_read_model_with_no_projector_running() {
    let app = TestApp::spawn().await;
    app.given_product("L-1", 100, 10).await;
    let feed = Feed::start(&app).await;

    let order = place(&app, "L-1").await;

    // The feed counts its events just after its commit, which the read
    // model shows first: wait for both.
    eventually(
        Duration::from_secs(10),
        "the order in its read model, applied by the feed",
        || async {
            status_of(&app, order).await.as_deref() == Some("placed")
                && feed.probe.applied.get() >= 1
        },
    )
    .await;
    assert_eq!(feed.probe.applied.get(), 1);
    feed.stop().await;
    // What the projectors then apply changes nothing: every copy is a
    // duplicate, and the read model has the store's head.
    app.project().await;
    assert_eq!(status_of(&app, order).await.as_deref(), Some("placed"));
    let placed = eventstore::read_stream(&app.db.pool, &format!("order-{order}"), 1, 1)
        .await
        .unwrap();
    let schema = Projection::Orders.live_schema();
    let has = projections::has_position(
        &app.db.pool,
        Projection::Orders,
        &schema,
        placed[0].global_position,
    );
    assert!(has.await.unwrap());
}

#[tokio::test]
async fn the_feed_applies_a_streams_earlier_events_first_and_each_once() {
    let app = TestApp::spawn().await;
    app.given_product("L-2", 100, 10).await;
    let order = place(&app, "L-2").await;
    cancel(&app, order).await;
    let stream = eventstore::read_stream(&app.db.pool, &format!("order-{order}"), 1, 10)
        .await
        .unwrap();
    assert_eq!(stream.len(), 2);
    let probe = ProjectorProbe::default();
    let store = &app.state.store;

    // The cancellation alone: the placement before it is read from the
    // store and applied first, as a projector fills a gap.
    let applied = local::feed(store, Projection::Orders, &stream[1..], &probe).await;
    assert_eq!(applied.unwrap(), 1);
    assert_eq!(status_of(&app, order).await.as_deref(), Some("cancelled"));
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM rm_orders.stream_positions WHERE stream_id = $1")
            .bind(format!("order-{order}"))
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(version, 2);

    // Again: duplicates, nothing changes.
    let applied = local::feed(store, Projection::Orders, &stream, &probe).await;
    assert_eq!(applied.unwrap(), 0);
    assert_eq!(probe.applied.get(), 1);
}

#[tokio::test]
async fn the_feed_leaves_a_projection_that_is_not_running_alone() {
    let app = TestApp::spawn().await;
    app.given_product("L-3", 100, 10).await;
    let order = place(&app, "L-3").await;
    let stream = eventstore::read_stream(&app.db.pool, &format!("order-{order}"), 1, 10)
        .await
        .unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    status::set_status(
        &mut conn,
        Projection::Orders,
        Status::Halted,
        Some("a test"),
    )
    .await
    .unwrap();
    let probe = ProjectorProbe::default();

    let applied = local::feed(&app.state.store, Projection::Orders, &stream, &probe).await;

    assert_eq!(applied.unwrap(), 0);
    assert_eq!(status_of(&app, order).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_and_a_projector_applying_at_once_apply_each_event_once() {
    let app = TestApp::spawn().await;
    app.given_product("L-4", 100, 1000).await;
    let feed = Feed::start(&app).await;
    // Orders placed and some cancelled by many clients while a projector's
    // path (the whole store applied as batches, `LiveBatch`, as the Kafka
    // projectors do) runs beside the feed.
    let clients = (0..16).map(|i| {
        let app = &app;
        async move {
            let order = place(app, "L-4").await;
            if i % 2 == 0 {
                cancel(app, order).await;
            }
            order
        }
    });
    let projector = ProjectorProbe::default();
    let catching_up = async {
        for _ in 0..20 {
            let events = eventstore::read_all(&app.db.pool, eventstore::Checkpoint::START, 10_000)
                .await
                .unwrap();
            // A new stream claimed by the feed at the same moment rolls this
            // batch back (`Contended`); a projector applies it again.
            let _ = local::feed(&app.state.store, Projection::Orders, &events, &projector).await;
        }
    };
    let (orders, ()) = tokio::join!(futures::future::join_all(clients), catching_up);
    app.project().await;
    feed.stop().await;

    for (i, order) in orders.iter().enumerate() {
        let expected = if i % 2 == 0 { "cancelled" } else { "placed" };
        assert_eq!(status_of(&app, *order).await.as_deref(), Some(expected));
    }
    // Each stream's position is its last version: every event applied,
    // none skipped, whoever applied it.
    for (i, order) in orders.iter().enumerate() {
        let version: i64 = sqlx::query_scalar(
            "SELECT version FROM rm_orders.stream_positions WHERE stream_id = $1",
        )
        .bind(format!("order-{order}"))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(version, if i % 2 == 0 { 2 } else { 1 });
    }
}

#[tokio::test]
async fn an_event_that_does_not_fit_one_projection_leaves_the_others_fed() {
    let app = TestApp::spawn().await;
    app.given_product("L-5", 100, 10).await;
    // Given the feed for two projections of the order streams, which a
    // round feeds in one transaction,
    let (orders, sales) = (Arc::default(), Arc::<ProjectorProbe>::default());
    let head = eventstore::head_position(&app.db.pool).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let feed = tokio::spawn(local::run_after(
        app.state.store.clone(),
        vec![
            (Projection::Orders, Arc::clone(&orders)),
            (Projection::Sales, Arc::clone(&sales)),
        ],
        head,
        async move {
            let _ = stopped.await;
        },
    ));
    let order = place(&app, "L-5").await;
    eventually(
        Duration::from_secs(10),
        "the placement fed to both",
        || async { orders.applied.get() == 1 && sales.applied.get() == 1 },
    )
    .await;
    // when the order's row goes missing from one (its position stays, so
    // the cancellation no longer fits there),
    sqlx::query("DELETE FROM rm_orders.orders WHERE order_id = $1")
        .bind(order)
        .execute(&app.db.pool)
        .await
        .unwrap();
    cancel(&app, order).await;

    // then the other projection still gets the cancellation, and the one it
    // does not fit is left to its projector.
    eventually(
        Duration::from_secs(10),
        "the cancellation fed to sales",
        || async { sales.applied.get() == 2 },
    )
    .await;
    assert_eq!(orders.applied.get(), 1);
    assert_eq!(status_of(&app, order).await, None);
    let _ = stop.send(());
    feed.await.unwrap();
}

#[tokio::test]
async fn an_append_that_commits_after_a_later_one_was_fed_is_still_fed() {
    let app = TestApp::spawn().await;
    app.given_product("L-6", 100, 10).await;
    let feed = Feed::start(&app).await;
    let first = place(&app, "L-6").await;
    eventually(Duration::from_secs(10), "the first order fed", || async {
        status_of(&app, first).await.as_deref() == Some("placed")
    })
    .await;
    // Given an order placed in a transaction that takes its position now
    // and commits later (the first order's placement, under a new id),
    let stream = format!("order-{first}");
    let placed = eventstore::read_stream(&app.db.pool, &stream, 1, 1)
        .await
        .unwrap();
    let late = Uuid::new_v4();
    let mut data = placed[0].data.clone();
    data["order_id"] = json!(late);
    let event = eventstore::NewEvent::new(&placed[0].event_type, placed[0].schema_version, data);
    let mut tx = app.db.pool.begin().await.unwrap();
    eventstore::append_in(
        &mut tx,
        &format!("order-{late}"),
        eventstore::ExpectedVersion::NoStream,
        &[event],
        &json!({}),
    )
    .await
    .unwrap();
    // when an order placed after it, with a higher position, is fed first
    let second = place(&app, "L-6").await;
    eventually(Duration::from_secs(10), "the second order fed", || async {
        status_of(&app, second).await.as_deref() == Some("placed")
    })
    .await;
    // and the late transaction then commits,
    tx.commit().await.unwrap();
    app.state.store.committed();

    // then the feed applies it too: it looked for the position it read past.
    eventually(Duration::from_secs(10), "the late order fed", || async {
        status_of(&app, late).await.as_deref() == Some("placed")
    })
    .await;
    feed.stop().await;
}
