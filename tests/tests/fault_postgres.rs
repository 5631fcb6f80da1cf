//! Fault injection: the database goes away under a running server and
//! comes back (issue 12, defect 6). Runs a private Postgres cluster made
//! with the machine's `initdb`/`pg_ctl` (never the shared one), stops it
//! hard while a `fulcrum serve` (api role) runs, and starts it again:
//! during the outage every request answers 503 with `Retry-After`, after it
//! the server recovers by itself, and every write answered 2xx is stored
//! exactly once. Prints the figures docs/failure-behaviour.md cites.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::auth::Role;
use api::config::ServeConfig;
use api::Application;
use clap::Parser;
use fulcrum_tests::{token, SECRET};
use serde_json::json;
use tokio::sync::watch;

/// A Postgres cluster of this test's own, on a free port, removed on drop.
struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("no /usr/lib/postgresql: install the PostgreSQL server package")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

/// Runs `program` with `args` as the `postgres` user when this process is
/// root (Postgres refuses to run as root), else as ourselves.
fn run(program: &Path, args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let status = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .status()
    } else {
        Command::new(program).args(args).status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}

impl PrivatePostgres {
    fn create() -> PrivatePostgres {
        let bin = postgres_bin();
        let dir =
            std::env::temp_dir().join(format!("fulcrum-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status();
        let port = eventstore::testing::free_port();
        let data = dir.join("data");
        assert!(
            run(
                &bin.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ],
            ),
            "initdb failed"
        );
        let cluster = PrivatePostgres { dir, bin, port };
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/fulcrum?sslmode=disable",
            self.port
        )
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        assert!(
            run(
                &self.bin.join("pg_ctl"),
                &[
                    "-D",
                    self.dir.join("data").to_str().unwrap(),
                    "-o",
                    &options,
                    "-l",
                    self.dir.join("log").to_str().unwrap(),
                    "-w",
                    "start",
                ],
            ),
            "pg_ctl start failed"
        );
    }

    /// Stops the cluster at once (`-m immediate`: no clean shutdown, as a crash).
    fn stop(&self) {
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    config: ServeConfig,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_and_the_server_recovers_by_itself() {
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::create)
        .await
        .unwrap();
    let serve = Serve::try_parse_from([
        "serve",
        "--database-url",
        &postgres.url(),
        "--addr",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--roles",
        "api",
    ])
    .unwrap();
    let app = Application::build(serve.config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let client = reqwest::Client::new();
    let operator = token("olga", Role::Operator);
    let mut answered_2xx = 0;
    let define = |n: usize| {
        let (client, base, operator) = (client.clone(), base.clone(), operator.clone());
        async move {
            client
                .post(format!("{base}/api/v1/products"))
                .bearer_auth(&operator)
                .json(&json!({"sku": format!("P-{n}"), "name": "W", "unit_price": 1, "currency": "EUR"}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(define(0).await.status(), 201);
    answered_2xx += 1;

    // The outage: every request answers 503 with Retry-After.
    let pg = &postgres;
    tokio::task::block_in_place(|| pg.stop());
    let asked = Instant::now();
    let refused = define(1).await;
    let answer_time = asked.elapsed();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let asked = Instant::now();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    let ready_time = asked.elapsed();
    assert_eq!(ready.status(), 503);

    // The database returns: the server recovers without help.
    tokio::task::block_in_place(|| pg.start());
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    let mut n = 2;
    loop {
        let response = define(n).await;
        n += 1;
        if response.status().is_success() {
            answered_2xx += 1;
            break;
        }
        assert_eq!(response.status(), 503, "only 503s while recovering");
        assert!(Instant::now() < deadline, "no recovery within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = back.elapsed();
    eprintln!(
        "fault_postgres: a write answered 503 after {answer_time:.1?}, /readyz after {ready_time:.1?}; \
         the first write after Postgres was back succeeded {recovery:.1?} after its start"
    );

    let pool = eventstore::db::connect(&postgres.url(), 2).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, answered_2xx, "every 2xx-answered write stored once");
    pool.close().await;
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
}
