//! Seals: signed Merkle roots over the whole log, their verification and
//! inclusion proofs; every kind of tampering is caught and named.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use eventstore::seal::{
    self, check_proof, proof_for, seal_now, verify_seals, FindingKind, ProofError, SealKey,
    SealReport,
};
use eventstore::testing::TestDb;
use eventstore::{Checkpoint, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;

async fn write(store: &EventStore, stream: &str, n: usize) {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::new("Counted", 1, json!({"n": i})))
        .collect();
    store
        .append(
            stream,
            ExpectedVersion::Any,
            &events,
            &json!({"correlation_id": "c"}),
        )
        .await
        .unwrap();
}

/// Three streams of three events each, all sealed.
async fn sealed_store() -> (TestDb, EventStore, SealKey) {
    let db = TestDb::new().await;
    let store = db.store();
    for stream in ["counter-a", "counter-b", "counter-c"] {
        write(&store, stream, 3).await;
    }
    let key = SealKey::ephemeral();
    // One seal of all nine: wait until the gap-free horizon (cluster-wide:
    // any transaction of any test holds it back) has passed them.
    let total = event_count(&db).await;
    wait_until_readable(&store, total).await;
    let sealed = seal_now(&db.pool, &key).await.unwrap().unwrap();
    assert_eq!((sealed.seal_id, sealed.tree_size), (1, 9));
    (db, store, key)
}

async fn event_count(db: &TestDb) -> u64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    n as u64
}

