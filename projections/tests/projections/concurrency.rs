//! `apply`, and the projectors' `LiveBatch`, are idempotent by (stream id,
//! version) even when many appliers deliver the same events at once, in
//! different interleavings, with redeliveries and rolled-back transactions:
//! the rows equal one clean fold.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use domain::CancelReason;
use eventstore::RecordedEvent;
use projections::read::{self, SalesDay};
use projections::{Applied, LiveBatch, Projection, ProjectionError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::given::{assert_same, World};
use crate::history::History;

const TASKS: usize = 16;

/// A pool with a connection for every task.
async fn pool(w: &World) -> PgPool {
    PgPoolOptions::new()
        .max_connections(TASKS as u32 + 1)
        .connect(&w.db.url)
        .await
        .unwrap()
}

/// The events `projection` consumes, per stream, in version order.
fn streams(events: &[RecordedEvent], projection: Projection) -> Vec<Vec<RecordedEvent>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut streams: Vec<Vec<RecordedEvent>> = Vec::new();
    for event in events
        .iter()
        .filter(|e| projection.consumes(&e.stream_type))
    {
        let i = *index.entry(&event.stream_id).or_insert_with(|| {
            streams.push(Vec::new());
            streams.len() - 1
        });
        streams[i].push(event.clone());
    }
    streams
}

/// What one applier's answers were.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    applied: usize,
    duplicates: usize,
}

/// Delivers every stream's events in its own random interleaving of the
/// streams (each stream in version order), one to three events per
/// transaction; now and then redelivers an event within the transaction
/// that applied it, redelivers an older event later, or rolls a
/// transaction back (a crash before commit) and delivers it again.
async fn deliver(
    pool: PgPool,
    projection: Projection,
    schema: String,
    streams: Arc<Vec<Vec<RecordedEvent>>>,
    seed: u64,
    start: Arc<Barrier>,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next = vec![0usize; streams.len()];
    let mut open: Vec<usize> = (0..streams.len()).collect();
    let mut tally = Tally::default();
    start.wait().await;
    while !open.is_empty() {
        let k = rng.gen_range(0..open.len());
        let s = open[k];
        let stream = &streams[s];
        let n = rng.gen_range(1..=3).min(stream.len() - next[s]);
        let mut batch = Tally::default();
        let mut tx = pool.begin().await.unwrap();
        for event in &stream[next[s]..next[s] + n] {
            let answer = projections::apply(&mut tx, projection, &schema, event)
                .await
                .unwrap();
            match answer {
                Applied::Applied => batch.applied += 1,
                Applied::Duplicate => batch.duplicates += 1,
                other => panic!("{} v{}: {other:?}", event.stream_id, event.version),
            }
            if rng.gen_bool(0.1) {
                let again = projections::apply(&mut tx, projection, &schema, event)
                    .await
                    .unwrap();
                assert_eq!(again, Applied::Duplicate, "redelivered in its transaction");
            }
        }
        if rng.gen_bool(0.1) {
            tx.rollback().await.unwrap();
            continue;
        }
        tx.commit().await.unwrap();
        tally.applied += batch.applied;
        tally.duplicates += batch.duplicates;
        next[s] += n;
        if rng.gen_bool(0.2) {
            let event = &stream[rng.gen_range(0..next[s])];
            let mut tx = pool.begin().await.unwrap();
            let again = projections::apply(&mut tx, projection, &schema, event)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(again, Applied::Duplicate, "redelivered later");
        }
        if next[s] == stream.len() {
            open.swap_remove(k);
        }
    }
    tally
}

