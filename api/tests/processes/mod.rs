//! Support for fault-injection tests with real `fulcrum serve` processes:
//! the built binary started on a port of its own over a shared database
//! and broker ([`Server`]), SIGKILLed and restarted; what Kafka holds, read
//! by consuming the topics ([`KafkaLog`]); and the checks every such test
//! makes (the store, a clean fold of the read models).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use eventstore::testing::{eventually, free_port};
use projections::Projection;
use serde_json::Value;
use sqlx::PgPool;

mod client;
mod kafka_log;
pub use client::*;
pub use kafka_log::KafkaLog;

/// What every `fulcrum serve` of one deployment shares.
#[derive(Clone)]
pub struct Deployment {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `KAFKA_BROKERS`.
    pub brokers: String,
    /// `FULCRUM_TOPIC_PREFIX`.
    pub prefix: String,
    /// `FULCRUM_SEAL_KEY` (PEM).
    pub seal_key: String,
}

/// A `fulcrum serve` child process with every default role, on its own
/// port; killed (SIGKILL) when dropped.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `fulcrum serve` for `deployment` on `port` (not waiting for it).
    pub fn start(deployment: &Deployment, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .arg("serve")
            .env("DATABASE_URL", &deployment.database_url)
            .env("DATABASE_MAX_CONNECTIONS", "15")
            .env("FULCRUM_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", SECRET)
            .env("KAFKA_BROKERS", &deployment.brokers)
            .env("FULCRUM_TOPIC_PREFIX", &deployment.prefix)
            .env("FULCRUM_SEAL_KEY", &deployment.seal_key)
            .env("FULCRUM_SEAL_INTERVAL_MS", "500")
            // Clients of these tests send more than the default allows
            // from one address; rate limits have their own tests.
            .env("FULCRUM_RATE_LIMIT", "0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the fulcrum binary");
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            child: Some(child),
        }
    }

    /// [`Server::start`], then waits until `/readyz` answers 200.
    pub async fn ready(deployment: &Deployment, port: u16) -> Server {
        let server = Server::start(deployment, port);
        server.wait_ready().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits (at most 60 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit.
    pub async fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        let status = status.expect("fulcrum serve did not stop within 30 s of SIGTERM");
        assert!(status.success(), "fulcrum serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every event id in the store.
pub async fn stored_event_ids(pool: &PgPool) -> HashSet<String> {
    sqlx::query_scalar::<_, String>("SELECT event_id::text FROM events")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Waits until every projection has applied every event of the store
/// (lag 0), at most `limit`.
pub async fn projections_caught_up(pool: &PgPool, limit: Duration) {
    eventually(limit, "the projections to catch up", move || async move {
        let info = projections::status::list(pool).await.unwrap();
        info.iter().all(|i| i.lag == 0)
    })
    .await;
}

/// Waits until the relay's checkpoint reached the store's last event: every
/// event is on Kafka again. The read models alone do not say so: the local
/// feed brings a process's own writes into them without Kafka.
pub async fn relay_caught_up(pool: &PgPool, limit: Duration) {
    eventually(
        limit,
        "the relay to deliver every event",
        move || async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT COALESCE((SELECT position FROM checkpoints WHERE name = $1), 0)
                 >= COALESCE((SELECT max(position) FROM events), 0)",
            )
            .bind(eventstore::relay::DEFAULT_CHECKPOINT_NAME)
            .fetch_one(pool)
            .await
            .unwrap()
        },
    )
    .await;
}

/// Every row of the tables of `projection` in `schema`, as JSON, sorted.
async fn dump(pool: &PgPool, projection: Projection, schema: &str) -> Value {
    let tables: &[&str] = match projection {
        Projection::Orders => &["orders", "stream_positions"],
        Projection::Inventory => &["inventory", "stream_positions"],
        Projection::Catalog => &["products", "stream_positions"],
        Projection::Sales => &["sales_orders", "sales_days", "stream_positions"],
    };
    let mut out = serde_json::Map::new();
    for table in tables {
        let rows: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM \"{schema}\".\"{table}\" t ORDER BY to_jsonb(t)::text"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        out.insert((*table).to_owned(), Value::Array(rows));
    }
    Value::Object(out)
}

/// Asserts that every live read model equals a clean fold of the whole
/// store into a fresh schema.
/// Reads the deployment's topics until every event of `stored` is there
/// (at most `limit`); answers the messages read and how many events were
/// there more than once.
pub async fn kafka_copies(
    brokers: &str,
    prefix: &str,
    stored: HashSet<String>,
    limit: Duration,
) -> (usize, usize) {
    let (brokers, prefix) = (brokers.to_owned(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut log = KafkaLog::open(&brokers, &prefix);
        log.read_until_all(&stored, limit);
        let duplicates = log.copies.values().filter(|n| **n > 1).count();
        (log.messages(), duplicates)
    })
    .await
    .unwrap()
}

pub async fn read_models_equal_a_clean_fold(pool: &PgPool) {
    let store = eventstore::EventStore::new(pool.clone());
    for projection in Projection::ALL {
        let schema = format!("check_{}", projection.name());
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("SELECT fulcrum_create_read_model($1, $2)")
            .bind(projection.name())
            .bind(&schema)
            .execute(pool)
            .await
            .unwrap();
        projections::build(
            &store,
            projection,
            &schema,
            eventstore::Checkpoint::START,
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(
            dump(pool, projection, &projection.live_schema()).await,
            dump(pool, projection, &schema).await,
            "the live {projection} read model differs from a clean fold"
        );
    }
}

/// Waits until all `expected` orders in the orders read model are
/// confirmed or cancelled (their sagas ended), at most `limit`; answers the
/// count by status.
pub async fn orders_settle(
    pool: &PgPool,
    expected: usize,
    limit: Duration,
) -> BTreeMap<String, i64> {
    let what = format!("the {expected} orders did not all settle");
    wait_for_order_counts(pool, limit, &what, |counts| {
        let settled = counts.get("confirmed").copied().unwrap_or(0)
            + counts.get("cancelled").copied().unwrap_or(0);
        settled == expected as i64
    })
    .await
}

/// Polls the orders read model's count by status until `done` holds, at
/// most `limit` (then fails, saying `what`); answers the last counts.
async fn wait_for_order_counts(
    pool: &PgPool,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> BTreeMap<String, i64> {
    let schema = Projection::Orders.live_schema();
    let query = format!("SELECT status, count(*) FROM \"{schema}\".orders GROUP BY status");
    let deadline = Instant::now() + limit;
    loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(&query).fetch_all(pool).await.unwrap();
        let counts: BTreeMap<String, i64> = rows.into_iter().collect();
        if done(&counts) {
            return counts;
        }
        assert!(Instant::now() < deadline, "{what}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the sandbox gateway's books against the orders: a confirmed
/// order's payment was captured once, in full; a cancelled order kept no
/// money (what was captured was refunded).
pub async fn money_matches_the_orders(pool: &PgPool) {
    let schema = Projection::Orders.live_schema();
    let rows: Vec<(uuid::Uuid, String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "WITH approved AS (
           SELECT (request->>'order_id')::uuid AS order_id,
                  answer->'Approved'->>'authorization_id' AS authorization_id
             FROM sandbox_requests WHERE answer ? 'Approved'),
         moved AS (
           SELECT authorization_id,
                  count(*) FILTER (WHERE operation = 'capture') AS captures,
                  coalesce(sum(amount) FILTER (WHERE operation = 'capture'), 0)::bigint AS captured,
                  coalesce(sum(amount) FILTER (WHERE operation = 'refund'), 0)::bigint AS refunded
             FROM sandbox_movements GROUP BY authorization_id)
         SELECT o.order_id, o.status, o.total, coalesce(m.captures, 0), coalesce(m.captured, 0),
                coalesce(m.refunded, 0)
           FROM \"{schema}\".orders o
           LEFT JOIN approved a ON a.order_id = o.order_id
           LEFT JOIN moved m ON m.authorization_id = a.authorization_id"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (order_id, status, total, captures, captured, refunded) in rows {
        match status.as_str() {
            "confirmed" => assert!(
                captures == 1 && captured == total && refunded == 0,
                "confirmed order {order_id} (total {total}): {captures} captures of {captured}, {refunded} refunded"
            ),
            "cancelled" => assert_eq!(
                captured, refunded,
                "cancelled order {order_id} kept {} of its payment",
                captured - refunded
            ),
            other => panic!("order {order_id} is {other}"),
        }
    }
}

/// Waits until all `expected` orders in the orders read model have
/// `status` (their sagas ended), at most `limit`.
pub async fn orders_reach(pool: &PgPool, expected: usize, status: &str, limit: Duration) {
    let what = format!("the {expected} orders are not all {status}");
    wait_for_order_counts(pool, limit, &what, |counts| {
        counts.get(status).copied() == Some(expected as i64)
    })
    .await;
}