/// Waits until gap-free readers see `n` events.
async fn wait_until_readable(store: &EventStore, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while (store
        .read_all(Checkpoint::START, 100_000)
        .await
        .unwrap()
        .len() as u64)
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "events never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Seals until the seals cover `n` events.
async fn seal_until(db: &TestDb, key: &SealKey, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        seal_now(&db.pool, key).await.unwrap();
        let covered = seal::latest_seal(&db.pool)
            .await
            .unwrap()
            .map_or(0, |s| s.tree_size);
        if covered >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seals never covered {n} events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn verify(db: &TestDb, key: &SealKey) -> SealReport {
    verify_seals(&db.pool, Some(key.public_key()), |_, _| {})
        .await
        .unwrap()
}

async fn position(db: &TestDb, stream: &str, version: i64) -> i64 {
    sqlx::query_scalar("SELECT position FROM events WHERE stream_id = $1 AND version = $2")
        .bind(stream)
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn sql(db: &TestDb, statement: &str) {
    sqlx::raw_sql(statement).execute(&db.pool).await.unwrap();
}

#[tokio::test]
async fn seals_chain_and_verify_and_an_untouched_store_is_valid() {
    let (db, store, key) = sealed_store().await;
    assert!(
        seal_now(&db.pool, &key).await.unwrap().is_none(),
        "nothing new, no seal"
    );
    write(&store, "counter-d", 2).await;
    wait_until_readable(&store, 11).await;
    let second = seal_now(&db.pool, &key).await.unwrap().unwrap();
    assert_eq!((second.seal_id, second.tree_size, second.added), (2, 11, 2));
    let first = &seal::list_seals(&db.pool, 0, 10).await.unwrap()[0];
    assert_eq!(second.previous, first.root);
    assert_eq!(first.previous, "0".repeat(64));
    assert_eq!(second.up_to_position, position(&db, "counter-d", 2).await);

    let report = verify(&db, &key).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(
        (
            report.seals_checked,
            report.events_checked,
            report.sealed_events
        ),
        (2, 11, 11)
    );
    // Events no seal covers yet are still chain-checked, and fine.
    write(&store, "counter-e", 1).await;
    wait_until_readable(&store, 12).await;
    let report = verify(&db, &key).await;
    assert!(report.valid);
    assert_eq!(report.events_checked, 12);
}

#[tokio::test]
async fn an_altered_row_is_caught_and_named() {
    let (db, _store, key) = sealed_store().await;
    sql(
        &db,
        "UPDATE events SET data = '{\"n\": 99}' WHERE stream_id = 'counter-b' AND version = 2",
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Altered);
    assert_eq!(finding.seal_id, Some(1));
    assert_eq!(finding.stream_id.as_deref(), Some("counter-b"));
    assert_eq!(finding.version, Some(2));

    // Rewriting the hash chain to match does not help: the seal remembers.
    let (db, _store, key) = sealed_store().await;
    sql(
        &db,
        "UPDATE events SET hash = sha256(hash) WHERE stream_id = 'counter-c' AND version = 3",
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Altered);
    assert_eq!(finding.version, Some(3));
}

#[tokio::test]
async fn a_deleted_stream_and_a_deleted_last_event_are_caught_by_the_seals() {
    let (db, _store, key) = sealed_store().await;
    let gone = position(&db, "counter-b", 1).await;
    // The whole stream, head included: its own chain has nothing left to check.
    sql(&db, "DELETE FROM events WHERE stream_id = 'counter-b'; DELETE FROM streams WHERE stream_id = 'counter-b'").await;
    assert!(
        eventstore::verify_stream(&db.pool, "counter-b")
            .await
            .unwrap()
            .valid
    );
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Missing);
    assert_eq!(finding.seal_id, Some(1));
    assert_eq!(finding.global_position, Some(gone));

    let (db, _store, key) = sealed_store().await;
    let last = position(&db, "counter-c", 3).await;
    sql(&db, "DELETE FROM events WHERE stream_id = 'counter-c' AND version = 3; UPDATE streams SET version = 2, last_hash = (SELECT hash FROM events WHERE stream_id = 'counter-c' AND version = 2) WHERE stream_id = 'counter-c'").await;
    assert!(
        eventstore::verify_stream(&db.pool, "counter-c")
            .await
            .unwrap()
            .valid
    );
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Missing);
    assert_eq!(finding.global_position, Some(last));
    assert_eq!(finding.leaf_index, Some(8));
}

#[tokio::test]
async fn swapped_positions_and_an_inserted_event_are_caught() {
    let (db, _store, key) = sealed_store().await;
    let a = position(&db, "counter-a", 2).await;
    let b = position(&db, "counter-c", 1).await;
    sql(
        &db,
        &format!(
            "ALTER TABLE events ALTER COLUMN position DROP IDENTITY;
             UPDATE events SET position = -1 WHERE position = {a};
             UPDATE events SET position = {a} WHERE position = {b};
             UPDATE events SET position = {b} WHERE position = -1;"
        ),
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Reordered, "{finding:?}");
    assert_eq!(finding.seal_id, Some(1));

    let (db, _store, key) = sealed_store().await;
    // A forged event slipped in among the sealed ones (an old transaction
    // id puts it before the seal's checkpoint).
    sql(
        &db,
        "INSERT INTO events (position, tx_id, stream_id, stream_type, version, event_id, event_type,
                             schema_version, data, metadata, recorded_at, hash)
         OVERRIDING SYSTEM VALUE
         SELECT 1000, tx_id, 'counter-z', 'counter', 1, gen_random_uuid(), 'Counted', 1, '{}', '{}', now(), hash
           FROM events ORDER BY tx_id, position LIMIT 1",
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::Inserted, "{finding:?}");
    assert_eq!(finding.global_position, Some(1000));
}

#[tokio::test]
async fn an_altered_signature_or_a_foreign_key_is_caught() {
    let (db, _store, key) = sealed_store().await;
    sql(
        &db,
        "UPDATE seals SET signature = overlay(signature placing '\\x00'::bytea from 1 for 1)",
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::BadSignature);
    assert_eq!(finding.seal_id, Some(1));

    let (db, _store, _key) = sealed_store().await;
    let other = SealKey::ephemeral();
    let finding = verify(&db, &other).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::BadSignature);

    // Re-signing altered seal data with the store's own key still fails
    // against the stored events hashing to the root.
    let (db, _store, key) = sealed_store().await;
    sql(
        &db,
        "UPDATE seals SET event_hashes = overlay(event_hashes placing '\\x00'::bytea from 1 for 1)",
    )
    .await;
    let finding = verify(&db, &key).await.finding.unwrap();
    assert_eq!(finding.kind, FindingKind::SealData);
}

