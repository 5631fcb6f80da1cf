//! Start-up as a value: [`Application::build`] then [`Application::run_until_stopped`].

use std::net::SocketAddr;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::FromRef;
use axum::Router;
use commands::{CommandHandler, ExecutorConfig};
use eventstore::EventStore;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::{DatabaseConfig, ServeConfig};
use crate::{routes, telemetry};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The event store (and through it the pool).
    pub store: EventStore,
    /// Carries out commands.
    pub commands: CommandHandler,
    /// Verifies bearer tokens.
    pub auth: Arc<Authenticator>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: Router,
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
    /// Refuses to start without a token key (unless `--dev`) or with an
    /// HS256 secret under 32 bytes.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let auth = Authenticator::from_config(&config.jwt).context("token settings")?;
        if auth.is_dev() {
            tracing::warn!(
                "DEVELOPMENT MODE: tokens are signed with the public development secret; \
                 anyone can mint any role. Set JWT_SECRET (or JWT_PUBLIC_KEY_PEM) in production."
            );
        }
        let store = connect_and_migrate(&config.database).await?;
        let executor = ExecutorConfig {
            snapshot_every: config.snapshot_every,
            ..ExecutorConfig::default()
        };
        let state = AppState {
            commands: CommandHandler::new(store.clone(), executor),
            store,
            auth: Arc::new(auth),
        };
        Self::with_state(state, config.addr).await
    }

    /// Binds `addr` and serves `state` (tests pass their own database and keys).
    pub async fn with_state(state: AppState, addr: SocketAddr) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let router = telemetry::layer(routes::router(state));
        Ok(Application { listener, router })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGTERM or ctrl-c, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "serving HTTP");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server failed")
    }
}

/// Resolves on the first of SIGTERM and ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received; draining");
}
