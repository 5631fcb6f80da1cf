//! Single-active roles: work that must run in one process at a time (the
//! relay, the sealer, the saga's timers), however many processes run it.
//!
//! Every process with the role runs a [`SingleActive`] under the same name.
//! The one that holds a Postgres session-level advisory lock on a connection
//! of its own does the work; the others wait as hot standbys and try the
//! lock again every [`SingleActive::poll`]. The lock belongs to the session,
//! so it is released the moment the holder's connection closes: on a clean
//! stop, and when the holder dies (the kernel closes a killed process's
//! socket and Postgres ends its session), so a standby takes over within
//! about one poll.
//!
//! The holder pings its lock connection every poll. When the ping fails
//! (Postgres restarted, the connection was cut), the lock may already be
//! someone else's: the work is told to stop, and the process goes back to
//! waiting for the lock.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::store::EventStore;

/// How often a standby tries the lock and the holder checks its connection.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// A role that runs in one process at a time. See the [module
/// documentation](self).
#[derive(Debug, Clone)]
pub struct SingleActive {
    name: String,
    options: PgConnectOptions,
    poll: Duration,
}

/// Resolves when the work must stop: the process is stopping, or the lock
/// was lost.
pub type StopSignal = BoxFuture<'static, ()>;

impl SingleActive {
    /// The role `name` (e.g. `"relay"`), locked on `store`'s database.
    pub fn new(store: &EventStore, name: impl Into<String>) -> Self {
        let name = name.into();
        let options = (*store.pool().connect_options())
            .clone()
            .application_name(&format!("fulcrum-{name}-lock"));
        SingleActive {
            name,
            options,
            poll: DEFAULT_POLL,
        }
    }

    /// Sets how often a standby tries the lock and the holder checks it.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` whenever this process holds the role's lock, until
    /// `shutdown` resolves.
    ///
    /// `work` gets a [`StopSignal`]; it must return soon after the signal
    /// resolves. When it returns an error, or returns on its own before it
    /// was told to stop, that is the answer of `run` (the lock is released).
    /// When the lock is lost, the work is stopped and, once it returned,
    /// this process waits for the lock again.
    pub async fn run<F, Fut, E>(
        self,
        shutdown: impl Future<Output = ()>,
        mut work: F,
    ) -> Result<(), E>
    where
        F: FnMut(StopSignal) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        tokio::pin!(shutdown);
        loop {
            let mut conn = tokio::select! {
                () = &mut shutdown => return Ok(()),
                conn = self.acquire() => conn,
            };
            tracing::info!(role = %self.name, "holding the single-active lock; running");
            let (stop_tx, stop_rx) = watch::channel(false);
            let signal = async move {
                let mut rx = stop_rx;
                let _ = rx.wait_for(|stop| *stop).await;
            }
            .boxed();
            let running = work(signal);
            tokio::pin!(running);
            tokio::select! {
                result = &mut running => {
                    let _ = conn.close().await;
                    return result;
                }
                () = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    let result = running.await;
                    let _ = conn.close().await;
                    return result;
                }
                () = watch_lock(&mut conn, self.poll) => {
                    tracing::warn!(
                        role = %self.name,
                        "lost the single-active lock's connection; stopping and waiting for the lock again"
                    );
                    let _ = stop_tx.send(true);
                    running.await?;
                }
            }
        }
    }

    /// Waits until this process holds the lock, on a connection of its own.
    async fn acquire(&self) -> PgConnection {
        let mut waiting_logged = false;
        let mut conn: Option<PgConnection> = None;
        loop {
            if conn.is_none() {
                match PgConnection::connect_with(&self.options).await {
                    Ok(c) => conn = Some(c),
                    Err(error) => {
                        tracing::warn!(role = %self.name, %error, "cannot connect for the single-active lock; retrying");
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                match try_lock(c, &self.name).await {
                    Ok(true) => {
                        if let Some(c) = conn.take() {
                            return c;
                        }
                    }
                    Ok(false) => {
                        if !waiting_logged {
                            tracing::info!(role = %self.name, "another process holds the single-active lock; standing by");
                            waiting_logged = true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(role = %self.name, %error, "single-active lock query failed; reconnecting");
                        conn = None;
                    }
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// The advisory lock key of role `name`.
const KEY_SQL: &str = "hashtextextended('fulcrum.single-active.' || $1, 0)";

async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Resolves when the lock connection stops answering.
async fn watch_lock(conn: &mut PgConnection, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        let ping = tokio::time::timeout(poll.max(Duration::from_secs(2)), conn.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            return;
        }
    }
}

/// Whether any session holds the lock of role `name` (for tests and
/// operators' checks).
pub async fn is_held(store: &EventStore, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND ((classid::bigint << 32) | objid::bigint) = {KEY_SQL})"
    ))
    .bind(name)
    .fetch_one(store.pool())
    .await
}