/// Awaits every applier and checks that each of the `consumed` events was
/// applied exactly once, whoever applied it, and was a duplicate for every
/// other applier.
async fn applied_once(
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    consumed: usize,
    projection: Projection,
) {
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.unwrap();
        total.applied += tally.applied;
        total.duplicates += tally.duplicates;
    }
    assert_eq!(total.applied, consumed, "{projection}: events applied");
    assert_eq!(
        total.duplicates,
        consumed * (TASKS - 1),
        "{projection}: duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_appliers_delivering_the_same_history_leave_one_clean_fold() {
    let w = World::new().await;
    let mut history = History::new(20, 11);
    history.generate(&w.store, 40, 10).await.unwrap();
    let events = w.events().await;
    let pool = pool(&w).await;
    for projection in Projection::ALL {
        let clean = format!("clean_{projection}");
        w.build(projection, &clean).await;
        let schema = format!("concurrent_{projection}");
        w.create_schema(projection, &schema).await;

        let streams = Arc::new(streams(&events, projection));
        let consumed: usize = streams.iter().map(Vec::len).sum();
        let start = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(deliver(
                    pool.clone(),
                    projection,
                    schema.clone(),
                    streams.clone(),
                    i as u64,
                    start.clone(),
                ))
            })
            .collect();
        applied_once(tasks, consumed, projection).await;
        assert_same(
            &w.dump(projection, &schema).await,
            &w.dump(projection, &clean).await,
            projection.name(),
        );
    }
}

/// The expected sales figures: `(day, orders, revenue)` per confirmation,
/// summed per day, days with no order left out.
fn figures(confirmations: &[(NaiveDate, i64, i64)]) -> Vec<SalesDay> {
    let mut days: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
    for (day, orders, revenue) in confirmations {
        let figures = days.entry(*day).or_default();
        figures.0 += orders;
        figures.1 += revenue;
    }
    days.into_iter()
        .filter(|(_, (orders, _))| *orders != 0)
        .map(|(day, (orders, revenue))| SalesDay {
            day,
            orders,
            revenue,
            currency: "EUR".into(),
        })
        .collect()
}

/// Sixteen tasks apply every one of `events` (each task in its own order,
/// each event in a transaction that lingers a moment) to the live orders
/// and sales schemas; answers how often each event was applied.
async fn all_at_once(pool: &PgPool, events: &[RecordedEvent]) -> HashMap<Uuid, usize> {
    let start = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (pool, start) = (pool.clone(), start.clone());
            let mut events = events.to_vec();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + i as u64);
                events.shuffle(&mut rng);
                let mut applied = Vec::new();
                start.wait().await;
                for event in &events {
                    let mut tx = pool.begin().await.unwrap();
                    let mut answers = Vec::new();
                    for projection in [Projection::Sales, Projection::Orders] {
                        let schema = projection.live_schema();
                        let answer = projections::apply(&mut tx, projection, &schema, event)
                            .await
                            .unwrap();
                        answers.push(answer);
                    }
                    let pause = rng.gen_range(0..3);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    tx.commit().await.unwrap();
                    match answers[..] {
                        [Applied::Applied, Applied::Applied] => applied.push(event.event_id),
                        [Applied::Duplicate, Applied::Duplicate] => {}
                        _ => panic!("{}: {answers:?}", event.stream_id),
                    }
                }
                applied
            })
        })
        .collect();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_or_cancellation_applied_by_sixteen_tasks_at_once_counts_once() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    let mut orders = Vec::new();
    for quantity in 1..=8 {
        let order_id = w.place("c", &["A"], quantity).await;
        w.confirm(order_id).await;
        orders.push(order_id);
    }
    let events = w.events().await;
    let of_type = |events: &[RecordedEvent], t: &str| -> Vec<RecordedEvent> {
        events
            .iter()
            .filter(|e| e.event_type == t)
            .cloned()
            .collect()
    };
    for event in of_type(&events, "OrderPlaced") {
        for projection in [Projection::Sales, Projection::Orders] {
            let applied = w.apply(projection, &projection.live_schema(), &event).await;
            assert_eq!(applied, Applied::Applied);
        }
    }
    let pool = pool(&w).await;

    let confirmations = of_type(&events, "OrderConfirmed");
    let counts = all_at_once(&pool, &confirmations).await;
    assert_eq!(counts.len(), 8, "every confirmation applied");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let mut want = Vec::new();
    for (event, quantity) in confirmations.iter().zip(1..) {
        want.push((event.recorded_at.date_naive(), 1, 250 * quantity));
    }
    let days = read::sales_days(&w.db.pool, "rm_sales", None, None)
        .await
        .unwrap();
    assert_eq!(days, figures(&want));
    let sum: (i64, i64) = days
        .iter()
        .fold((0, 0), |s, d| (s.0 + d.orders, s.1 + d.revenue));
    assert_eq!(sum, (8, 250 * 36));
    for order_id in &orders {
        let row = w.order_row(*order_id).await;
        assert_eq!(
            (row["status"].as_str(), row["version"].as_i64()),
            (Some("confirmed"), Some(2))
        );
    }

    for order_id in &orders {
        w.cancel(*order_id, CancelReason::CustomerCancelled).await;
    }
    let events = w.events().await;
    let cancellations = of_type(&events, "OrderCancelled");
    let counts = all_at_once(&pool, &cancellations).await;
    assert_eq!(counts.len(), 8, "every cancellation applied");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let days = read::sales_days(&w.db.pool, "rm_sales", None, None)
        .await
        .unwrap();
    assert_eq!(days, []);
    let raw: Vec<(i64, i64)> = sqlx::query_as("SELECT orders, revenue FROM rm_sales.sales_days")
        .fetch_all(&w.db.pool)
        .await
        .unwrap();
    assert!(
        !raw.is_empty() && raw.iter().all(|r| *r == (0, 0)),
        "{raw:?}"
    );
    for order_id in &orders {
        let row = w.order_row(*order_id).await;
        assert_eq!(
            (
                row["status"].as_str(),
                row["cancel_reason"].as_str(),
                row["version"].as_i64()
            ),
            (Some("cancelled"), Some("customer_cancelled"), Some(3))
        );
    }
}

