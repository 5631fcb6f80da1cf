//! The roles a process runs, each a task of one [`JoinSet`] under one stop
//! signal: starting them, and stopping them all once one ends or the
//! signal comes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use eventstore::leader::SingleActive;
use eventstore::seal::SealKey;
use eventstore::EventStore;
use projections::Projection;
use saga::gateway::{PgBooks, SandboxConfig, SandboxGateway};
use saga::Orchestrator;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Background;
use crate::config::Role;

/// The running roles: each task ends with its role's name and how it ended.
pub(super) type Tasks = JoinSet<(String, anyhow::Result<()>)>;

/// Resolves once `stop` carries `true` (or its sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Starts the HTTP server (role `api`) on `listener`, limiting requests
/// per client address to `rate_limit` a second (0: no limit).
pub(super) fn spawn_http(
    tasks: &mut Tasks,
    listener: TcpListener,
    router: Router,
    rate_limit: u32,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving HTTP");
    let stop = stopped(stop);
    tasks.spawn(async move {
        let addresses = Arc::new(crate::ratelimit::Limit::per_second(rate_limit));
        let served = crate::serve::serve(listener, router, addresses, stop)
            .await
            .context("HTTP server failed");
        ("api".to_owned(), served)
    });
    Ok(())
}

/// Starts the background roles `background` was configured with: relay,
/// projectors (and the local feed), sealer and saga.
pub(super) fn spawn_background(
    tasks: &mut Tasks,
    background: &Background,
    stop: &watch::Receiver<bool>,
) {
    if background.roles.contains(&Role::Relay) {
        spawn_relay(tasks, background, stop);
    }
    if background.roles.contains(&Role::Projector) {
        spawn_projectors(tasks, background, stop);
    }
    if let (true, Some((key, interval))) = (
        background.roles.contains(&Role::Sealer),
        background.seal.clone(),
    ) {
        spawn_sealer(tasks, &background.store, key, interval, stop);
    }
    if background.roles.contains(&Role::Saga) {
        spawn_saga(tasks, background, stop);
    }
}

/// Starts the relay. Any number of processes may run the relay role; one
/// publishes, the others stand by.
fn spawn_relay(tasks: &mut Tasks, background: &Background, stop: &watch::Receiver<bool>) {
    let store = background.store.clone();
    let config = background.kafka.relay();
    let stats = background.metrics.relay();
    let stop = stopped(stop);
    tasks.spawn(async move {
        let relayed = SingleActive::new(&store, "relay")
            .run(stop, |stop| {
                let relay = eventstore::Relay::new(store.clone(), config.clone());
                let stats = stats.clone();
                async move { relay?.with_stats(stats).run(stop).await }
            })
            .await
            .context("relay failed");
        ("relay".to_owned(), relayed)
    });
}

/// Starts one projector per projection, and the local feed: this
/// process's own writes reach its read models at once; the projectors'
/// copies of them are then duplicates.
fn spawn_projectors(tasks: &mut Tasks, background: &Background, stop: &watch::Receiver<bool>) {
    for projection in Projection::ALL {
        let store = background.store.clone();
        let config = background.kafka.projector();
        let stop = stopped(stop);
        let probe = background.metrics.projector(projection);
        tasks.spawn(async move {
            let projected = projections::worker::run(store, projection, config, probe, stop)
                .await
                .with_context(|| format!("{projection} projector failed"));
            (format!("projector {projection}"), projected)
        });
    }
    let fed = Projection::ALL
        .into_iter()
        .map(|projection| (projection, background.metrics.projector(projection)))
        .collect();
    let (store, stop) = (background.store.clone(), stopped(stop));
    tasks.spawn(async move {
        projections::local::run(store, fed, stop).await;
        ("local feed".to_owned(), Ok(()))
    });
}

/// Starts the sealer: one process at a time seals what is new with `key`
/// every `interval`.
fn spawn_sealer(
    tasks: &mut Tasks,
    store: &EventStore,
    key: SealKey,
    interval: Duration,
    stop: &watch::Receiver<bool>,
) {
    let store = store.clone();
    let stop = stopped(stop);
    tasks.spawn(async move {
        let sealed = SingleActive::new(&store, "sealer")
            .run(stop, |stop| {
                eventstore::seal::run(store.pool().clone(), key.clone(), interval, stop)
            })
            .await
            .context("sealer failed");
        ("sealer".to_owned(), sealed)
    });
}

/// Starts the order saga: the sandbox payment gateway, its webhook and
/// the orchestrator, as one role task.
fn spawn_saga(tasks: &mut Tasks, background: &Background, stop: &watch::Receiver<bool>) {
    let config = background.saga.config(background.kafka.consumer());
    // The sandbox's books in Postgres: any process may capture, void or
    // refund what another authorised, and they outlive a restart.
    let books = std::sync::Arc::new(PgBooks::new(background.store.pool().clone()));
    let (gateway, callbacks) = SandboxGateway::with_books(
        SandboxConfig {
            // `tok_late` approves a second after the saga gave up on it.
            late_delay: config.payment_deadline + std::time::Duration::from_secs(1),
            ..SandboxConfig::default()
        },
        books,
    );
    let sagas = saga::SagaStore::new(background.store.clone());
    let commands = background.commands.clone();
    let orchestrator = Orchestrator::new(
        sagas.clone(),
        commands.clone(),
        gateway,
        config,
        background.metrics.saga(),
    );
    let local = Some(orchestrator.local_facts());
    let _ = background.local_saga.set(orchestrator.local_facts());
    let webhook = saga::webhook::run(sagas, commands, callbacks, local, stopped(stop));
    let stop = stopped(stop);
    tasks.spawn(async move {
        let webhook = tokio::spawn(webhook);
        let run = orchestrator
            .run(stop)
            .await
            .context("saga orchestrator failed");
        let _ = webhook.await;
        ("saga".to_owned(), run)
    });
}

/// Runs until `stop` resolves or a role ends, then tells every role to stop
/// (through `stop_tx`) and waits for them all: the first failure, if any.
pub(super) async fn supervise(
    mut tasks: Tasks,
    stop: impl Future<Output = ()>,
    stop_tx: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut failure = None;
    tokio::select! {
        () = stop => {}
        Some(done) = tasks.join_next() => {
            failure = Some(ended(done));
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        let error = ended(done);
        if failure.is_none() {
            failure = Some(error);
        }
    }
    match failure {
        Some(Err(error)) => Err(error),
        _ => Ok(()),
    }
}

/// Logs how a role's task ended; an error when it failed, or when it
/// stopped before it was told to.
fn ended(done: Result<(String, anyhow::Result<()>), tokio::task::JoinError>) -> anyhow::Result<()> {
    match done {
        Ok((role, Ok(()))) => {
            tracing::info!(%role, "stopped");
            Ok(())
        }
        Ok((role, Err(error))) => {
            tracing::error!(%role, error = format!("{error:#}"), "role failed; stopping the others");
            Err(error)
        }
        Err(error) => Err(anyhow::anyhow!("a role's task panicked: {error}")),
    }
}
