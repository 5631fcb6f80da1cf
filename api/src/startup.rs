//! Start-up as a value: [`Application::build`] then [`Application::run_until_stopped`].

mod roles;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::extract::FromRef;
use axum::Router;
use commands::{CommandHandler, ExecutorConfig};
use eventstore::seal::SealKey;
use eventstore::EventStore;
use projections::status::OnError;
use tokio::net::TcpListener;
use tokio::sync::watch;

use roles::Tasks;

use crate::auth::Authenticator;
use crate::config::{DatabaseConfig, KafkaConfig, Role, SagaSettings, ServeConfig};
use crate::metrics::Metrics;
use crate::{routes, telemetry};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The event store (and through it the pool).
    pub store: EventStore,
    /// Carries out commands.
    pub commands: CommandHandler,
    /// The order sagas (for the operator routes).
    pub sagas: saga::SagaStore,
    /// Verifies bearer tokens.
    pub auth: Arc<Authenticator>,
    /// What a rebuild does with an event it cannot apply: as the
    /// projectors do (`FULCRUM_PROJECTION_ON_ERROR`).
    pub projection_on_error: OnError,
    /// The key seals are signed with (`FULCRUM_SEAL_KEY`), for sealing on
    /// demand and for serving the public key.
    pub seal_key: Option<SealKey>,
    /// The process's metrics registry, served at `/metrics`; the roles this
    /// process runs count on its series.
    pub metrics: Arc<Metrics>,
    /// This process's saga orchestrator, once the `saga` role runs here:
    /// an order placed here starts its saga at once (its Kafka copy is
    /// then a no-op).
    pub local_saga: Arc<OnceLock<saga::LocalFacts>>,
}

