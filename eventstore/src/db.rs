//! Connecting to Postgres: create the database when missing, apply migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::StoreError;

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in `url` if it does not exist, connecting to
/// the server's `postgres` database to do so.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// A pool for `url` with at most `max_connections`, after creating the
/// database if it is missing.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    create_database_if_missing(url).await?;
    let options = PgConnectOptions::from_str(url)?.log_statements(tracing::log::LevelFilter::Trace);
    let pool = pool_options(max_connections).connect_with(options).await?;
    Ok(pool)
}

/// How long a caller waits for a pooled connection before the attempt
/// fails (`PoolTimedOut`). Short: while the database is down, requests
/// answer 503 within about this long instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool settings [`connect`] uses: `max_connections`, and
/// [`ACQUIRE_TIMEOUT`].
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// Migrations whose text changed after they landed, each with the SHA-384
/// checksum it landed with. Landed migrations are immutable (a change goes
/// into a new migration); these predate that rule's check
/// (`eventstore/tests/migrations.rs`). A database that applied the earlier
/// text is recorded as having applied the current one, which [`migrate`]
/// may do because a later migration replaces what changed:
/// `20261202000011_append_group.sql` was edited 16 minutes after it landed
/// (its lock loop became one statement, same behaviour), and
/// `20261207000001_append_group_lookup.sql` replaces the function it
/// defines. Without this, sqlx refuses such a database ("previously applied
/// but has been modified").
pub const AMENDED: &[(i64, &str)] = &[(
    20261202000011,
    "afc1bcde6926a18c34b3e1299b44daf11224fd6ab0ca76aacc56a13c17d065e5adcc7d06c2390e930875abd0d4b82f2f",
)];

/// Applies pending migrations (safe to run from several processes at once),
/// after recording the [`AMENDED`] migrations a database applied in their
/// earlier text as applied in their current one.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    for (version, landed) in AMENDED {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        let Ok(landed) = hex::decode(landed) else {
            continue;
        };
        let amended = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
        )
        .bind(current.checksum.as_ref())
        .bind(version)
        .bind(landed)
        .execute(pool)
        .await;
        match amended {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(
                    version,
                    "recorded an amended migration as applied in its current text"
                );
            }
            Ok(_) => {}
            // A new database: no migrations table yet.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => break,
            Err(e) => return Err(e.into()),
        }
    }
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// True when every embedded migration is applied to the database.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, StoreError> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(v) => v,
            // No migrations table yet.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.contains(&m.version)))
}
