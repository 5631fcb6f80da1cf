//! Test support: a freshly created, migrated database per test
//! ([`TestDb`]) and a Kafka broker of a test's own ([`Broker`]).

mod broker;

pub use broker::Broker;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::{db, EventStore};

/// CPU time the machine has spent so far, in seconds, from `/proc/stat`:
/// user, nice, system, irq and softirq of every CPU, so neither idle time
/// nor time a hypervisor stole. On a shared VM the rates drift with the
/// neighbours; the CPU a unit of work costs drifts much less, so it is the
/// figure benchmarks compare builds by. 0 where `/proc/stat` is missing.
pub fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

/// A free TCP port on 127.0.0.1 (free when asked; a test binds it soon
/// after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free port on 127.0.0.1")
        .port()
}

/// Polls `check` every 20 ms until it is true; panics naming `what` after
/// `limit`. For conditions a test waits on (never a sleep in its place).
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The server tests use: `DATABASE_URL` (its database name is ignored), or
/// the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into())
}

/// This process's name of the migrated template ([`template`]).
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The advisory lock (on the server's `postgres` database) under which a
/// template is looked for and made, so that test processes running at
/// once make it once.
const TEMPLATE_LOCK: i64 = 0x0046_554c_4352_554d; // "FULCRUM"

/// The name of a database with every migration applied, made once per set
/// of migrations and server (`fulcrum_template_<hash of their checksums>`),
/// that test databases are copied from (`CREATE DATABASE ... TEMPLATE`):
/// much cheaper than migrating each. It is made as `<name>_building`,
/// migrated, emptied of connections and renamed, all under
/// [`TEMPLATE_LOCK`], so a template that exists is whole; one left half
/// made by a killed process is dropped and made again. Templates of other
/// migrations are left alone (a test process of another build may be
/// copying them); `DROP DATABASE` them by hand.
async fn template(base: &PgConnectOptions) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for migration in db::MIGRATOR.iter() {
        hash.update(migration.version.to_be_bytes());
        hash.update(&migration.checksum);
    }
    let name = format!("fulcrum_template_{}", &hex::encode(hash.finalize())[..16]);
    let building = format!("{name}_building");
    let admin = base.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .expect("Postgres is not reachable; is it running on DATABASE_URL?");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await
        .expect("could not take the template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("could not look for the template database");
    if !exists {
        for statement in [
            format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
            format!("CREATE DATABASE {building}"),
        ] {
            sqlx::query(&statement)
                .execute(&mut conn)
                .await
                .expect("could not make the template database");
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone().database(&building))
            .await
            .expect("could not connect to the template database");
        db::migrate(&pool).await.expect("migrations failed");
        pool.close().await;
        // The server ends a closed connection's backend a moment later;
        // a database with a backend cannot be renamed or copied.
        for _ in 0..1000 {
            let backends: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(&building)
                    .fetch_one(&mut conn)
                    .await
                    .expect("could not count the template's connections");
            if backends == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .await
            .expect("could not name the template database");
    }
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    name
}

/// A database that exists for one test: created with a random name as a
/// copy of the migrated template ([`template`]) on [`TestDb::new`], dropped
/// when the value is dropped.
pub struct TestDb {
    /// A pool on the test database.
    pub pool: PgPool,
    /// Connection URL of the test database.
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// Creates a fresh, migrated database. Panics when Postgres is unreachable.
    pub async fn new() -> TestDb {
        Self::with_pool_size(5).await
    }

    /// Like [`TestDb::new`], with a pool of `max_connections`.
    pub async fn with_pool_size(max_connections: u32) -> TestDb {
        let base =
            PgConnectOptions::from_str(&server_url()).expect("DATABASE_URL is not a valid URL");
        let admin = base.clone().database("postgres");
        let name = format!("fulcrum_test_{}", uuid::Uuid::new_v4().simple());
        let template = TEMPLATE.get_or_init(|| template(&base)).await.clone();
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("Postgres is not reachable; is it running on DATABASE_URL?");
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .expect("could not create the test database");
        let _ = conn.close().await;
        let options = base.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .expect("could not connect to the test database");
        let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is not a valid URL");
        url.set_path(&name);
        TestDb {
            pool,
            url: url.to_string(),
            name,
            admin,
        }
    }

    /// An event store on this database.
    pub fn store(&self) -> EventStore {
        EventStore::new(self.pool.clone())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}
