//! Appending and reading back: round trips, input validation, idempotency,
//! the hash chain, snapshots and checkpoints.
#![allow(clippy::unwrap_used)]

use eventstore::testing::TestDb;
use eventstore::{
    load_checkpoint, load_snapshot, save_checkpoint, save_snapshot, verify_stream, Checkpoint,
    ExpectedVersion, NewEvent, StoreError, MAX_EVENT_BYTES,
};
use serde_json::{json, Value};

fn meta() -> Value {
    json!({"correlation_id": "c-1", "causation_id": "cmd-1", "user_id": "alice", "command_id": "cmd-1"})
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({"n": n}))
}

async fn event_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn appended_events_read_back_with_their_metadata() {
    let db = TestDb::new().await;
    let store = db.store();
    let events = vec![event(1), event(2)];

    let result = store
        .append("counter-a", ExpectedVersion::NoStream, &events, &meta())
        .await
        .unwrap();

    assert_eq!(result.version, 2);
    let read = store.read_stream("counter-a", 1, 100).await.unwrap();
    assert_eq!(read.len(), 2);
    for (i, (stored, sent)) in read.iter().zip(&events).enumerate() {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.stream_id, "counter-a");
        assert_eq!(stored.stream_type, "counter");
        assert_eq!(stored.version, i as u64 + 1);
        assert_eq!(stored.event_type, "Counted");
        assert_eq!(stored.schema_version, 1);
        assert_eq!(stored.data, sent.data);
        assert_eq!(stored.metadata, meta());
        assert_eq!(stored.hash.len(), 64);
    }
    assert_eq!(read[1].global_position, result.position);
    assert!(read[0].global_position < read[1].global_position);
    let from_two = store.read_stream("counter-a", 2, 100).await.unwrap();
    assert_eq!(from_two.len(), 1);
    assert_eq!(from_two[0].version, 2);
}

#[tokio::test]
async fn an_append_with_a_stale_expected_version_is_a_conflict_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("counter-a", ExpectedVersion::NoStream, &[event(1)], &meta())
        .await
        .unwrap();
    store
        .append("counter-a", ExpectedVersion::Exact(1), &[event(2)], &meta())
        .await
        .unwrap();

    let stale = store
        .append("counter-a", ExpectedVersion::Exact(1), &[event(3)], &meta())
        .await;
    let again = store
        .append("counter-a", ExpectedVersion::NoStream, &[event(3)], &meta())
        .await;

    match stale {
        Err(StoreError::WrongExpectedVersion {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        again,
        Err(StoreError::WrongExpectedVersion { actual: 2, .. })
    ));
    assert!(matches!(
        store
            .append("counter-b", ExpectedVersion::Exact(3), &[event(1)], &meta())
            .await,
        Err(StoreError::WrongExpectedVersion { actual: 0, .. })
    ));
    assert_eq!(event_count(&db).await, 2);
    let any = store
        .append("counter-a", ExpectedVersion::Any, &[event(3)], &meta())
        .await
        .unwrap();
    assert_eq!(any.version, 3);
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let huge = NewEvent::new("Big", 1, json!({"blob": "x".repeat(MAX_EVENT_BYTES)}));
    let long_id = "s".repeat(256);

    let empty = store
        .append("counter-a", ExpectedVersion::Any, &[], &meta())
        .await;
    let too_large = store
        .append(
            "counter-a",
            ExpectedVersion::Any,
            &[event(1), huge],
            &meta(),
        )
        .await;
    let no_id = store
        .append("", ExpectedVersion::Any, &[event(1)], &meta())
        .await;
    let long = store
        .append(&long_id, ExpectedVersion::Any, &[event(1)], &meta())
        .await;
    let control = store
        .append("counter-\n", ExpectedVersion::Any, &[event(1)], &meta())
        .await;
    let array_meta = store
        .append("counter-a", ExpectedVersion::Any, &[event(1)], &json!([1]))
        .await;
    let string_meta = store
        .append("counter-a", ExpectedVersion::Any, &[event(1)], &json!("m"))
        .await;
    let nul = store
        .append(
            "counter-a",
            ExpectedVersion::Any,
            &[NewEvent::new("T", 1, json!({"s": "a\u{0}b"}))],
            &meta(),
        )
        .await;
    let no_type = store
        .append(
            "counter-a",
            ExpectedVersion::Any,
            &[NewEvent::new("", 1, json!({}))],
            &meta(),
        )
        .await;

    assert!(matches!(empty, Err(StoreError::EmptyAppend)));
    assert!(matches!(
        too_large,
        Err(StoreError::EventTooLarge { index: 1, .. })
    ));
    assert!(matches!(no_id, Err(StoreError::InvalidStreamId(_))));
    assert!(matches!(long, Err(StoreError::InvalidStreamId(_))));
    assert!(matches!(control, Err(StoreError::InvalidStreamId(_))));
    assert!(matches!(array_meta, Err(StoreError::InvalidMetadata)));
    assert!(matches!(string_meta, Err(StoreError::InvalidMetadata)));
    assert!(matches!(
        nul,
        Err(StoreError::InvalidEvent { index: 0, .. })
    ));
    assert!(matches!(
        no_type,
        Err(StoreError::InvalidEvent { index: 0, .. })
    ));
    assert_eq!(event_count(&db).await, 0);
    let streams: i64 = sqlx::query_scalar("SELECT count(*) FROM streams")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(streams, 0);
}