#[tokio::test]
async fn proofs_check_offline_and_a_proof_of_another_event_is_refused() {
    let (db, store, key) = sealed_store().await;
    let events = store.read_all(Checkpoint::START, 100).await.unwrap();
    for event in &events {
        let proof = proof_for(&db.pool, event.event_id).await.unwrap();
        assert_eq!(proof.tree_size, 9);
        assert_eq!(proof.event_hash, event.hash);
        let check = check_proof(&proof, Some(key.public_key()));
        assert!(check.valid, "{check:?}");
    }
    let proof = proof_for(&db.pool, events[4].event_id).await.unwrap();
    // Another event's hash with this event's path: refused.
    let mut forged = proof.clone();
    forged.event_hash = events[5].hash.clone();
    assert!(!check_proof(&forged, Some(key.public_key())).valid);
    // Another index, a bigger tree, an altered root or another key: refused.
    let mut forged = proof.clone();
    forged.leaf_index = 5;
    assert!(!check_proof(&forged, Some(key.public_key())).valid);
    let mut forged = proof.clone();
    forged.tree_size = 10;
    assert!(!check_proof(&forged, Some(key.public_key())).valid);
    assert!(!check_proof(&proof, Some(SealKey::ephemeral().public_key())).valid);

    // An event no seal covers yet, an unknown one, an altered one.
    write(&store, "counter-x", 1).await;
    let fresh = store.read_stream("counter-x", 1, 1).await.unwrap();
    assert!(matches!(
        proof_for(&db.pool, fresh[0].event_id).await,
        Err(ProofError::NotSealed(_))
    ));
    assert!(matches!(
        proof_for(&db.pool, uuid::Uuid::new_v4()).await,
        Err(ProofError::NoSuchEvent(_))
    ));
    sqlx::query("UPDATE events SET hash = sha256(hash) WHERE event_id = $1")
        .bind(events[2].event_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        proof_for(&db.pool, events[2].event_id).await,
        Err(ProofError::AlteredSinceSealed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealing_while_eight_writers_append_leaves_no_event_between_seals() {
    let db = TestDb::with_pool_size(12).await;
    let store = db.store();
    let key = Arc::new(SealKey::ephemeral());
    let seals_made = Arc::new(AtomicUsize::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let sealer = {
        let pool = db.pool.clone();
        let key = key.clone();
        let (writing, seals_made) = (writing.clone(), seals_made.clone());
        tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                if seal_now(&pool, &key).await.unwrap().is_some() {
                    seals_made.fetch_add(1, Ordering::SeqCst);
                }
                // The sealer's interval, shortened.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    // Each writer appends at least 40 times, and goes on until the sealer
    // has sealed three times while it wrote.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            let seals_made = seals_made.clone();
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let mut i = 0;
                while i < 40
                    || (seals_made.load(Ordering::SeqCst) < 3
                        && std::time::Instant::now() < deadline)
                {
                    write(&store, &format!("counter-w{w}-{}", i % 5), 1 + i % 3).await;
                    i += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    sealer.await.unwrap();
    let during = seals_made.load(Ordering::SeqCst);
    assert!(during >= 3, "only {during} seals while writing");
    let total = event_count(&db).await;
    seal_until(&db, &key, total).await;

    let report = verify(&db, &key).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(report.sealed_events, total);
    // The seals' added events, in seal order, are the global order exactly.
    let seals = seal::list_seals(&db.pool, 0, 1000).await.unwrap();
    assert!(seals.len() >= 3);
    assert_eq!(seals.iter().map(|s| s.added).sum::<u64>(), total);
    let order: Vec<i64> = store
        .read_all(Checkpoint::START, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    let mut boundary = 0u64;
    for s in &seals {
        boundary += s.added;
        assert_eq!(order[boundary as usize - 1], s.up_to_position);
    }
}