impl AppState {
    /// The state of a server over `store` checking tokens with `auth`, with
    /// the defaults of `fulcrum serve`: a command handler with the default
    /// settings, projections halting on an event they cannot apply, no seal
    /// key, and a fresh metrics registry. Tests and benchmarks start here.
    pub fn new(store: EventStore, auth: Authenticator) -> AppState {
        AppState {
            commands: CommandHandler::new(store.clone(), ExecutorConfig::default()),
            sagas: saga::SagaStore::new(store.clone()),
            metrics: Arc::new(Metrics::new(&store)),
            store,
            auth: Arc::new(auth),
            projection_on_error: OnError::Halt,
            seal_key: None,
            local_saga: Arc::default(),
        }
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// A built, bound, not yet running process: the HTTP server (role `api`)
/// and the background roles (`relay`, `projector`) it was configured with.
pub struct Application {
    http: Option<(TcpListener, Router)>,
    background: Option<Background>,
    /// Requests per second per client address (0: no limit).
    rate_limit: u32,
}

/// What the relay and the projectors need.
struct Background {
    store: EventStore,
    roles: Vec<Role>,
    kafka: KafkaConfig,
    saga: SagaSettings,
    /// The sealer's key and interval.
    seal: Option<(SealKey, std::time::Duration)>,
    /// Shared with the HTTP server: one cache and one queue per stream in
    /// the process.
    commands: CommandHandler,
    /// The series the roles count on (served at `/metrics` by the `api` role).
    metrics: Arc<Metrics>,
    /// Shared with the HTTP server: set when the saga role starts.
    local_saga: Arc<OnceLock<saga::LocalFacts>>,
}

/// Connects to the database (creating it if missing) and applies migrations.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> anyhow::Result<EventStore> {
    let pool = eventstore::db::connect(&config.database_url, config.database_max_connections)
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
    eventstore::db::migrate(&pool)
        .await
        .context("applying migrations")?;
    Ok(EventStore::new(pool))
}

impl Application {
    /// Checks the token settings, connects, migrates and binds `config.addr`.
    /// With the `api` role, refuses to start without a token key (unless
    /// `--dev`) or with an HS256 secret under 32 bytes.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let serves_http = config.roles.contains(&Role::Api);
        // Only the HTTP server checks tokens: a relay or projector process needs no key.
        let auth = if serves_http {
            let auth = Authenticator::from_config(&config.jwt).context("token settings")?;
            if auth.is_dev() {
                tracing::warn!(
                    "DEVELOPMENT MODE: tokens are signed with the public development secret; \
                     anyone can mint any role. Set JWT_SECRET (or JWT_PUBLIC_KEY_PEM) in production."
                );
            }
            Some(auth.with_rate_limit(config.rate_limit))
        } else {
            None
        };
        let seal_key = config.seal.key(config.jwt.dev).context("seal key")?;
        match &seal_key {
            Some(key) if key.is_ephemeral() => tracing::warn!(
                public_key = %key.public_key_hex(),
                "DEVELOPMENT MODE: seals are signed with a key made up for this run; \
                 nobody can check them after it. Set FULCRUM_SEAL_KEY in production."
            ),
            None if config.roles.contains(&Role::Sealer) => anyhow::bail!(
                "the sealer role needs a signing key: set FULCRUM_SEAL_KEY to a PKCS#8 \
                 Ed25519 PEM or its path (`fulcrum audit keygen` makes one), pass --dev \
                 for a key of this run only, or leave sealer out of FULCRUM_ROLES"
            ),
            _ => {}
        }
        let store = connect_and_migrate(&config.database).await?;
        let executor = ExecutorConfig {
            snapshot_every: config.snapshot_every,
            ..ExecutorConfig::default()
        };
        let commands = CommandHandler::new(store.clone(), executor);
        let metrics = Arc::new(Metrics::new(&store));
        let local_saga: Arc<OnceLock<saga::LocalFacts>> = Arc::default();
        let background = Background {
            store: store.clone(),
            roles: config.roles.clone(),
            kafka: config.kafka.clone(),
            saga: config.saga.clone(),
            seal: seal_key.clone().map(|key| {
                (
                    key,
                    std::time::Duration::from_millis(config.seal.seal_interval_ms.max(10)),
                )
            }),
            commands: commands.clone(),
            metrics: metrics.clone(),
            local_saga: local_saga.clone(),
        };
        let mut app = if let Some(auth) = auth {
            let state = AppState {
                commands,
                sagas: saga::SagaStore::new(store.clone()),
                store,
                auth: Arc::new(auth),
                projection_on_error: config.kafka.projection_on_error,
                seal_key,
                metrics,
                local_saga,
            };
            Self::with_state(state, config.addr).await?
        } else {
            Application {
                http: None,
                background: None,
                rate_limit: 0,
            }
        };
        app.background = Some(background);
        app.rate_limit = config.rate_limit;
        Ok(app)
    }

    /// Binds `addr` and serves `state` (tests pass their own database and keys).
    pub async fn with_state(state: AppState, addr: SocketAddr) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let router = telemetry::layer(routes::router(state));
        Ok(Application {
            http: Some((listener, router)),
            background: None,
            rate_limit: 0,
        })
    }

    /// Limits requests per client address to `per_second` (burst as many;
    /// 0: no limit, the default of [`Application::with_state`]).
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// The bound address (useful when binding port 0); an error when this
    /// process does not run the `api` role.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.http {
            Some((listener, _)) => listener.local_addr(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "this process does not serve HTTP (no api role)",
            )),
        }
    }

    /// Runs every configured role until SIGTERM or ctrl-c, then stops them
    /// all: HTTP finishes in-flight requests, the relay its current batch;
    /// a projector's unfinished batch rolls back (Kafka redelivers it). When
    /// one role fails, the others are stopped too and the error is returned.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// [`Application::run_until_stopped`] with a custom stop signal.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Tasks::new();
        if let Some((listener, router)) = self.http {
            roles::spawn_http(&mut tasks, listener, router, self.rate_limit, &stop_rx)?;
        }
        if let Some(background) = self.background {
            roles::spawn_background(&mut tasks, &background, &stop_rx);
        }
        roles::supervise(tasks, stop, stop_tx).await
    }
}

/// Resolves on the first of SIGTERM and ctrl-c (SIGINT). The handlers are
/// installed when this is called, not when it is first polled: call it
/// before slow start-up work, so that a signal during start-up is not
/// fatal but stops the process once it runs.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot listen for SIGTERM or SIGINT; using ctrl-c only");
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; draining");
    }
}