#[tokio::test]
async fn a_duplicate_event_id_is_rejected_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let first = event(1);
    store
        .append(
            "counter-a",
            ExpectedVersion::Any,
            std::slice::from_ref(&first),
            &meta(),
        )
        .await
        .unwrap();

    let dup = store
        .append(
            "counter-b",
            ExpectedVersion::Any,
            &[event(2), first],
            &meta(),
        )
        .await;

    assert!(matches!(dup, Err(StoreError::DuplicateEventId)));
    assert_eq!(event_count(&db).await, 1);
}

#[tokio::test]
async fn a_retried_idempotent_append_returns_the_first_result_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();

    let first = store
        .append_idempotent(
            "key-1",
            "counter-a",
            ExpectedVersion::NoStream,
            &[event(1)],
            &meta(),
        )
        .await
        .unwrap();
    // A retry makes new event ids; the content is what identifies it.
    let retry = store
        .append_idempotent(
            "key-1",
            "counter-a",
            ExpectedVersion::NoStream,
            &[event(1)],
            &meta(),
        )
        .await
        .unwrap();
    let other = store
        .append_idempotent(
            "key-1",
            "counter-a",
            ExpectedVersion::NoStream,
            &[event(2)],
            &meta(),
        )
        .await;

    assert!(!first.replayed);
    assert!(retry.replayed);
    assert_eq!(
        (retry.version, retry.position),
        (first.version, first.position)
    );
    assert!(matches!(
        other,
        Err(StoreError::IdempotencyKeyReused { .. })
    ));
    assert_eq!(event_count(&db).await, 1);
}

#[tokio::test]
async fn concurrent_retries_of_one_idempotent_append_write_once() {
    let db = TestDb::new().await;
    let store = db.store();

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_idempotent(
                        "key-1",
                        "counter-a",
                        ExpectedVersion::Any,
                        &[event(1)],
                        &meta(),
                    )
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }

    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    assert!(results.iter().all(|r| r.position == results[0].position));
    assert_eq!(event_count(&db).await, 1);
}

#[tokio::test]
async fn verify_accepts_an_untouched_stream_and_names_the_first_altered_version() {
    let db = TestDb::new().await;
    let store = db.store();
    for n in 1..=5 {
        store
            .append("counter-a", ExpectedVersion::Any, &[event(n)], &meta())
            .await
            .unwrap();
    }
    let clean = verify_stream(&db.pool, "counter-a").await.unwrap();
    assert!(clean.valid);
    assert_eq!(clean.events_checked, 5);
    assert_eq!(clean.first_invalid_version, None);

    sqlx::query(
        "UPDATE events SET data = '{\"n\": 300}' WHERE stream_id = 'counter-a' AND version = 3",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let tampered = verify_stream(&db.pool, "counter-a").await.unwrap();

    assert!(!tampered.valid);
    assert_eq!(tampered.first_invalid_version, Some(3));
}

#[tokio::test]
async fn verify_catches_altered_metadata_and_a_deleted_last_event() {
    let db = TestDb::new().await;
    let store = db.store();
    for n in 1..=3 {
        store
            .append("counter-a", ExpectedVersion::Any, &[event(n)], &meta())
            .await
            .unwrap();
        store
            .append("counter-b", ExpectedVersion::Any, &[event(n)], &meta())
            .await
            .unwrap();
    }

    sqlx::query("UPDATE events SET metadata = jsonb_set(metadata, '{user_id}', '\"mallory\"') WHERE stream_id = 'counter-a' AND version = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM events WHERE stream_id = 'counter-b' AND version = 3")
        .execute(&db.pool)
        .await
        .unwrap();

    assert_eq!(
        verify_stream(&db.pool, "counter-a")
            .await
            .unwrap()
            .first_invalid_version,
        Some(1)
    );
    assert_eq!(
        verify_stream(&db.pool, "counter-b")
            .await
            .unwrap()
            .first_invalid_version,
        Some(3)
    );
}

#[tokio::test]
async fn the_latest_snapshot_wins_and_an_older_one_never_replaces_it() {
    let db = TestDb::new().await;
    assert_eq!(load_snapshot(&db.pool, "counter-a").await.unwrap(), None);

    save_snapshot(&db.pool, "counter-a", 10, 1, &json!({"total": 10}))
        .await
        .unwrap();
    save_snapshot(&db.pool, "counter-a", 20, 1, &json!({"total": 20}))
        .await
        .unwrap();
    save_snapshot(&db.pool, "counter-a", 15, 1, &json!({"total": 15}))
        .await
        .unwrap();

    let snapshot = load_snapshot(&db.pool, "counter-a").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 20);
    assert_eq!(snapshot.state, json!({"total": 20}));
}

