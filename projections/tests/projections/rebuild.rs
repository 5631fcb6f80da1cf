//! Rebuilds: a fresh build swapped in for the live tables, one at a time
//! per projection, losing nothing that is written meanwhile, and leaving
//! everything as it was when it fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use domain::CancelReason;
use eventstore::{EventStore, ExpectedVersion, NewEvent};
use projections::read::{self, OrderFilter};
use projections::status::{self, Status};
use projections::{Progress, Projection, ProjectionError, Rebuild, RebuildError, RebuildReport};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::given::{assert_same, World};
use crate::history::History;

/// The four live schemas, and nothing left over from a rebuild.
const LIVE: [&str; 4] = ["rm_catalog", "rm_inventory", "rm_orders", "rm_sales"];

/// Claims (as soon as it is free) and runs a rebuild of `projection`.
async fn rebuild(store: &EventStore, projection: Projection) -> RebuildReport {
    let rebuild = start_when_free(store, projection).await;
    rebuild.run(|_| {}).await.unwrap()
}

/// Whether starting a rebuild of `projection` now answers Busy.
async fn busy(store: &EventStore, projection: Projection) -> bool {
    match Rebuild::start(store, projection).await {
        Err(RebuildError::Busy(p)) => {
            assert_eq!(p, projection);
            true
        }
        Err(other) => panic!("{other}"),
        Ok(_) => false,
    }
}