/// Whether `error` says "roll back and try again": another applier claimed
/// a new stream first, or Postgres broke a deadlock between two appliers.
fn retryable(error: &ProjectionError) -> bool {
    match error {
        ProjectionError::Contended => true,
        ProjectionError::Database(sqlx::Error::Database(e)) => {
            matches!(e.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// Delivers all of `events` in global order, in batches of 1 to 40 events
/// applied with [`LiveBatch`] (as a projector does), retrying a batch that
/// lost a race; answers the tally of the committed batches.
async fn deliver_batches(
    pool: PgPool,
    projection: Projection,
    schema: String,
    events: Arc<Vec<RecordedEvent>>,
    seed: u64,
    start: Arc<Barrier>,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut at = 0;
    start.wait().await;
    while at < events.len() {
        let n = rng.gen_range(1..=40).min(events.len() - at);
        let batch = &events[at..at + n];
        let attempt = async {
            let mut tx = pool.begin().await?;
            let ids = batch.iter().map(|e| e.stream_id.as_str());
            let mut live = LiveBatch::begin(&mut tx, projection, &schema, ids).await?;
            let mut answers = Tally::default();
            for event in batch {
                match live.apply(&mut tx, event).await? {
                    Applied::Applied => answers.applied += 1,
                    Applied::Duplicate => answers.duplicates += 1,
                    Applied::Ignored => {}
                    other => panic!("{} v{}: {other:?}", event.stream_id, event.version),
                }
            }
            live.finish(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, ProjectionError>(answers)
        };
        match attempt.await {
            Ok(answers) => {
                tally.applied += answers.applied;
                tally.duplicates += answers.duplicates;
                at += n;
            }
            Err(error) if retryable(&error) => {}
            Err(error) => panic!("{projection}: {error}"),
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_projectors_applying_the_same_batches_leave_one_clean_fold() {
    let w = World::new().await;
    let mut history = History::new(20, 17);
    history.generate(&w.store, 40, 10).await.unwrap();
    let events = Arc::new(w.events().await);
    let pool = pool(&w).await;
    for projection in Projection::ALL {
        let clean = format!("clean_{projection}");
        w.build(projection, &clean).await;
        let schema = format!("batched_{projection}");
        w.create_schema(projection, &schema).await;
        let consumed = events
            .iter()
            .filter(|e| projection.consumes(&e.stream_type))
            .count();

        let start = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(deliver_batches(
                    pool.clone(),
                    projection,
                    schema.clone(),
                    events.clone(),
                    1000 + i as u64,
                    start.clone(),
                ))
            })
            .collect();
        applied_once(tasks, consumed, projection).await;
        assert_same(
            &w.dump(projection, &schema).await,
            &w.dump(projection, &clean).await,
            projection.name(),
        );
    }
}

/// A day's revenue that would overflow is refused for the event that
/// overflows it (the projector dead-letters it) and changes nothing, within
/// one batch and across batches; it neither wraps nor fails the batch in
/// the database on every retry.
#[tokio::test]
async fn a_sale_that_would_overflow_its_days_revenue_is_refused_and_changes_nothing() {
    let w = World::new().await;
    let huge = i64::MAX / 2 + 1;
    w.define("BIG", huge, "EUR").await;
    w.receive("BIG", 10).await;
    let mut confirms = Vec::new();
    for customer in ["a", "b", "c"] {
        let order = w.place(customer, &["BIG"], 1).await;
        w.confirm(order).await;
        confirms.push(order);
    }
    let events = w.events().await;
    let schema = "sales_overflow";
    w.create_schema(Projection::Sales, schema).await;
    let confirmed_of = |order: Uuid| {
        events
            .iter()
            .position(|e| {
                e.stream_id == format!("order-{order}") && e.event_type == "OrderConfirmed"
            })
            .unwrap()
    };
    // In three batches (up to the first confirmation; up to the second,
    // which overflows the stored day; the rest, in which the third does
    // too), and all in one batch, where the second overflows the batch's
    // own sum.
    let three = vec![
        0,
        confirmed_of(confirms[0]) + 1,
        confirmed_of(confirms[1]) + 1,
        events.len(),
    ];
    for (schema, cuts) in [("sales_three", three), ("sales_one", vec![0, events.len()])] {
        w.create_schema(Projection::Sales, schema).await;
        let refused = apply_in_batches(&w, schema, &events, &cuts).await;
        let expected: Vec<String> = confirms[1..].iter().map(|o| format!("order-{o}")).collect();
        assert_eq!(refused, expected, "{schema}");
        let days = w.rows(schema, "sales_days").await;
        assert_eq!(days.len(), 1, "{schema}: {days:?}");
        assert_eq!(days[0]["orders"], 1, "{schema}");
        assert_eq!(days[0]["revenue"], huge, "{schema}");
    }
}

/// Applies `events[cuts[i]..cuts[i + 1]]` as one batch each, skipping
/// refused events as a projector in skip mode does; the refused streams.
async fn apply_in_batches(
    w: &World,
    schema: &str,
    events: &[RecordedEvent],
    cuts: &[usize],
) -> Vec<String> {
    let mut refused = Vec::new();
    for window in cuts.windows(2) {
        let mut tx = w.db.pool.begin().await.unwrap();
        let batch = &events[window[0]..window[1]];
        let ids = batch.iter().map(|e| e.stream_id.as_str());
        let mut live = LiveBatch::begin(&mut tx, Projection::Sales, schema, ids)
            .await
            .unwrap();
        for event in batch {
            match live.apply(&mut tx, event).await {
                Ok(_) => {}
                Err(ProjectionError::Inconsistent {
                    stream_id, message, ..
                }) => {
                    assert!(message.contains("overflow"), "{message}");
                    refused.push(stream_id);
                    live.skip(event);
                }
                Err(other) => panic!("{other}"),
            }
        }
        live.finish(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    refused
}
