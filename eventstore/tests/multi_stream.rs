//! Appends over several streams in one transaction
//! ([`EventStore::append_many_in`]): all or nothing, each stream with its
//! own expected version, under many concurrent writers of overlapping
//! streams, and when the connection dies before the commit.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use eventstore::testing::TestDb;
use eventstore::{verify_stream, EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend};
use serde_json::{json, Value};
use uuid::Uuid;

fn event(n: u64, group: Uuid) -> NewEvent {
    NewEvent::new("Moved", 1, json!({"n": n, "group": group}))
}

async fn version(store: &EventStore, stream: &str) -> u64 {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = $1")
            .bind(stream)
            .fetch_optional(store.pool())
            .await
            .unwrap();
    version.map_or(0, |v| u64::try_from(v).unwrap())
}

async fn events_of(store: &EventStore, stream: &str) -> Vec<Value> {
    store
        .read_stream(stream, 1, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.data)
        .collect()
}

#[tokio::test]
async fn a_conflict_on_one_stream_fails_the_whole_append_and_names_the_stream() {
    let db = TestDb::new().await;
    let store = db.store();
    let group = Uuid::new_v4();
    store
        .append(
            "acct-a",
            ExpectedVersion::NoStream,
            &[event(1, group)],
            &json!({}),
        )
        .await
        .unwrap();

    // b is new and would be written; a is at version 1, not 0.
    let (b, a) = ([event(2, group)], [event(3, group)]);
    let mut tx = store.pool().begin().await.unwrap();
    let appends = [
        StreamAppend {
            stream_id: "acct-b",
            expected: ExpectedVersion::NoStream,
            events: &b,
        },
        StreamAppend {
            stream_id: "acct-a",
            expected: ExpectedVersion::Exact(0),
            events: &a,
        },
    ];
    let error = store
        .append_many_in(&mut tx, &appends, &json!({}))
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();

    match error {
        StoreError::WrongExpectedVersion {
            stream_id, actual, ..
        } => {
            assert_eq!(stream_id, "acct-a");
            assert_eq!(actual, 1);
        }
        other => panic!("not a conflict: {other:?}"),
    }
    assert!(events_of(&store, "acct-b").await.is_empty());
    assert_eq!(events_of(&store, "acct-a").await.len(), 1);
}

/// 32 writers, each moving value between three of six streams at a time
/// with the versions it read: every append lands whole or not at all, no
/// deadlock reaches a writer, and each stream stays gap-free and chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_over_overlapping_streams_land_whole_or_not_at_all() {
    let db = TestDb::with_pool_size(40).await;
    let store = db.store();
    let streams: Vec<String> = (0..6).map(|i| format!("acct-{i}")).collect();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..32u64 {
        let (store, streams) = (store.clone(), streams.clone());
        writers.spawn(async move {
            let (mut written, mut conflicts) = (Vec::new(), 0u32);
            for n in 0..15u64 {
                // Three distinct streams, in an order of this writer's own.
                let pick: Vec<&str> = (0..3)
                    .map(|k| streams[((w + n * 7 + k * (1 + w % 5)) % 6) as usize].as_str())
                    .fold(Vec::new(), |mut acc, s| {
                        if !acc.contains(&s) {
                            acc.push(s);
                        }
                        acc
                    });
                let group = Uuid::new_v4();
                let mut expected = Vec::new();
                for s in &pick {
                    expected.push(version(&store, s).await);
                }
                let events: Vec<[NewEvent; 1]> = pick.iter().map(|_| [event(n, group)]).collect();
                let appends: Vec<StreamAppend> = pick
                    .iter()
                    .zip(&expected)
                    .zip(&events)
                    .map(|((s, v), e)| StreamAppend {
                        stream_id: s,
                        expected: ExpectedVersion::Exact(*v),
                        events: e,
                    })
                    .collect();
                let mut tx = store.pool().begin().await.unwrap();
                match store.append_many_in(&mut tx, &appends, &json!({})).await {
                    Ok(results) => {
                        assert_eq!(results.len(), pick.len());
                        tx.commit().await.unwrap();
                        store.committed();
                        written.push((group, pick.len()));
                    }
                    Err(error) if error.is_conflict() => {
                        tx.rollback().await.unwrap();
                        conflicts += 1;
                    }
                    Err(error) => panic!("writer {w}: {error}"),
                }
            }
            (written, conflicts)
        });
    }
    let mut expected: HashMap<Uuid, usize> = HashMap::new();
    let mut conflicts = 0;
    while let Some(done) = writers.join_next().await {
        let (written, c) = done.unwrap();
        conflicts += c;
        expected.extend(written);
    }
    assert!(!expected.is_empty(), "no append succeeded");

    let mut found: HashMap<Uuid, usize> = HashMap::new();
    for stream in &streams {
        let verification = verify_stream(store.pool(), stream).await.unwrap();
        assert!(verification.valid, "{stream}: {verification:?}");
        for data in events_of(&store, stream).await {
            let group: Uuid = serde_json::from_value(data["group"].clone()).unwrap();
            *found.entry(group).or_default() += 1;
        }
    }
    // Every committed append whole, nothing of a failed one.
    assert_eq!(found, expected, "({conflicts} appends conflicted)");
}