/// Starts a rebuild of `projection` as soon as no other holds its lock
/// (within 5 s).
async fn start_when_free(store: &EventStore, projection: Projection) -> Rebuild {
    for _ in 0..500 {
        match Rebuild::start(store, projection).await {
            Ok(rebuild) => return rebuild,
            Err(RebuildError::Busy(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("{other}"),
        }
    }
    panic!("the {projection} rebuild lock was not released within 5 s");
}

#[tokio::test]
async fn a_rebuild_replaces_the_live_tables_with_a_clean_build_of_the_store() {
    let w = World::new().await;
    let mut history = History::new(30, 3);
    history.generate(&w.store, 60, 20).await.unwrap();
    let events = w.events().await;
    let last = events.last().unwrap().checkpoint();
    let head = events.iter().map(|e| e.global_position).max().unwrap();
    for projection in Projection::ALL {
        w.catch_up(projection).await;
    }
    // Damage every live schema: the rebuild must not start from it.
    for damage in [
        "UPDATE rm_orders.orders SET status = 'placed', total = 0",
        "DELETE FROM rm_inventory.inventory WHERE sku < 'SKU-00010'",
        "UPDATE rm_catalog.products SET unit_price = 1",
        "UPDATE rm_sales.sales_days SET revenue = revenue + 1",
        "DELETE FROM rm_sales.stream_positions",
    ] {
        sqlx::query(damage).execute(&w.db.pool).await.unwrap();
    }

    for projection in Projection::ALL {
        let Ok(rebuild) = Rebuild::start(&w.store, projection).await else {
            panic!("the {projection} rebuild could not start");
        };
        assert_eq!(rebuild.projection(), projection);
        assert_eq!(
            status::status(&w.db.pool, projection).await.unwrap(),
            Status::Rebuilding
        );
        assert_eq!(w.info(projection).await.status, Status::Rebuilding);
        let mut seen: Vec<Progress> = Vec::new();
        let report = rebuild.run(|p| seen.push(p)).await.unwrap();
        assert_eq!(report.events, events.len() as u64, "{projection}");
        assert_eq!(report.checkpoint, last, "{projection}");
        let end = seen.last().copied().unwrap();
        assert_eq!(
            (end.events, end.position, end.head),
            (events.len() as u64, last.position, head)
        );
        assert!(seen.windows(2).all(|p| p[0].events < p[1].events));

        let info = w.info(projection).await;
        assert_eq!(
            (info.status, info.lag),
            (Status::Running, 0),
            "{projection}"
        );
        let clean = format!("clean_{projection}");
        w.build(projection, &clean).await;
        assert_same(
            &w.dump(projection, &projection.live_schema()).await,
            &w.dump(projection, &clean).await,
            projection.name(),
        );
        sqlx::query(&format!("DROP SCHEMA {clean} CASCADE"))
            .execute(&w.db.pool)
            .await
            .unwrap();
    }
    assert_eq!(w.schemas().await, LIVE);
}

#[tokio::test]
async fn a_second_rebuild_of_a_projection_is_busy_until_the_first_ends() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let order_id = w.place("c", &["A"], 2).await;
    w.confirm(order_id).await;
    w.settle().await;
    let pool = &w.db.pool;

    let Ok(first) = Rebuild::start(&w.store, Projection::Orders).await else {
        panic!("the first rebuild could not start");
    };
    assert!(busy(&w.store, Projection::Orders).await);
    // Also from another pool, as another process would try.
    let other = PgPoolOptions::new()
        .max_connections(2)
        .connect(&w.db.url)
        .await
        .unwrap();
    let other = EventStore::new(other);
    assert!(busy(&other, Projection::Orders).await);
    // Other projections are not held up.
    let Ok(sales) = Rebuild::start(&other, Projection::Sales).await else {
        panic!("the sales rebuild could not start");
    };
    for projection in [Projection::Orders, Projection::Sales] {
        assert_eq!(
            status::status(pool, projection).await.unwrap(),
            Status::Rebuilding
        );
    }
    assert_eq!(
        status::status(pool, Projection::Catalog).await.unwrap(),
        Status::Running
    );

    first.run(|_| {}).await.unwrap();
    assert_eq!(
        status::status(pool, Projection::Orders).await.unwrap(),
        Status::Running
    );
    assert!(busy(&w.store, Projection::Sales).await);
    sales.run(|_| {}).await.unwrap();
    assert_eq!(
        status::status(pool, Projection::Sales).await.unwrap(),
        Status::Running
    );

    // Once a rebuild has ended its lock is free again (the lock's
    // connection is closed on drop, which the server notices a moment later).
    let again = start_when_free(&w.store, Projection::Orders).await;
    // A rebuild that dies without running leaves `rebuilding` behind; the
    // next one takes over and restores `running`.
    drop(again);
    assert_eq!(
        status::status(pool, Projection::Orders).await.unwrap(),
        Status::Rebuilding
    );
    let takeover = start_when_free(&w.store, Projection::Orders).await;
    takeover.run(|_| {}).await.unwrap();
    assert_eq!(
        status::status(pool, Projection::Orders).await.unwrap(),
        Status::Running
    );
    assert_eq!(w.schemas().await, LIVE);
    let row = w.order_row(order_id).await;
    assert_eq!(
        (row["status"].as_str(), row["version"].as_i64()),
        (Some("confirmed"), Some(2))
    );
}

/// Commands through the handler until `stop`: orders down every path,
/// receipts, new products and price changes. Counts the rounds done.
async fn write(w: Arc<World>, stop: Arc<AtomicBool>, rounds: Arc<AtomicUsize>) {
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let sku = format!("SKU-{:05}", i % 40);
        let order_id = w.place(&format!("writer-{}", i % 7), &[&sku], 1).await;
        match i % 4 {
            0 => {
                w.confirm(order_id).await;
            }
            1 => {
                w.confirm(order_id).await;
                w.cancel(order_id, CancelReason::CustomerCancelled).await;
            }
            2 => {
                w.confirm(order_id).await;
                w.ship(order_id).await;
            }
            _ => {
                w.cancel(order_id, CancelReason::OutOfStock).await;
            }
        }
        w.receive(&sku, 5).await;
        if i.is_multiple_of(3) {
            w.change_price(&sku, 100 + i as i64).await;
        }
        if i.is_multiple_of(5) {
            w.define(&format!("NEW-{i}"), 500, "EUR").await;
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads the live schemas with the API's queries until `stop`; every read
/// must succeed and see what was there before the rebuilds began. Answers
/// the number of rounds read and every failure.
async fn read_live(
    pool: PgPool,
    known: Uuid,
    known_position: i64,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut rounds = 0;
    let mut failures = Vec::new();
    let page = OrderFilter {
        limit: 20,
        ..OrderFilter::default()
    };
    while !stop.load(Ordering::SeqCst) {
        match read::order(&pool, "rm_orders", known).await {
            Ok(Some(_)) => {}
            other => failures.push(format!("order: {other:?}")),
        }
        match read::orders(&pool, "rm_orders", &page).await {
            Ok(page) if page.items.len() == 20 => {}
            other => failures.push(format!("orders: {other:?}")),
        }
        match read::stock(&pool, "rm_inventory", "SKU-00001").await {
            Ok(Some(_)) => {}
            other => failures.push(format!("stock: {other:?}")),
        }
        match read::products(&pool, "rm_catalog").await {
            Ok(products) if products.len() >= 40 => {}
            other => failures.push(format!("products: {other:?}")),
        }
        match read::sales_days(&pool, "rm_sales", None, None).await {
            Ok(days) if !days.is_empty() => {}
            other => failures.push(format!("sales: {other:?}")),
        }
        let has = projections::has_position(&pool, Projection::Orders, "rm_orders", known_position);
        match has.await {
            Ok(true) => {}
            other => failures.push(format!("has_position: {other:?}")),
        }
        match projections::position(&pool, "rm_orders").await {
            Ok(p) if p >= known_position => {}
            other => failures.push(format!("position: {other:?}")),
        }
        if let Err(e) = status::list(&pool).await {
            failures.push(format!("list: {e}"));
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (rounds, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_writes_arrive_loses_nothing_and_queries_never_fail() {
    let w = World::new().await;
    let mut history = History::new(40, 5);
    history.generate(&w.store, 300, 50).await.unwrap();
    for projection in Projection::ALL {
        w.catch_up(projection).await;
    }
    let (known, known_position): (Uuid, i64) =
        sqlx::query_as("SELECT order_id, seq FROM rm_orders.orders ORDER BY seq LIMIT 1")
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    let connect = |size| {
        PgPoolOptions::new()
            .max_connections(size)
            .connect(&w.db.url)
    };
    let rebuilds = EventStore::new(connect(10).await.unwrap());
    let readers = connect(2).await.unwrap();

    let w = Arc::new(w);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write(w.clone(), stop.clone(), rounds.clone()));
    let reader = tokio::spawn(read_live(readers, known, known_position, stop.clone()));
    while rounds.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // All four at once, then one after another.
    let before = rounds.load(Ordering::SeqCst);
    let reports = futures::future::join_all(Projection::ALL.map(|p| rebuild(&rebuilds, p))).await;
    let mut last = Vec::new();
    for (projection, report) in Projection::ALL.into_iter().zip(reports) {
        assert!(report.events > 0);
        let again = rebuild(&rebuilds, projection).await;
        assert!(again.checkpoint >= report.checkpoint);
        last.push((projection, again));
    }
    let during = rounds.load(Ordering::SeqCst) - before;
    let target = rounds.load(Ordering::SeqCst) + 2;
    while rounds.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let (reads, failures) = reader.await.unwrap();
    assert!(during > 0, "no write went on during the rebuilds");
    assert!(reads > 0, "the reader never read");
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "reads failed during the rebuilds"
    );

    // Catching the swapped-in tables up from the rebuild's checkpoint gives
    // exactly a clean fold of the final store: nothing written before,
    // during or after the swap was lost.
    w.settle().await;
    for (projection, report) in last {
        let live = projection.live_schema();
        projections::catch_up(&w.store, projection, &live, report.checkpoint)
            .await
            .unwrap();
        let clean = format!("clean_{projection}");
        w.build(projection, &clean).await;
        assert_same(
            &w.dump(projection, &live).await,
            &w.dump(projection, &clean).await,
            projection.name(),
        );
        assert_eq!(w.info(projection).await.lag, 0);
    }
}

#[tokio::test]
async fn a_failed_rebuild_leaves_the_live_tables_and_the_status_as_they_were() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    w.receive("A", 10).await;
    let order_id = w.place("c", &["A"], 2).await;
    w.confirm(order_id).await;
    for projection in Projection::ALL {
        w.catch_up(projection).await;
    }
    let mut conn = w.db.pool.acquire().await.unwrap();
    status::set_status(&mut conn, Projection::Sales, Status::Halted, None)
        .await
        .unwrap();
    drop(conn);
    let mut before = Vec::new();
    for projection in Projection::ALL {
        before.push(w.dump(projection, &projection.live_schema()).await);
    }

    let poison = format!("order-{}", Uuid::new_v4());
    let appended = w
        .store
        .append(
            &poison,
            ExpectedVersion::NoStream,
            &[NewEvent::new("OrderPlaced", 1, json!({"nonsense": true}))],
            &json!({}),
        )
        .await
        .unwrap();
    w.settle().await;

    for projection in [Projection::Orders, Projection::Sales] {
        let Ok(rebuild) = Rebuild::start(&w.store, projection).await else {
            panic!("the {projection} rebuild could not start");
        };
        match rebuild.run(|_| {}).await {
            Err(RebuildError::Projection(ProjectionError::Decode {
                stream_id,
                version,
                position,
                ..
            })) => assert_eq!(
                (stream_id, version, position),
                (poison.clone(), 1, appended.position)
            ),
            Err(other) => panic!("{projection}: expected a decode error, got {other}"),
            Ok(report) => panic!("{projection}: the rebuild succeeded: {report:?}"),
        }
    }
    for (projection, dump) in Projection::ALL.into_iter().zip(&before) {
        let now = w.dump(projection, &projection.live_schema()).await;
        assert_eq!(&now, dump, "{projection}: live tables changed");
    }
    assert_eq!(w.schemas().await, LIVE, "the rebuild schemas are dropped");
    for (projection, previous) in [
        (Projection::Orders, Status::Running),
        (Projection::Sales, Status::Halted),
    ] {
        let info = w.info(projection).await;
        assert_eq!(info.status, previous, "{projection}");
        let error = info.last_error.unwrap_or_default();
        assert!(
            error.starts_with("rebuild failed") && error.contains(&poison),
            "{projection}: last_error {error:?}"
        );
    }

    // The inventory reads no order stream: its rebuild succeeds and makes
    // the same rows the live path made.
    rebuild(&w.store, Projection::Inventory).await;
    let now = w.dump(Projection::Inventory, "rm_inventory").await;
    assert_same(&now, &before[1], "inventory");
    assert_eq!(w.info(Projection::Inventory).await.status, Status::Running);
}