#[tokio::test]
async fn a_checkpoint_never_moves_backwards() {
    let db = TestDb::new().await;
    assert_eq!(
        load_checkpoint(&db.pool, "relay").await.unwrap(),
        Checkpoint::START
    );
    let later = Checkpoint {
        tx_id: 900,
        position: 5,
    };
    let earlier = Checkpoint {
        tx_id: 800,
        position: 9,
    };

    save_checkpoint(&db.pool, "relay", later).await.unwrap();
    save_checkpoint(&db.pool, "relay", earlier).await.unwrap();

    assert_eq!(load_checkpoint(&db.pool, "relay").await.unwrap(), later);
}

#[test]
fn a_checkpoint_round_trips_through_text() {
    let cp = Checkpoint {
        tx_id: 1234,
        position: 99,
    };
    assert_eq!(cp.to_string().parse::<Checkpoint>().unwrap(), cp);
    assert!("12".parse::<Checkpoint>().is_err());
    assert!("a.b".parse::<Checkpoint>().is_err());
    assert!("-1.5".parse::<Checkpoint>().is_err());
}

#[tokio::test]
async fn an_events_own_metadata_overlays_the_appends_and_is_hashed() {
    let db = TestDb::new().await;
    let store = db.store();
    let events = [
        event(1).with_metadata(json!({"command_id": "cmd-a", "extra": true})),
        event(2),
    ];

    store
        .append("counter-a", ExpectedVersion::NoStream, &events, &meta())
        .await
        .unwrap();
    let bad = store
        .append(
            "counter-b",
            ExpectedVersion::Any,
            &[event(1).with_metadata(json!(3))],
            &meta(),
        )
        .await;

    let read = store.read_stream("counter-a", 1, 10).await.unwrap();
    assert_eq!(read[0].metadata["command_id"], "cmd-a");
    assert_eq!(read[0].metadata["extra"], true);
    assert_eq!(read[0].metadata["correlation_id"], "c-1");
    assert_eq!(read[1].metadata, meta());
    assert!(verify_stream(&db.pool, "counter-a").await.unwrap().valid);
    assert!(matches!(bad, Err(StoreError::InvalidMetadata)));
}

#[tokio::test]
async fn an_append_inside_the_callers_transaction_survives_stale_and_rolled_back_heads() {
    let db = TestDb::new().await;
    let (ours, theirs) = (db.store(), db.store());
    // Our process learns the head...
    let mut tx = db.pool.begin().await.unwrap();
    let first = ours
        .append_in(
            &mut tx,
            "counter-tx",
            ExpectedVersion::NoStream,
            &[event(1)],
            &meta(),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first.version, 1);
    // ...another process moves it on, and one of our transactions rolls back.
    theirs
        .append(
            "counter-tx",
            ExpectedVersion::Exact(1),
            &[event(2)],
            &meta(),
        )
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    ours.append_in(
        &mut tx,
        "counter-tx",
        ExpectedVersion::Exact(2),
        &[event(3)],
        &meta(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    // Both stale guesses cost a retry, not a wrong chain.
    let mut tx = db.pool.begin().await.unwrap();
    let last = ours
        .append_in(
            &mut tx,
            "counter-tx",
            ExpectedVersion::Exact(2),
            &[event(4)],
            &meta(),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(last.version, 3);
    let conflict = {
        let mut tx = db.pool.begin().await.unwrap();
        ours.append_in(
            &mut tx,
            "counter-tx",
            ExpectedVersion::Exact(2),
            &[event(5)],
            &meta(),
        )
        .await
    };
    assert!(
        matches!(conflict, Err(ref e) if e.is_conflict()),
        "{conflict:?}"
    );
    let verification = verify_stream(&db.pool, "counter-tx").await.unwrap();
    assert!(verification.valid);
    assert_eq!(verification.events_checked, 3);
}