#[tokio::test]
async fn a_connection_killed_before_the_commit_stores_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let group = Uuid::new_v4();
    let (x, y) = ([event(1, group)], [event(2, group)]);
    let mut tx = store.pool().begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let appends = [
        StreamAppend {
            stream_id: "acct-x",
            expected: ExpectedVersion::NoStream,
            events: &x,
        },
        StreamAppend {
            stream_id: "acct-y",
            expected: ExpectedVersion::NoStream,
            events: &y,
        },
    ];
    store
        .append_many_in(&mut tx, &appends, &json!({}))
        .await
        .unwrap();

    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(killed);
    assert!(
        tx.commit().await.is_err(),
        "the commit of a killed connection failed"
    );

    assert!(events_of(&store, "acct-x").await.is_empty());
    assert!(events_of(&store, "acct-y").await.is_empty());
    assert_eq!(version(&store, "acct-x").await, 0);
}

/// This process's head guesses are stale when another process appended
/// since (a second store over the same database): the append goes again
/// under the locks and lands whole, chained onto the real heads; the same
/// stream twice in one append chains the second part onto the first.
#[tokio::test]
async fn stale_guesses_and_a_stream_named_twice_still_land_whole_and_chained() {
    let db = TestDb::new().await;
    let (mine, other) = (db.store(), db.store());
    let group = Uuid::new_v4();
    for stream in ["acct-x", "acct-y"] {
        mine.append(stream, ExpectedVersion::Any, &[event(1, group)], &json!({}))
            .await
            .unwrap();
        // Another process moves both heads past what `mine` remembers.
        other
            .append(
                stream,
                ExpectedVersion::Exact(1),
                &[event(2, group)],
                &json!({}),
            )
            .await
            .unwrap();
    }
    let (x, y, x_again) = ([event(3, group)], [event(4, group)], [event(5, group)]);
    let appends = [
        StreamAppend {
            stream_id: "acct-x",
            expected: ExpectedVersion::Exact(2),
            events: &x,
        },
        StreamAppend {
            stream_id: "acct-y",
            expected: ExpectedVersion::Any,
            events: &y,
        },
        StreamAppend {
            stream_id: "acct-x",
            expected: ExpectedVersion::Exact(3),
            events: &x_again,
        },
    ];
    let mut tx = mine.pool().begin().await.unwrap();
    let results = mine
        .append_many_in(&mut tx, &appends, &json!({}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    mine.committed();

    let versions: Vec<u64> = results.iter().map(|r| r.version).collect();
    assert_eq!(versions, [3, 3, 4]);
    assert_eq!(version(&mine, "acct-x").await, 4);
    assert_eq!(version(&mine, "acct-y").await, 3);
    for stream in ["acct-x", "acct-y"] {
        let verification = verify_stream(mine.pool(), stream).await.unwrap();
        assert!(verification.valid, "{stream}: {verification:?}");
    }
    let ns: Vec<Value> = events_of(&mine, "acct-x")
        .await
        .iter()
        .map(|e| e["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(2), json!(3), json!(5)]);
}
