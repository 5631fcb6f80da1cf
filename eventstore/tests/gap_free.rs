//! The global order has no gaps: a reader that tails the store never skips an
//! event that commits late, and never sees one twice.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use eventstore::testing::TestDb;
use eventstore::{
    append_in, Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SubscribeOptions,
};
use futures::StreamExt;
use rand::Rng;
use serde_json::json;

fn one(name: &str) -> Vec<NewEvent> {
    vec![NewEvent::new("Happened", 1, json!({"name": name}))]
}

/// Reads everything readable after `checkpoint`, as a tailing reader would.
async fn drain(store: &EventStore, checkpoint: &mut Checkpoint) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let batch = store.read_all(*checkpoint, 2).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        for e in batch {
            assert!(
                e.checkpoint() > *checkpoint,
                "the checkpoint moved backwards"
            );
            *checkpoint = e.checkpoint();
            all.push(e);
        }
    }
}

/// Like [`drain`], waiting up to 10 s for at least `n` events: transactions
/// of other tests on the same server can hold the readable horizon back.
async fn drain_at_least(
    store: &EventStore,
    checkpoint: &mut Checkpoint,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        all.extend(drain(store, checkpoint).await);
        if all.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    all
}

fn names(events: &[RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_event_with_a_lower_position_that_commits_later_is_not_skipped() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut reader = Checkpoint::START;

    // Given A takes the lower position (and the lower transaction id) ...
    let mut a = db.pool.begin().await.unwrap();
    let pos_a = append_in(&mut a, "s-a", ExpectedVersion::Any, &one("a"), &json!({}))
        .await
        .unwrap()
        .position;
    // ... and B takes a higher position and commits first,
    let mut b = db.pool.begin().await.unwrap();
    let pos_b = append_in(&mut b, "s-b", ExpectedVersion::Any, &one("b"), &json!({}))
        .await
        .unwrap()
        .position;
    b.commit().await.unwrap();
    assert!(pos_a < pos_b);

    // when the reader tails while A is still open, then after A commits,
    let while_open = drain(&store, &mut reader).await;
    a.commit().await.unwrap();
    let after_commit = drain_at_least(&store, &mut reader, 2).await;

    // then it gets both, once each: B is held back until A is decided.
    assert_eq!(names(&while_open), Vec::<String>::new());
    assert_eq!(names(&after_commit), vec!["a", "b"]);
    assert!(drain(&store, &mut reader).await.is_empty());
}

#[tokio::test]
async fn an_older_transaction_that_takes_a_lower_position_and_commits_last_is_not_skipped() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut reader = Checkpoint::START;

    // Given B's transaction starts writing first (the lower transaction id) ...
    let mut b = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *b)
        .await
        .unwrap();
    // ... A, a younger transaction, takes the lower position and stays open,
    let mut a = db.pool.begin().await.unwrap();
    let pos_a = append_in(&mut a, "s-a", ExpectedVersion::Any, &one("a"), &json!({}))
        .await
        .unwrap()
        .position;
    let pos_b = append_in(&mut b, "s-b", ExpectedVersion::Any, &one("b"), &json!({}))
        .await
        .unwrap()
        .position;
    b.commit().await.unwrap();
    assert!(pos_a < pos_b);

    // when the reader tails before and after A commits,
    let before = drain_at_least(&store, &mut reader, 1).await;
    a.commit().await.unwrap();
    let after = drain_at_least(&store, &mut reader, 1).await;

    // then it reads B first and still gets A, although A's position is lower
    // than the checkpoint's: a reader checkpointing by position alone would skip A.
    assert_eq!(names(&before), vec!["b"]);
    assert_eq!(reader.position, pos_a);
    assert_eq!(names(&after), vec!["a"]);
    assert!(drain(&store, &mut reader).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_receives_every_event_exactly_once_under_concurrent_load() {
    let db = TestDb::with_pool_size(24).await;
    let store = db.store();
    let total: usize = 20_000;
    let writers = 8;
    let streams = 16;

    let subscription = store.subscribe_all(Checkpoint::START, SubscribeOptions::default());
    let reader = tokio::spawn(async move {
        let mut subscription = std::pin::pin!(subscription);
        let mut received = Vec::with_capacity(total);
        let mut last = Checkpoint::START;
        while received.len() < total {
            let next = tokio::time::timeout(Duration::from_secs(60), subscription.next()).await;
            let event: RecordedEvent = next.expect("the subscriber stalled").unwrap().unwrap();
            assert!(
                event.checkpoint() > last,
                "checkpoint moved backwards: {last} then {}",
                event.checkpoint()
            );
            last = event.checkpoint();
            received.push(event);
        }
        // Nothing beyond the total may arrive (no duplicates at the tail).
        let extra = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
        assert!(
            extra.is_err(),
            "an event arrived after all {total} were received"
        );
        received
    });

    let per_writer = total / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = db.pool.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = 0;
                let mut tx_count = 0u32;
                while written < per_writer {
                    let (batch, stream, hold) = {
                        let mut rng = rand::thread_rng();
                        let batch = rng.gen_range(1..=3).min(per_writer - written);
                        let stream = format!("load-{}", rng.gen_range(0..streams));
                        // Some transactions stay open a while after taking their positions.
                        let hold = tx_count.is_multiple_of(40);
                        (batch, stream, hold)
                    };
                    let events: Vec<NewEvent> = (0..batch)
                        .map(|i| NewEvent::new("Loaded", 1, json!({"writer": w, "n": written + i})))
                        .collect();
                    let mut tx = pool.begin().await.unwrap();
                    append_in(&mut tx, &stream, ExpectedVersion::Any, &events, &json!({}))
                        .await
                        .unwrap();
                    if hold {
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    tx.commit().await.unwrap();
                    store.committed();
                    written += batch;
                    tx_count += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let received = reader.await.unwrap();

    assert_eq!(received.len(), total);
    let mut seen = std::collections::HashSet::new();
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for e in &received {
        assert!(
            seen.insert(e.event_id),
            "event {} received twice",
            e.event_id
        );
        let expected = next_version.entry(&e.stream_id).or_insert(1);
        assert_eq!(e.version, *expected, "stream {} out of order", e.stream_id);
        *expected += 1;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, total);
}

#[tokio::test]
async fn a_transaction_older_than_the_streams_last_writer_cannot_append_to_it() {
    let db = TestDb::new().await;
    let store = db.store();

    // Given a transaction that got its id early by writing something else ...
    let mut old = db.pool.begin().await.unwrap();
    append_in(
        &mut old,
        "s-other",
        ExpectedVersion::Any,
        &one("other"),
        &json!({}),
    )
    .await
    .unwrap();
    // ... and a younger transaction that appends to stream s-a and commits,
    store
        .append("s-a", ExpectedVersion::Any, &one("young"), &json!({}))
        .await
        .unwrap();

    // when the older transaction appends to s-a,
    let result = append_in(
        &mut old,
        "s-a",
        ExpectedVersion::Any,
        &one("old"),
        &json!({}),
    )
    .await;

    // then it must retry in a new transaction: tailing readers would see s-a out of order.
    assert!(matches!(
        result,
        Err(eventstore::StoreError::TransactionOrder { .. })
    ));
    assert!(result.unwrap_err().is_conflict());
}

#[tokio::test]
async fn locking_the_stream_first_lets_a_transaction_write_before_appending() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("s-a", ExpectedVersion::Any, &one("first"), &json!({}))
        .await
        .unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    eventstore::lock_stream(&mut tx, "s-a").await.unwrap();
    append_in(
        &mut tx,
        "s-other",
        ExpectedVersion::Any,
        &one("other"),
        &json!({}),
    )
    .await
    .unwrap();
    let appended = append_in(
        &mut tx,
        "s-a",
        ExpectedVersion::Exact(1),
        &one("second"),
        &json!({}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(appended.version, 2);
}

#[tokio::test]
async fn a_subscriber_wakes_for_commits_of_its_own_store_and_of_another_process() {
    // Given a subscriber whose polling is an hour away, so that only
    // wake-ups can bring it events,
    let db = TestDb::new().await;
    let mine = db.store();
    let other = db.store(); // another store: what another process is
    let options = SubscribeOptions {
        batch_size: 100,
        poll_interval: Duration::from_secs(3600),
    };
    let subscription = mine.subscribe_all(Checkpoint::START, options);
    let mut subscription = std::pin::pin!(subscription);
    for round in 0..3 {
        // when the other store commits, its NOTIFY wakes the subscriber,
        let theirs = format!("theirs-{round}");
        other
            .append(&theirs, ExpectedVersion::Any, &one(&theirs), &json!({}))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
        let event = next.expect("another store's commit did not wake the subscriber");
        assert_eq!(event.unwrap().unwrap().stream_id, theirs);
        // and when its own store commits, its commit signal does.
        let ours = format!("ours-{round}");
        mine.append(&ours, ExpectedVersion::Any, &one(&ours), &json!({}))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
        let event = next.expect("its own store's commit did not wake the subscriber");
        assert_eq!(event.unwrap().unwrap().stream_id, ours);
    }
}

#[tokio::test]
async fn an_event_held_back_by_a_transaction_that_announces_nothing_still_arrives() {
    // Given a subscriber whose polling is an hour away,
    let db = TestDb::new().await;
    let store = db.store();
    let options = SubscribeOptions {
        batch_size: 100,
        poll_interval: Duration::from_secs(3600),
    };
    let subscription = store.subscribe_all(Checkpoint::START, options);
    let mut subscription = std::pin::pin!(subscription);
    // and an older transaction, not an append, still running,
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await
        .unwrap();
    // when an event commits behind it (held back: not yet readable in the
    // gap-free order) and the holder then ends without a word,
    store
        .append("held", ExpectedVersion::Any, &one("held"), &json!({}))
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await;
    assert!(
        early.is_err(),
        "an event arrived while an older transaction ran"
    );
    holder.commit().await.unwrap();
    // then the subscriber still gets the event.
    let next = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
    let event = next.expect("a held-back event never arrived");
    assert_eq!(event.unwrap().unwrap().stream_id, "held");
}
