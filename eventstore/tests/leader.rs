//! Single-active roles: however many processes run a role, one works at a
//! time, and a standby takes over when the holder dies or loses its lock.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::leader::{self, SingleActive};
use eventstore::testing::TestDb;
use eventstore::EventStore;
use tokio::task::JoinHandle;

/// Who is working now, and the most that ever worked at once.
#[derive(Default)]
struct Board {
    active: AtomicUsize,
    most: AtomicUsize,
    holder: Mutex<Option<usize>>,
    runs: AtomicUsize,
}

fn contender(
    store: &EventStore,
    id: usize,
    board: Arc<Board>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<Result<(), std::convert::Infallible>> {
    let role = SingleActive::new(store, "test-role").poll(Duration::from_millis(50));
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        role.run(
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
            |stop| {
                let board = board.clone();
                async move {
                    let now = board.active.fetch_add(1, Ordering::SeqCst) + 1;
                    board.most.fetch_max(now, Ordering::SeqCst);
                    board.runs.fetch_add(1, Ordering::SeqCst);
                    *board.holder.lock().unwrap() = Some(id);
                    stop.await;
                    *board.holder.lock().unwrap() = None;
                    board.active.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .await
    })
}

async fn wait_for_holder(board: &Board, not: Option<usize>) -> usize {
    for _ in 0..400 {
        let holder = *board.holder.lock().unwrap();
        if let Some(h) = holder {
            if Some(h) != not {
                return h;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no process took the role within 10 s");
}

#[tokio::test]
async fn one_of_many_works_and_a_standby_takes_over_when_the_holder_dies() {
    let db = TestDb::new().await;
    let store = db.store();
    let board = Arc::new(Board::default());
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks: Vec<Option<JoinHandle<_>>> = (0..6)
        .map(|id| Some(contender(&store, id, board.clone(), stop_rx.clone())))
        .collect();

    let mut previous = None;
    for _ in 0..5 {
        let holder = wait_for_holder(&board, previous).await;
        assert!(leader::is_held(&store, "test-role").await.unwrap());
        // Killing the task drops its lock connection, as a killed process would.
        tasks[holder].take().unwrap().abort();
        // The aborted work never ran its own bookkeeping.
        board.active.fetch_sub(1, Ordering::SeqCst);
        *board.holder.lock().unwrap() = None;
        previous = Some(holder);
    }
    wait_for_holder(&board, previous).await;
    assert_eq!(
        board.most.load(Ordering::SeqCst),
        1,
        "two held the role at once"
    );
    assert_eq!(board.runs.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_holder_whose_lock_connection_is_cut_stops_and_the_role_moves_on() {
    let db = TestDb::new().await;
    let store = db.store();
    let board = Arc::new(Board::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..2)
        .map(|id| contender(&store, id, board.clone(), stop_rx.clone()))
        .collect();
    wait_for_holder(&board, None).await;

    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE application_name = 'fulcrum-test-role-lock'
            AND datname = current_database()
            AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(cut, 1);

    // The holder notices, stops its work, and someone holds the role again.
    for _ in 0..400 {
        if board.runs.load(Ordering::SeqCst) >= 2 && board.active.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(board.runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        board.most.load(Ordering::SeqCst),
        1,
        "two held the role at once"
    );

    stop_tx.send(true).unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(board.active.load(Ordering::SeqCst), 0);
    // A closed session leaves pg_locks a moment after the client closed it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leader::is_held(&store, "test-role").await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock is still held 10 s after every contender stopped"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
