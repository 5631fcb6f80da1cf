//! Group commit: appends made at the same time share one transaction, yet
//! each keeps its own outcome, and a group that dies leaves nothing behind.
//!
//! To put chosen appends into one group, a test first parks every writer
//! pipeline: an append each to a "gate" stream whose lock the test holds.
//! Appends made while they wait queue up and form the next group when the
//! gate opens.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eventstore::testing::{eventually, TestDb};
use eventstore::{
    append_in, verify_stream, AppendResult, EventStore, ExpectedVersion, NewEvent, StoreError,
    GROUP_PIPELINES,
};
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use tokio::task::JoinHandle;

type Pending = JoinHandle<Result<AppendResult, StoreError>>;

fn event(n: i64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({"n": n}))
}

fn spawn_append(
    store: &EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Pending {
    let store = store.clone();
    let stream = stream.to_owned();
    tokio::spawn(async move {
        store
            .append(&stream, expected, &events, &json!({"user_id": "t"}))
            .await
    })
}

/// The gate's streams: one per writer pipeline.
fn gates(gate: &str) -> Vec<String> {
    (1..=GROUP_PIPELINES)
        .map(|k| format!("{gate}-{k}"))
        .collect()
}

/// Holds the gate streams' append locks on a connection of its own
/// (session level, until [`open`]).
async fn close_gate(db: &TestDb, gate: &str) -> PoolConnection<Postgres> {
    let mut conn = db.pool.acquire().await.unwrap();
    for stream in gates(gate) {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(stream)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    conn
}

async fn open(mut conn: PoolConnection<Postgres>, gate: &str, parked: Vec<Pending>) {
    for stream in gates(gate) {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(stream)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for pending in parked {
        pending.await.unwrap().unwrap();
    }
}

/// Backends of this test's database waiting for a lock of `locktype`.
async fn waiting(db: &TestDb, locktype: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND l.locktype = $1 AND a.datname = current_database()",
    )
    .bind(locktype)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Parks every writer pipeline at the gate, one append each: the next
/// appends queue behind them.
async fn park_writers(db: &TestDb, store: &EventStore, gate: &str) -> Vec<Pending> {
    let mut parked = Vec::new();
    for stream in gates(gate) {
        parked.push(spawn_append(
            store,
            &stream,
            ExpectedVersion::Any,
            vec![event(0)],
        ));
        let n = parked.len();
        eventually(
            Duration::from_secs(10),
            "a writer waits at the gate",
            || async { waiting(db, "advisory").await.len() == n },
        )
        .await;
    }
    parked
}

/// Queues an append behind the parked writer, in this order.
async fn queue(
    store: &EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Pending {
    let before = store.queued_appends();
    let pending = spawn_append(store, stream, expected, events);
    eventually(Duration::from_secs(10), "the append is queued", || async {
        store.queued_appends() > before
    })
    .await;
    pending
}

async fn stream_rows(db: &TestDb, streams: &[&str]) -> (i64, i64) {
    let streams: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = ANY($1)")
        .bind(&streams)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let heads: i64 = sqlx::query_scalar("SELECT count(*) FROM streams WHERE stream_id = ANY($1)")
        .bind(&streams)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    (events, heads)
}

#[tokio::test]
async fn one_group_answers_each_append_its_own_outcome() {
    let db = TestDb::with_pool_size(8).await;
    let store = db.store();
    // Given streams at version 1, and a writer parked at a gate,
    for stream in ["acct-chained", "acct-other"] {
        store
            .append(stream, ExpectedVersion::NoStream, &[event(1)], &json!({}))
            .await
            .unwrap();
    }
    let gate = close_gate(&db, "gate-1").await;
    let parked = park_writers(&db, &store, "gate-1").await;

    // when appends that succeed, conflict and chain on one stream queue
    // for one group, and one with bad input is made beside them,
    let new = queue(
        &store,
        "acct-new",
        ExpectedVersion::NoStream,
        vec![event(1)],
    )
    .await;
    let conflict = queue(
        &store,
        "acct-other",
        ExpectedVersion::Exact(5),
        vec![event(2)],
    )
    .await;
    let first = queue(
        &store,
        "acct-chained",
        ExpectedVersion::Exact(1),
        vec![event(2), event(3)],
    )
    .await;
    let second = queue(
        &store,
        "acct-chained",
        ExpectedVersion::Exact(3),
        vec![event(4)],
    )
    .await;
    let any = queue(&store, "acct-any", ExpectedVersion::Any, vec![event(1)]).await;
    let invalid = store
        .append(
            "acct-invalid",
            ExpectedVersion::Any,
            &[NewEvent::new("", 1, json!({}))],
            &json!({}),
        )
        .await;
    open(gate, "gate-1", parked).await;

    // then each answers its own outcome,
    assert_eq!(new.await.unwrap().unwrap().version, 1);
    assert!(matches!(
        conflict.await.unwrap(),
        Err(StoreError::WrongExpectedVersion { actual: 1, .. })
    ));
    assert_eq!(first.await.unwrap().unwrap().version, 3);
    assert_eq!(second.await.unwrap().unwrap().version, 4);
    assert_eq!(any.await.unwrap().unwrap().version, 1);
    assert!(matches!(invalid, Err(StoreError::InvalidEvent { .. })));
    // the good ones were committed together, in one transaction,
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tx_id) FROM events
         WHERE stream_id IN ('acct-new', 'acct-any') OR (stream_id = 'acct-chained' AND version > 1)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(transactions, 1);
    // and the others wrote nothing.
    assert_eq!(stream_rows(&db, &["acct-other"]).await, (1, 1));
    assert_eq!(stream_rows(&db, &["acct-invalid"]).await, (0, 0));
    let chained = store.read_stream("acct-chained", 1, 100).await.unwrap();
    let versions: Vec<u64> = chained.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert!(verify_stream(&db.pool, "acct-chained").await.unwrap().valid);
}

#[tokio::test]
async fn a_duplicate_event_id_in_a_group_fails_only_its_own_append() {
    let db = TestDb::with_pool_size(8).await;
    let store = db.store();
    let stored = event(1);
    store
        .append(
            "acct-first",
            ExpectedVersion::NoStream,
            std::slice::from_ref(&stored),
            &json!({}),
        )
        .await
        .unwrap();
    let gate = close_gate(&db, "gate-2").await;
    let parked = park_writers(&db, &store, "gate-2").await;

    let before = queue(&store, "acct-a", ExpectedVersion::NoStream, vec![event(1)]).await;
    let duplicate = queue(
        &store,
        "acct-dup",
        ExpectedVersion::NoStream,
        vec![event(1), stored.clone()],
    )
    .await;
    let after = queue(&store, "acct-b", ExpectedVersion::NoStream, vec![event(1)]).await;
    open(gate, "gate-2", parked).await;

    assert_eq!(before.await.unwrap().unwrap().version, 1);
    assert!(matches!(
        duplicate.await.unwrap(),
        Err(StoreError::DuplicateEventId)
    ));
    assert_eq!(after.await.unwrap().unwrap().version, 1);
    assert_eq!(stream_rows(&db, &["acct-dup"]).await, (0, 0));
    assert_eq!(stream_rows(&db, &["acct-a", "acct-b"]).await, (2, 2));
}

#[tokio::test]
async fn a_group_whose_connection_is_killed_acknowledges_nothing_and_writes_nothing() {
    let db = TestDb::with_pool_size(8).await;
    let store = db.store();
    // Given a transaction that holds an uncommitted event with id X,
    let held = event(1);
    let mut holder = db.pool.begin().await.unwrap();
    append_in(
        &mut holder,
        "acct-holder",
        ExpectedVersion::Any,
        std::slice::from_ref(&held),
        &json!({}),
    )
    .await
    .unwrap();
    // and a group of appends, the last of which also carries event X, so
    // that the group's insert waits for the holder after the group wrote
    // its streams' heads,
    let gate = close_gate(&db, "gate-3").await;
    let parked = park_writers(&db, &store, "gate-3").await;
    let streams = ["acct-1", "acct-2", "acct-3", "acct-4"];
    let mut group = Vec::new();
    for stream in &streams[..3] {
        group.push(queue(&store, stream, ExpectedVersion::NoStream, vec![event(1)]).await);
    }
    group.push(
        queue(
            &store,
            streams[3],
            ExpectedVersion::NoStream,
            vec![event(1), held.clone()],
        )
        .await,
    );
    open(gate, "gate-3", parked).await;
    eventually(
        Duration::from_secs(10),
        "the group waits for the holder",
        || async { !waiting(&db, "transactionid").await.is_empty() },
    )
    .await;
    let stuck = waiting(&db, "transactionid").await;

    // when the group's connection is killed mid-statement,
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(stuck[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(killed);

    // then no append of the group is acknowledged,
    for pending in group {
        let answer = pending.await.unwrap();
        assert!(matches!(answer, Err(StoreError::Database(_))), "{answer:?}");
    }
    // nothing of the group is stored,
    holder.rollback().await.unwrap();
    assert_eq!(stream_rows(&db, &streams).await, (0, 0));
    // and the store goes on appending.
    for stream in streams {
        let appended = store
            .append(stream, ExpectedVersion::NoStream, &[event(2)], &json!({}))
            .await
            .unwrap();
        assert_eq!(appended.version, 1);
    }
}

#[tokio::test]
async fn many_concurrent_appends_to_new_and_shared_streams_keep_every_stream_contiguous() {
    let db = TestDb::with_pool_size(8).await;
    let store = db.store();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let stream = if i % 2 == 0 {
                        format!("shared-{}", w % 4)
                    } else {
                        format!("own-{w}-{i}")
                    };
                    store
                        .append(&stream, ExpectedVersion::Any, &[event(i)], &json!({}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for s in 0..4 {
        let stream = format!("shared-{s}");
        let events = store.read_stream(&stream, 1, 1000).await.unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=80).collect::<Vec<u64>>());
        assert!(verify_stream(&db.pool, &stream).await.unwrap().valid);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 640);
}

/// On a database whose `streams` table was never analyzed (every new
/// deployment, until autovacuum's first ANALYZE), a group of many appends
/// reads its heads by primary key: the planner once hashed the whole table
/// for them on every batch.
#[tokio::test]
async fn a_group_reads_its_heads_by_key_on_a_never_analyzed_table() {
    let db = TestDb::new().await;
    let pool = db.store().pool().clone();
    sqlx::query("ALTER TABLE streams SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO streams (stream_id, stream_type, version, last_hash, last_tx_id)
         SELECT 'probe-' || g, 'probe', 1, '\\x00', 1 FROM generate_series(1, 50000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    // 200 appends of one event each, to existing streams, as a busy group.
    let ok: i64 = sqlx::query_scalar(
        "WITH a AS (SELECT g FROM generate_series(1, 200) g)
         SELECT count(*) FILTER (WHERE outcome = 'ok') FROM fulcrum_append_group(
           (SELECT array_agg('probe-' || (g * 7)) FROM a), (SELECT array_agg('probe'::text) FROM a),
           (SELECT array_agg(NULL::bigint) FROM a), (SELECT array_agg(1::bigint) FROM a),
           (SELECT array_agg('\\x00'::bytea) FROM a), (SELECT array_agg(g::int) FROM a),
           (SELECT array_agg(now()) FROM a), (SELECT array_agg(1) FROM a),
           (SELECT array_agg(g::int) FROM a), (SELECT array_agg(2::bigint) FROM a),
           (SELECT array_agg(gen_random_uuid()) FROM a), (SELECT array_agg('Counted'::text) FROM a),
           (SELECT array_agg(1) FROM a), (SELECT array_agg('{}'::jsonb) FROM a),
           (SELECT array_agg('{}'::jsonb) FROM a), (SELECT array_agg('\\x01'::bytea) FROM a))",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(ok, 200, "every append of the group was written");
    let (seq_scans, index_scans): (i64, i64) = sqlx::query_as(
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'streams'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        seq_scans, 0,
        "no full scan of streams ({index_scans} index scans)"
    );
    tx.rollback().await.unwrap();
}
