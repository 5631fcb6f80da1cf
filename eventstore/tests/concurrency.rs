//! Optimistic concurrency under many writers.
#![allow(clippy::unwrap_used)]

use eventstore::testing::TestDb;
use eventstore::{ExpectedVersion, NewEvent, StoreError};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_racing_on_one_stream_get_one_winner_per_version() {
    let db = TestDb::with_pool_size(50).await;
    let store = db.store();
    let writers = 50;
    let rounds = 10u64;

    // Every writer tries to append version v for v = 1..=rounds, expecting v-1.
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut lost = 0;
                for v in 1..=rounds {
                    let event = NewEvent::new("Claimed", 1, json!({"writer": w, "version": v}));
                    match store
                        .append(
                            "race-1",
                            ExpectedVersion::Exact(v - 1),
                            &[event],
                            &json!({}),
                        )
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.version, v);
                            won.push(v);
                        }
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            assert!(actual >= v, "a loser saw version {actual} < {v}");
                            lost += 1;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                (w, won, lost)
            })
        })
        .collect();
    let mut winners = vec![Vec::new(); rounds as usize + 1];
    let mut losses = 0;
    for t in tasks {
        let (w, won, lost) = t.await.unwrap();
        losses += lost;
        for v in won {
            winners[v as usize].push(w);
        }
    }

    for (v, won_by) in winners.iter().enumerate().skip(1) {
        assert_eq!(won_by.len(), 1, "version {v} had winners {won_by:?}");
    }
    assert_eq!(losses, writers as u64 * rounds - rounds);
    let events = store.read_stream("race-1", 1, 1000).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=rounds).collect::<Vec<_>>());
    for e in &events {
        assert_eq!(e.data["writer"], json!(winners[e.version as usize][0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_any_version_all_land_contiguously() {
    let db = TestDb::with_pool_size(32).await;
    let store = db.store();

    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let events = [
                        NewEvent::new("E", 1, json!({"w": w, "i": i})),
                        NewEvent::new("E", 1, json!({})),
                    ];
                    store
                        .append("hot-1", ExpectedVersion::Any, &events, &json!({}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let events = store.read_stream("hot-1", 1, 10_000).await.unwrap();
    assert_eq!(events.len(), 640);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as u64 + 1));
    assert!(
        eventstore::verify_stream(&db.pool, "hot-1")
            .await
            .unwrap()
            .valid
    );
}

/// `verify_stream` reads the events and the stream head in one snapshot:
/// read apart, an append committing in between leaves a head one version
/// ahead of the events read, which looks like a removed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verifying_a_stream_while_it_is_appended_to_finds_it_valid() {
    let db = TestDb::with_pool_size(16).await;
    let store = db.store();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let event = NewEvent::new("E", 1, json!({"w": w, "i": i}));
                    store
                        .append("busy-1", ExpectedVersion::Any, &[event], &json!({}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let verifiers: Vec<_> = (0..4)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let mut checks = 0;
                loop {
                    let v = eventstore::verify_stream(&pool, "busy-1").await.unwrap();
                    assert!(v.valid, "a stream under appends looked altered: {v:?}");
                    checks += 1;
                    if v.events_checked == 400 {
                        return checks;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for v in verifiers {
        assert!(
            v.await.unwrap() > 1,
            "no verification overlapped the appends"
        );
    }
}
